use sc_core::prelude::*;

#[event("chat")]
async fn chat() {}

fn main() {
    let _app: App = handlers![chat, "login"];
}
