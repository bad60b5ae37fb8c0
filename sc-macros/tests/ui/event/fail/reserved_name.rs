use sc_core::prelude::*;

#[event("#publish")]
async fn publish() {}

fn main() {}
