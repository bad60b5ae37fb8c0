// What an event handler may return: anything `IntoReply`, including `impl IntoReply`.
use sc_core::prelude::*;
use sc_core::IntoReply;

#[derive(Serialize)]
struct Profile {
    name: String,
}

#[event("unit")]
async fn unit() {}

#[event("json")]
async fn json() -> Json<Profile> {
    Json(Profile {
        name: "alice".into(),
    })
}

#[event("result")]
async fn result(Json(ok): Json<bool>) -> Result<Json<u8>, ScError> {
    if ok {
        Ok(Json(1))
    } else {
        Err(ScError::new("NopeError", "no"))
    }
}

#[event("option")]
async fn option() -> Option<Json<u8>> {
    None
}

#[event("value")]
async fn value() -> serde_json::Value {
    serde_json::json!({ "a": 1 })
}

#[event("opaque")]
async fn opaque() -> impl IntoReply {
    Json("opaque")
}

fn main() {
    let _app: App = handlers![unit, json, result, option, value, opaque];
}
