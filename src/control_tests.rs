//! The control socket's mode, its accept back-off, its request deadline
//! and its patience with an attempt under way.

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

/// A spool holding one queued message; its id.
async fn one_queued(dir: &Path) -> (Arc<Spool>, String) {
    let spool = Arc::new(Spool::open(&dir.join("spool"), 0).unwrap().0);
    let mut inc = spool.receive().await.unwrap();
    inc.write(b"Subject: x\r\n\r\n").await.unwrap();
    let env = crate::message::Envelope {
        mail_from: "a@example.com".into(),
        rcpt_to: vec!["b@example.org".into()],
    };
    let id = inc.commit(&spool, env).await.unwrap();
    (spool, id)
}

fn retry(id: Option<&str>) -> Request {
    Request {
        op: Op::Retry,
        id: id.map(str::to_string),
    }
}

#[tokio::test]
async fn retrying_one_message_waits_for_its_attempt_under_way_to_settle() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, id) = one_queued(dir.path()).await;
    let claim = spool
        .claim_due(tokio::time::Instant::now(), 1)
        .pop()
        .unwrap();
    let (settled_tx, settled_rx) = std::sync::mpsc::channel();
    let worker = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            // The attempt records its outcome a moment after the operator asks.
            std::thread::sleep(IN_FLIGHT_POLL * 3);
            settled_tx.send(()).unwrap();
            spool.release(
                claim,
                tokio::time::Instant::now() + Duration::from_secs(600),
            );
        })
    };
    let req = retry(Some(&id));
    let report = execute(&spool, &req, &mut |_, _| {}).unwrap();
    assert!(
        settled_rx.try_recv().is_ok(),
        "answered before the attempt settled"
    );
    assert_eq!((report.ok, report.errors.len()), (1, 0), "{report:?}");
    worker.join().unwrap();
    assert_eq!(
        spool.claim_due(tokio::time::Instant::now(), 1).len(),
        1,
        "due now"
    );
}

#[tokio::test]
async fn an_attempt_that_outlasts_the_patience_is_reported_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, id) = one_queued(dir.path()).await;
    let _claim = spool
        .claim_due(tokio::time::Instant::now(), 1)
        .pop()
        .unwrap();
    for (req, patience) in [
        (retry(Some(&id)), IN_FLIGHT_POLL * 2),
        // Every entry: no waiting on any one of them.
        (retry(None), IN_FLIGHT_PATIENCE),
    ] {
        let report = execute_with(&spool, &req, patience, &mut |_, _| {}).unwrap();
        assert_eq!(report.ok, 0);
        assert!(
            report.errors[0].1.contains("being delivered right now"),
            "{report:?}"
        );
    }
}
