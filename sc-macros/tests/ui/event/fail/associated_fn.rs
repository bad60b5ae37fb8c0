// Known limitation: handlers are free functions. Inside an `impl` the hidden same-named item
// cannot exist (the macro cannot see that it is in an `impl`), so rustc reports the generated
// items; the first error says it. A method with `self` gets one clear error (`self_receiver.rs`).
use sc_core::prelude::*;

struct Chat;

impl Chat {
    #[event("chat")]
    async fn chat(Json(text): Json<String>) {
        let _ = text;
    }
}

fn main() {}
