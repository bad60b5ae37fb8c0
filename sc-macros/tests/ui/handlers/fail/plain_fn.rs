use sc_core::prelude::*;

#[event("chat")]
async fn chat() {}

// Registered by hand only: no attribute.
async fn login() {}

fn main() {
    let _app: App = handlers![chat, login];
}
