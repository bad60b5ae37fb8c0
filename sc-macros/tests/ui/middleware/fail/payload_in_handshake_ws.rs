use sc_core::prelude::*;

#[middleware(handshake_ws)]
async fn check(request: RequestInfo, Json(data): Json<serde_json::Value>) -> Result<(), Block> {
    let _ = (request, data);
    Ok(())
}

fn main() {}
