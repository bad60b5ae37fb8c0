use sc_core::prelude::*;

#[event("chat")]
struct Chat;

fn main() {}
