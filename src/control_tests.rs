//! The control socket's mode, its accept back-off and its request deadline.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use super::*;

#[test]
fn accept_failures_back_off_doubling_up_to_a_second() {
    let cases = [
        (0, Duration::from_millis(10)),
        (1, Duration::from_millis(20)),
        (3, Duration::from_millis(80)),
        (7, Duration::from_secs(1)),
        (40, Duration::from_secs(1)),
        (u32::MAX, Duration::from_secs(1)),
    ];
    for (n, want) in cases {
        assert_eq!(accept_backoff(n), want, "failure {n}");
    }
}

#[tokio::test]
async fn the_socket_is_created_owner_only_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(socket_path(dir.path()), "stale").unwrap();
    let _listener = bind(dir.path()).unwrap();
    let meta = std::fs::symlink_metadata(socket_path(dir.path())).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_no_request_is_answered_and_dropped_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(&dir.path().join("spool"), 0).unwrap().0);
    let listener = bind(spool.root()).unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, spool.clone(), shutdown.clone()));
    let mut client = tokio::net::UnixStream::connect(socket_path(spool.root()))
        .await
        .unwrap();
    let mut reply = String::new();
    // Paused time jumps to the deadline once everyone waits.
    tokio::time::timeout(REQUEST_DEADLINE * 2, client.read_to_string(&mut reply))
        .await
        .expect("the server gives up on a silent client")
        .unwrap();
    let reply: Reply = serde_json::from_str(reply.trim()).unwrap();
    assert!(matches!(reply, Reply::Error(e) if e.contains("no request within")));
    shutdown.cancel();
    server.await.unwrap();
}
