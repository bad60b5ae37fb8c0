use sc_core::prelude::*;

#[middleware(subscribe, order = 1)]
async fn check() {}

fn main() {}
