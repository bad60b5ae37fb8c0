use sc_core::prelude::*;

struct Room {
    id: u64,
}

fn main() {
    let _ = Room { id: 1 }.id;
    let _app: App = handlers![Room];
}
