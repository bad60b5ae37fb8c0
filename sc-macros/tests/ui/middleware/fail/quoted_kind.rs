use sc_core::prelude::*;

#[middleware("subscribe")]
async fn check() {}

fn main() {}
