//! The auth example end to end: passwords, the protected inbox, and token expiry.

use std::time::Duration;

use auth::{Inbox, Note};
use sc_core::testing::TestServer;
use serde_json::json;

#[tokio::test]
async fn login_protected_inbox_and_expiry() {
    let server = TestServer::start_app(auth::app(2)).await;
    let ann = server.client().await;
    let bob = server.client().await;
    let wrong = ann
        .invoke::<_, ()>("login", &json!({"user": "ann", "password": "nope"}))
        .await
        .expect_err("wrong password");
    assert!(wrong.to_string().contains("LoginError"), "{wrong}");
    let anonymous = ann
        .invoke::<_, String>("whoami", &())
        .await
        .expect_err("not logged in");
    assert!(anonymous.to_string().contains("AuthError"), "{anonymous}");

    let () = ann
        .invoke("login", &json!({"user": "ann", "password": "secret"}))
        .await
        .expect("login");
    let () = bob
        .invoke("login", &json!({"user": "bob", "password": "hunter2"}))
        .await
        .expect("login");
    assert_eq!(
        ann.invoke::<_, String>("whoami", &()).await.ok().as_deref(),
        Some("ann")
    );

    let mut inbox = ann
        .subscribe_to(&Inbox { user: "ann".into() })
        .await
        .expect("own inbox");
    let snoop = bob
        .subscribe("inbox/ann")
        .await
        .expect_err("not bob's inbox");
    assert!(snoop.to_string().contains("Forbidden"), "{snoop}");

    let () = bob
        .invoke("send", &json!({"to": "ann", "text": "hi ann"}))
        .await
        .expect("send");
    let note = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("in time")
        .expect("open")
        .expect("a Note");
    assert_eq!(
        note,
        Note {
            from: "bob".into(),
            text: "hi ann".into()
        }
    );

    // Only the server writes to an inbox: a forged note published by a client is refused and
    // never arrives.
    let forged = bob
        .publish("inbox/ann", &json!({"from": "ann", "text": "wire me $500"}))
        .await
        .expect_err("clients do not publish to inboxes");
    assert!(
        forged.to_string().contains("PublishRefusedError"),
        "{forged}"
    );
    let nothing = tokio::time::timeout(Duration::from_millis(300), inbox.recv()).await;
    assert!(
        nothing.is_err(),
        "the forged note was delivered: {nothing:?}"
    );

    // The token lives 2 s: after that the server treats the socket as logged out.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let expired = ann
        .invoke::<_, String>("whoami", &())
        .await
        .expect_err("expired");
    assert!(expired.to_string().contains("Auth"), "{expired}");
}
