use sc_core::prelude::*;

#[middleware(invoke)]
async fn check() -> bool {
    true
}

fn main() {}
