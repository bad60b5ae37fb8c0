use sc_core::prelude::*;

#[event("chat")]
async fn chat(Channel(channel): Channel<String>) {
    let _ = channel;
}

fn main() {}
