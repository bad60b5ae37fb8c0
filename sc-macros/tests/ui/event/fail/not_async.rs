use sc_core::prelude::*;

#[event("chat")]
fn chat(Json(text): Json<String>) -> Result<(), ScError> {
    let _ = text;
    Ok(())
}

fn main() {}
