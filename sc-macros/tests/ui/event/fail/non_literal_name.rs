use sc_core::prelude::*;

const CHAT: &str = "chat";

#[event(CHAT)]
async fn chat() {}

fn main() {}
