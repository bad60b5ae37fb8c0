use sc_core::prelude::*;

#[middleware(subscribe)]
async fn check(EventName(event): EventName) -> Result<(), Block> {
    let _ = event;
    Ok(())
}

fn main() {}
