//! The chat end to end: a real server on a free port, two Rust clients.

use std::time::Duration;

use sc_core::client::Client;
use serde_json::json;
use {{crate}}::{ChatMsg, Room};

#[tokio::test]
async fn members_chat_and_strangers_cannot_join() {
    let server = sc_core::SocketCluster::builder()
        .ignore_env()
        .host([127, 0, 0, 1].into())
        .port(0)
        .app({{crate}}::app())
        .bind()
        .await
        .expect("the app starts");
    let url = format!("ws://{}/socketcluster/", server.local_addr());
    tokio::spawn(server.serve());

    let stranger = Client::connect(&url).await.expect("connects");
    let refused = stranger.subscribe("rooms/1").await.expect_err("must log in first");
    assert!(refused.to_string().contains("AuthRequired"), "{refused}");

    let ann = Client::connect(&url).await.expect("connects");
    let bob = Client::connect(&url).await.expect("connects");
    let () = ann.invoke("login", &json!("ann")).await.expect("login");
    let () = bob.invoke("login", &json!("bob")).await.expect("login");
    let mut room = bob.subscribe_to(&Room { id: 1 }).await.expect("bob joins");
    let () = ann
        .invoke("chat", &json!({"room": 1, "text": "hello"}))
        .await
        .expect("chat");
    let got = tokio::time::timeout(Duration::from_secs(5), room.recv())
        .await
        .expect("delivered in time")
        .expect("subscription open")
        .expect("a ChatMsg");
    assert_eq!(got, ChatMsg { from: "ann".into(), text: "hello".into() });
    let history: Vec<ChatMsg> = bob.invoke("history", &json!(1)).await.expect("history");
    assert_eq!(history, vec![got]);
}
