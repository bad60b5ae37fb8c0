use sc_core::prelude::*;

#[middleware(PublishIn)]
async fn check() {}

fn main() {}
