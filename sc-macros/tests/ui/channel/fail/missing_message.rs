use sc_core::prelude::*;

#[channel("rooms/{id}")]
struct Room {
    id: u64,
}

fn main() {}
