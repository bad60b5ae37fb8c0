use sc_core::prelude::*;

// The attribute's mistake is the only error: `handlers![chat]` does not add another.
#[event("")]
async fn chat() {}

fn main() {
    let _app: App = handlers![chat];
}
