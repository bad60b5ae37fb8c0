use sc_core::prelude::*;

// Every mistake is reported, each at its own tokens.
#[event("#chat", retries = 3)]
fn chat<T>(Raw(raw): Raw, socket: Socket) {
    let _ = (raw, socket);
}

fn main() {}
