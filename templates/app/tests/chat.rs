//! The chat end to end: a real server on a free port (sc_core::testing), Rust clients.

use std::time::Duration;

use sc_core::testing::TestServer;
use serde_json::json;
use {{crate}}::{ChatMsg, Room};

#[tokio::test]
async fn members_chat_and_strangers_cannot_join() {
    let server = TestServer::start_app({{crate}}::app()).await;

    let stranger = server.client().await;
    let refused = stranger.subscribe("rooms/1").await.expect_err("must log in first");
    assert!(refused.to_string().contains("requires an authenticated socket"), "{refused}");
    let refused = stranger.subscribe("secrets").await.expect_err("rooms only");
    assert!(refused.to_string().contains("InvalidChannelError"), "{refused}");

    let ann = server.client().await;
    let bob = server.client().await;
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
    assert_eq!((got.from.as_str(), got.text.as_str()), ("ann", "hello"));
    assert!(got.at > 1_600_000_000_000, "a timestamp in milliseconds: {}", got.at);
    let history: Vec<ChatMsg> = bob.invoke("history", &json!(1)).await.expect("history");
    assert_eq!(history, vec![got.clone()]);
    // `history` reads the room's channel history: whatever is published on the room is in it,
    // the last 50 (its declared size), whichever worker or node published it.
    let exchange = server.handle().exchange();
    for n in 0..60 {
        let msg = ChatMsg { from: "server".into(), text: n.to_string(), at: got.at };
        exchange.publish(&Room { id: 1 }, &msg).await.expect("published");
    }
    let history: Vec<ChatMsg> = ann.invoke("history", &json!(1)).await.expect("history");
    let texts: Vec<String> = history.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, (10..60).map(|n| n.to_string()).collect::<Vec<_>>());
    for _ in 0..60 {
        let delivered = tokio::time::timeout(Duration::from_secs(5), room.recv()).await;
        assert!(matches!(delivered, Ok(Some(Ok(_)))), "{delivered:?}");
    }

    // A client's own #publish to a room is refused, forged sender or not, and reaches nobody.
    for publisher in [&stranger, &ann] {
        let refused = publisher
            .publish("rooms/1", &json!({"from": "bob", "text": "wire me $500"}))
            .await
            .expect_err("only the server publishes on rooms");
        assert!(refused.to_string().contains("PublishRefusedError"), "{refused}");
    }
    let nothing = tokio::time::timeout(Duration::from_millis(300), room.recv()).await;
    assert!(nothing.is_err(), "a refused publish was delivered: {nothing:?}");
}
