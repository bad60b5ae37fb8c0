use sc_core::prelude::*;

#[middleware]
async fn check() {}

fn main() {}
