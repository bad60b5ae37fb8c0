use std::rc::Rc;

use sc_core::prelude::*;

#[event("chat")]
async fn chat(socket: Socket) {
    let counter = Rc::new(1);
    socket.transmit("hello", &*counter).ok();
    tokio::task::yield_now().await;
    let _ = counter;
}

fn main() {}
