use sc_core::prelude::*;

#[middleware(subscibe)]
async fn members_only() {}

fn main() {}
