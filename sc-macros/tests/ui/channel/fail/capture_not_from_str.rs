use sc_core::prelude::*;

struct RoomId(u64);

#[channel("rooms/{id}", message = String)]
struct Room {
    id: RoomId,
}

fn main() {}
