use sc_core::prelude::*;

#[middleware(handshake_ws)]
async fn check(socket: Socket) -> Result<(), Block> {
    let _ = socket;
    Ok(())
}

fn main() {}
