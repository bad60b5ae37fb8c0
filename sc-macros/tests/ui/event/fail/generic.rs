use sc_core::prelude::*;

#[event("echo")]
async fn echo<T: serde::de::DeserializeOwned + Serialize + Send>(Json(data): Json<T>) -> Json<T> {
    Json(data)
}

fn main() {}
