//! `listen_backlog` reaches the listening sockets of a single process: the public port and the
//! admin port (the cluster's sockets: tests/cluster). Read back from the kernel with `ss`.

#[path = "../../tests/support/backlog.rs"]
mod backlog;

use backlog::{somaxconn, tcp_listen_backlog};
use sc_core::testing::{self, TestServer};
use sc_core::Config;

#[tokio::test]
async fn the_public_and_admin_ports_get_the_configured_backlog() {
    // Below any somaxconn (the kernel caps the value there) and unlike any default.
    let want = 777.min(somaxconn());
    let admin = "127.0.0.1:0".parse().expect("address");
    let server = TestServer::start(
        testing::builder()
            .listen_backlog(want)
            .admin_addr(Some(admin)),
    )
    .await;
    assert_eq!(
        tcp_listen_backlog(server.addr().port()),
        want,
        "public port"
    );
    let admin = server.admin_addr().expect("admin port bound");
    assert_eq!(tcp_listen_backlog(admin.port()), want, "admin port");
    server.stop().await;
}

#[tokio::test]
async fn the_default_is_somaxconn_and_at_least_1024() {
    let cap = somaxconn();
    assert_eq!(Config::default().listen_backlog, cap.max(1024));
    let server = TestServer::start(testing::builder()).await;
    // Not 128 (what `TcpListener::bind` gives), unless the system caps it there.
    assert_eq!(tcp_listen_backlog(server.addr().port()), cap);
    server.stop().await;
}

#[test]
fn zero_is_refused_with_the_option_named() {
    let mut config = Config::default();
    config.listen_backlog = 0;
    let error = config.validate().expect_err("a zero backlog is refused");
    assert!(error.to_string().contains("listen_backlog"), "{error}");
}
