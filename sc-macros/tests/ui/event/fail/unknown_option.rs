use sc_core::prelude::*;

#[event("chat", ack_timeout = 5000)]
async fn chat() {}

fn main() {}
