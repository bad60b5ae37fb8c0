use sc_core::prelude::*;

#[event]
async fn chat() {}

fn main() {}
