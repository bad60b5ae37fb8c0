use sc_core::prelude::*;

#[channel("rooms/{id}", message = String)]
struct Room(u64);

fn main() {}
