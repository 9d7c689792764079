//! The engine end to end against a real spool in a temp dir and a scripted
//! sender, on paused tokio time: retry backoff, holds, `max_age`, the
//! credential and backend pauses, progress saves and panics, without real sleeps.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use super::*;
use crate::backends::{BatchFuture, BatchSender, Outcome, SendFuture};
use crate::mapping::{ApiCall, MapperKind, MappingOptions};
use crate::message::Envelope;
use crate::spool::Meta;

/// Answers from a script, then `fallback`; records when each call started.
struct Scripted {
    script: Mutex<VecDeque<Outcome>>,
    fallback: Mutex<Outcome>,
    calls: Mutex<Vec<(Instant, String, usize)>>,
    /// Each lone call's subject.
    subjects: Mutex<Vec<String>>,
    /// Every call takes this long.
    latency: Duration,
    before: Hook,
    /// Elements per batch call; below 2: no batches.
    batch_size: usize,
    /// Each batch call: when it started and each element's recipients.
    batches: Mutex<Vec<(Instant, Vec<Vec<String>>)>>,
    /// The answer to one batch element.
    element: Box<dyn Fn(&ApiCall) -> Outcome + Send + Sync>,
}

/// Runs before a call is answered, given the call's index and message id.
type Hook = Box<dyn Fn(usize, &str) + Send + Sync>;

impl Scripted {
    fn new(script: Vec<Outcome>, fallback: Outcome) -> Scripted {
        Scripted {
            script: Mutex::new(script.into()),
            fallback: Mutex::new(fallback),
            calls: Mutex::new(Vec::new()),
            subjects: Mutex::new(Vec::new()),
            latency: Duration::ZERO,
            before: Box::new(|_, _| {}),
            batch_size: 1,
            batches: Mutex::new(Vec::new()),
            element: Box::new(|_| ok()),
        }
    }

    /// Elements per batch call, in order.
    fn batch_sizes(&self) -> Vec<usize> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.1.len())
            .collect()
    }

    fn times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|c| c.0).collect()
    }

    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl Sender for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn send<'a>(&'a self, id: &'a str, part: usize, call: &'a ApiCall) -> SendFuture<'a> {
        let subject = call.body()["Subject"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.subjects.lock().unwrap().push(subject);
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((Instant::now(), id.to_string(), part));
            calls.len() - 1
        };
        (self.before)(n, id);
        let outcome = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.fallback.lock().unwrap().clone());
        Box::pin(async move {
            tokio::time::sleep(self.latency).await;
            outcome
        })
    }

    fn batch(&self) -> Option<&dyn BatchSender> {
        (self.batch_size > 1).then_some(self as &dyn BatchSender)
    }
}

impl BatchSender for Scripted {
    fn max_elements(&self) -> usize {
        self.batch_size
    }

    fn max_body_bytes(&self) -> usize {
        50 << 20
    }

    fn send_batch<'a>(
        &'a self,
        calls: &'a [&'a ApiCall],
        _credential: Option<&'a secrecy::SecretString>,
    ) -> BatchFuture<'a> {
        let recipients = calls.iter().map(|c| c.recipients.clone()).collect();
        self.batches
            .lock()
            .unwrap()
            .push((Instant::now(), recipients));
        let outcomes = calls.iter().map(|c| (self.element)(c)).collect();
        Box::pin(async move {
            tokio::time::sleep(self.latency).await;
            outcomes
        })
    }
}

fn ok() -> Outcome {
    Outcome::Delivered {
        api_id: Some("api-1".into()),
        note: None,
    }
}

fn unavailable(retry_after: Option<Duration>) -> Outcome {
    Outcome::Transient {
        reason: "HTTP 503".into(),
        retry_after,
        throttled: false,
    }
}

fn bad_token() -> Outcome {
    Outcome::ConfigFault {
        code: Some("10".into()),
        reason: "Postmark rejected the server token".into(),
    }
}

const SECOND: Duration = Duration::from_secs(1);

struct Rig {
    _dir: tempfile::TempDir,
    root: PathBuf,
    spool: Arc<Spool>,
    api: Arc<Scripted>,
    health: Arc<Health>,
    warm: Arc<Warm>,
    shutdown: CancellationToken,
}

impl Rig {
    /// retry 10 s .. 60 s, max_age 1 h unless given.
    fn start(api: Scripted, concurrency: usize, max_age: Duration) -> Rig {
        Rig::start_paced(api, concurrency, max_age, 0)
    }

    /// [`start`](Rig::start) with `rate_limit`.
    fn start_paced(api: Scripted, concurrency: usize, max_age: Duration, rate_limit: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let spool = Arc::new(Spool::open(&root, 0).unwrap().0);
        let api = Arc::new(api);
        let health = Arc::new(Health::default());
        let mapper = Arc::new(Mapper::new(
            MapperKind::Postmark,
            MappingOptions {
                default_stream: "outbound".into(),
                ignore_unsupported: false,
                max_message_size: 10 << 20,
            },
        ));
        let warm = Arc::new(Warm::new(crate::mapping::warm::WARM_BUDGET));
        let engine = Arc::new(
            Engine::new(
                spool.clone(),
                mapper,
                api.clone(),
                Settings {
                    rate_limit,
                    backoff: Backoff::new(10 * SECOND, 60 * SECOND),
                    max_age,
                    concurrency,
                },
                health.clone(),
            )
            .with_warm(warm.clone()),
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(engine.run(shutdown.clone(), TaskTracker::new()));
        Rig {
            _dir: dir,
            root,
            spool,
            api,
            health,
            warm,
            shutdown,
        }
    }

    async fn queue(&self, rcpts: usize, raw: &[u8]) -> String {
        let rcpt_to = (0..rcpts).map(|i| format!("r{i}@example.org")).collect();
        self.queue_to(rcpt_to, raw).await
    }

    async fn queue_to(&self, rcpt_to: Vec<String>, raw: &[u8]) -> String {
        self.queue_kept(rcpt_to, raw, |_, _| {}).await
    }

    /// [`queue_to`](Rig::queue_to), running `before_commit` with the id and
    /// envelope first, as `DATA`'s check runs before the commit.
    async fn queue_kept(
        &self,
        rcpt_to: Vec<String>,
        raw: &[u8],
        before_commit: impl FnOnce(&str, &Envelope),
    ) -> String {
        let mut incoming = self.spool.receive().await.unwrap();
        incoming.write(raw).await.unwrap();
        let envelope = Envelope {
            mail_from: "a@example.com".into(),
            rcpt_to,
        };
        before_commit(incoming.id(), &envelope);
        // A commit waits for the spool's log writer thread, which the paused
        // clock cannot see: waiting on the runtime would let the clock jump
        // to the next timer meanwhile. From the blocking pool (which holds
        // the paused clock still) the commit takes no paused time, as a
        // real fsync takes next to none of a linger.
        let (spool, handle) = (self.spool.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || handle.block_on(incoming.commit(&spool, envelope)))
            .await
            .unwrap()
            .unwrap()
    }

    fn queued(&self, id: &str) -> Option<Meta> {
        crate::spool::read(&self.root, crate::spool::Area::Queue, id)
            .ok()
            .map(|(meta, _)| meta)
    }

    fn failed(&self, id: &str) -> Option<Meta> {
        let bytes = std::fs::read(self.root.join(format!("failed/{id}.json"))).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    /// Entries queued on disk, in the log or as files.
    fn queue_len(&self) -> usize {
        self.spool.queued_ids().unwrap().len()
    }

    /// Advances paused time in 1 s steps until `cond` or `limit` passes.
    async fn until(&self, limit: Duration, mut cond: impl FnMut(&Rig) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond(self) {
                return true;
            }
            tokio::time::sleep(SECOND).await;
        }
        cond(self)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const MSG: &[u8] = b"From: a@example.com\r\nSubject: x\r\n\r\nhi\r\n";

#[tokio::test(start_paused = true)]
async fn a_freed_worker_takes_the_next_due_message_at_once() {
    let mut api = Scripted::new(vec![], ok());
    api.latency = Duration::from_millis(300);
    let rig = Rig::start(api, 1, Duration::from_secs(3600));
    for _ in 0..3 {
        rig.queue(1, MSG).await;
    }
    assert!(rig.until(10 * SECOND, |r| r.api.count() == 3).await);
    // The only worker is busy while the other two are due: each starts
    // when the previous call ends, not at the next idle poll (30 s).
    for pair in rig.api.times().windows(2) {
        assert!(pair[1] - pair[0] < 2 * SECOND, "{pair:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_retry_with_backoff_never_before_retry_after() {
    let api = Scripted::new(
        vec![unavailable(Some(30 * SECOND)), unavailable(None)],
        ok(),
    );
    let rig = Rig::start(api, 2, Duration::from_secs(3600));
    let id = rig.queue(1, MSG).await;
    assert!(rig.until(300 * SECOND, |r| r.queued(&id).is_none()).await);
    let t = rig.api.times();
    assert_eq!(t.len(), 3);
    // Retry-After 30 s is a floor; the ceiling after 1 attempt is 10 s.
    assert!(
        t[1] - t[0] >= 30 * SECOND && t[1] - t[0] < 32 * SECOND,
        "{t:?}"
    );
    // Second failure: at most the 20 s ceiling (plus the 1 s test step).
    assert!(t[2] - t[1] <= 21 * SECOND, "{t:?}");
    assert!(rig.failed(&id).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_config_fault_holds_the_message_for_retry_max_with_jitter() {
    let api = Scripted::new(vec![bad_token()], ok());
    let rig = Rig::start(api, 1, Duration::from_secs(3600));
    let id = rig.queue(1, MSG).await;
    assert!(rig.until(5 * SECOND, |r| r.api.count() == 1).await);
    tokio::time::sleep(SECOND).await;
    let meta = rig.queued(&id).expect("still queued");
    assert!(meta.held);
    assert!(rig.health.fault().is_some(), "readiness reports the fault");
    assert!(rig.until(120 * SECOND, |r| r.queued(&id).is_none()).await);
    let t = rig.api.times();
    let gap = t[1] - t[0];
    assert!(gap >= 60 * SECOND && gap <= 67 * SECOND, "{gap:?}");
    assert!(rig.health.fault().is_none(), "a delivery clears it");
}

#[tokio::test(start_paused = true)]
async fn max_age_is_judged_on_the_tokio_clock_and_then_dead_letters() {
    let api = Scripted::new(vec![], unavailable(None));
    let rig = Rig::start(api, 1, Duration::from_secs(120));
    let id = rig.queue(1, MSG).await;
    assert!(rig.until(100 * SECOND, |r| r.api.count() >= 2).await);
    assert!(rig.failed(&id).is_none(), "young messages are retried");
    assert!(rig.until(400 * SECOND, |r| r.failed(&id).is_some()).await);
    let t = rig.api.times();
    let span = *t.last().unwrap() - t[0];
    assert!(span >= 120 * SECOND, "{span:?}");
    let failure = rig.failed(&id).unwrap().failure.unwrap();
    assert!(
        failure.reason.starts_with("gave up after"),
        "{}",
        failure.reason
    );
    assert!(rig.queued(&id).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_unmappable_message_is_held_not_dead_lettered() {
    let api = Scripted::new(vec![], ok());
    let rig = Rig::start(api, 1, Duration::from_secs(1));
    let two_tags = b"From: a@example.com\r\nX-PM-Tag: a\r\nX-PM-Tag: b\r\n\r\nhi\r\n";
    let id = rig.queue(1, two_tags).await;
    assert!(
        rig.until(10 * SECOND, |r| r.queued(&id).is_some_and(|m| m.held))
            .await
    );
    let meta = rig.queued(&id).unwrap();
    assert!(meta.last_error.unwrap().contains("cannot be mapped"));
    // Past max_age (1 s) and retried after the hold: still held, never failed.
    assert!(!rig.until(200 * SECOND, |r| r.failed(&id).is_some()).await);
    assert_eq!(rig.api.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_progress_save_stops_the_attempt_before_the_next_part() {
    let mut api = Scripted::new(vec![], ok());
    let root = Arc::new(Mutex::new(PathBuf::new()));
    let seen = root.clone();
    // During the first call, make the entry's files impossible to write:
    // a directory where its message file goes when its record first
    // changes (root ignores permissions).
    api.before = Box::new(move |n, id| {
        if n == 0 {
            let eml = seen.lock().unwrap().join(format!("queue/{id}.eml"));
            std::fs::create_dir(eml).unwrap();
        }
    });
    let rig = Rig::start(api, 1, Duration::from_secs(3600));
    *root.lock().unwrap() = rig.root.clone();
    let id = rig.queue(60, MSG).await;
    assert!(rig.until(5 * SECOND, |r| r.api.count() >= 1).await);
    // The save after part 1 failed: part 2 is never sent, not now and not
    // on a later look (which may send part 1 again: its acceptance was
    // never recorded); the message stays.
    tokio::time::sleep(120 * SECOND).await;
    let parts: Vec<usize> = rig.api.calls.lock().unwrap().iter().map(|c| c.2).collect();
    assert!(
        !parts.is_empty() && parts.iter().all(|&p| p == 0),
        "{parts:?}"
    );
    assert_eq!(rig.spool.queued_ids().unwrap(), vec![id]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_delivery_releases_its_claim() {
    let mut api = Scripted::new(vec![], ok());
    api.before = Box::new(|n, _| {
        if n == 0 {
            panic!("boom in the sender");
        }
    });
    let rig = Rig::start(api, 1, Duration::from_secs(3600));
    let id = rig.queue(1, MSG).await;
    assert!(rig.until(10 * SECOND, |r| r.queued(&id).is_none()).await);
    assert_eq!(rig.api.count(), 2, "tried again after the panic");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_global_credential_holds_its_mail_with_at_most_one_call_per_period() {
    let api = Scripted::new(vec![], bad_token());
    let rig = Rig::start(api, 4, Duration::from_secs(3600));
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(rig.queue(1, MSG).await);
    }
    assert!(rig.until(5 * SECOND, |r| r.api.count() >= 1).await);
    // Up to `concurrency` calls were already out when the first 401 came;
    // the rest is held without a call.
    tokio::time::sleep(SECOND).await;
    let first = rig.api.count();
    assert!((1..=4).contains(&first), "{first}");
    assert!(
        rig.until(5 * SECOND, |r| ids
            .iter()
            .all(|id| r.queued(id).is_some_and(|m| m.held)))
            .await,
        "every message held"
    );
    // Held mail comes back after `retry_max` (60 s): one probe per 10 s
    // period at most, never a call per held message.
    tokio::time::sleep(130 * SECOND).await;
    let probes = rig.api.count() - first;
    assert!((1..=13).contains(&probes), "{:?}", rig.api.times());
    assert_eq!(rig.queue_len(), 10, "nothing dead-lettered");
    assert!(rig.health.fault().is_some());
    // The token is fixed: the next probe succeeds and everything goes.
    *rig.api.fallback.lock().unwrap() = ok();
    assert!(rig.until(200 * SECOND, |r| r.queue_len() == 0).await);
    assert!(ids.iter().all(|id| rig.failed(id).is_none()));
    assert!(rig.health.fault().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_pauses_claiming_instead_of_parking_workers() {
    let throttled = Outcome::Transient {
        reason: "HTTP 429".into(),
        retry_after: Some(120 * SECOND),
        throttled: true,
    };
    let api = Scripted::new(vec![throttled], ok());
    let rig = Rig::start(api, 1, Duration::from_secs(3600));
    for _ in 0..3 {
        rig.queue(1, MSG).await;
    }
    assert!(rig.until(5 * SECOND, |r| r.api.count() >= 1).await);
    tokio::time::sleep(100 * SECOND).await;
    assert_eq!(rig.api.count(), 1, "nothing is claimed during Retry-After");
    assert!(rig.until(60 * SECOND, |r| r.queue_len() == 0).await);
    let t = rig.api.times();
    assert!(t[1] - t[0] >= 120 * SECOND, "{t:?}");
}

fn refused() -> Outcome {
    Outcome::Permanent {
        code: Some("406".into()),
        reason: "inactive recipient".into(),
    }
}

/// A batching sender whose calls take 60 s: the first message goes alone
/// while the rest queue up behind the only worker.
fn batching(
    batch_size: usize,
    element: impl Fn(&ApiCall) -> Outcome + Send + Sync + 'static,
) -> Scripted {
    let mut api = Scripted::new(vec![], ok());
    api.latency = 60 * SECOND;
    api.batch_size = batch_size;
    api.element = Box::new(element);
    api
}

#[tokio::test(start_paused = true)]
async fn messages_due_together_go_in_one_batch_and_each_is_recorded_on_its_own() {
    let api = batching(500, |c| {
        if c.recipients[0].starts_with("gone") {
            refused()
        } else {
            ok()
        }
    });
    let rig = Rig::start(api, 1, Duration::from_secs(3600));
    let first = rig.queue(1, MSG).await;
    assert!(rig.until(5 * SECOND, |r| r.api.count() == 1).await);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(rig.queue_to(vec![format!("ok{i}@example.org")], MSG).await);
    }
    let gone = rig.queue_to(vec!["gone@example.org".into()], MSG).await;
    assert!(rig.until(200 * SECOND, |r| r.queue_len() == 0).await);
    assert_eq!(
        rig.api.count(),
        1,
        "only the lone first message went to /email"
    );
    assert_eq!(rig.api.batch_sizes(), vec![6]);
    assert!(rig.failed(&first).is_none());
    assert!(ids.iter().all(|id| rig.failed(id).is_none()));
    let failure = rig.failed(&gone).expect("dead-lettered").failure.unwrap();
    assert_eq!(failure.code.as_deref(), Some("406"));
}

#[tokio::test(start_paused = true)]
async fn a_split_message_gives_each_part_and_a_mixed_answer_records_each_part() {
    // The second part of the split message fails for now: its first part
    // is recorded accepted and never sent again.
    let api = batching(500, |c| {
        if c.recipients[0] == "r50@example.org" {
            unavailable(None)
        } else {
            ok()
        }
    });
    let rig = Rig::start(api, 1, Duration::from_secs(3600));
    rig.queue_to(vec!["first@example.org".into()], MSG).await;
    assert!(rig.until(5 * SECOND, |r| r.api.count() == 1).await);
    let split = rig.queue(60, MSG).await;
    let single = rig.queue_to(vec!["one@example.org".into()], MSG).await;
    assert!(
        rig.until(100 * SECOND, |r| r.api.batch_sizes().len() == 1)
            .await
    );
    tokio::time::sleep(61 * SECOND).await;
    assert_eq!(rig.api.batch_sizes(), vec![3], "two parts and one message");
    assert!(rig.queued(&single).is_none());
    let meta = rig.queued(&split).expect("retried later");
    assert_eq!(meta.pending_recipients().len(), 10);
    assert_eq!(meta.accepted_count(), 50);
    // The retry sends only the pending part, alone, to /email.
    *rig.api.fallback.lock().unwrap() = ok();
    assert!(rig.until(200 * SECOND, |r| r.queue_len() == 0).await);
    let calls = rig.api.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].1, split);
}

#[tokio::test(start_paused = true)]
async fn a_batch_holds_at_most_batch_size_and_rate_limit_elements() {
    for (batch_size, rate, cap) in [(4, 0, 4), (500, 3, 3)] {
        let rig = Rig::start_paced(
            batching(batch_size, |_| ok()),
            1,
            Duration::from_secs(3600),
            rate,
        );
        rig.queue(1, MSG).await;
        assert!(rig.until(5 * SECOND, |r| r.api.count() == 1).await);
        for _ in 0..10 {
            rig.queue(1, MSG).await;
        }
        assert!(rig.until(1000 * SECOND, |r| r.queue_len() == 0).await);
        let sizes = rig.api.batch_sizes();
        assert!(sizes.iter().all(|n| *n <= cap), "{sizes:?}");
        let sent = sizes.iter().sum::<usize>() + rig.api.count();
        assert_eq!(sent, 11, "{sizes:?}");
        assert!(sizes.len() >= 10 / cap, "{sizes:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_call_retries_every_message_in_it() {
    let api = batching(500, |_| unavailable(None));
    let rig = Rig::start(api, 1, Duration::from_secs(3600));
    rig.queue(1, MSG).await;
    assert!(rig.until(5 * SECOND, |r| r.api.count() == 1).await);
    let ids = [rig.queue(1, MSG).await, rig.queue(1, MSG).await];
    assert!(
        rig.until(100 * SECOND, |r| r.api.batch_sizes().len() == 1)
            .await
    );
    tokio::time::sleep(61 * SECOND).await;
    for id in &ids {
        let meta = rig.queued(id).expect("queued for a retry");
        assert_eq!(meta.attempts, 1);
        assert_eq!(meta.accepted_count(), 0);
        assert!(meta.last_error.is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn a_split_message_never_straddles_two_batch_calls() {
    // batch_size 10, three messages of 160 recipients (4 parts each): two
    // fit in one call, the third does not and goes alone.
    let rig = Rig::start(batching(10, |_| ok()), 1, Duration::from_secs(3600));
    rig.queue(1, MSG).await;
    assert!(rig.until(5 * SECOND, |r| r.api.count() == 1).await);
    for _ in 0..3 {
        rig.queue(160, MSG).await;
    }
    assert!(rig.until(1000 * SECOND, |r| r.queue_len() == 0).await);
    assert_eq!(rig.api.batch_sizes(), vec![8]);
    assert_eq!(
        rig.api.count(),
        1 + 4,
        "the third message's parts, one by one"
    );
}

#[tokio::test(start_paused = true)]
async fn messages_arriving_one_by_one_within_the_linger_leave_in_one_batch() {
    let api = batching(500, |_| ok());
    let rig = Rig::start(api, 8, Duration::from_secs(3600));
    for i in 0..5 {
        rig.queue_to(vec![format!("r{i}@example.org")], MSG).await;
    }
    assert!(rig.until(200 * SECOND, |r| r.queue_len() == 0).await);
    assert_eq!(rig.api.count(), 0, "no message went to /email on its own");
    assert_eq!(rig.api.batch_sizes(), vec![5]);
    // A lone message still goes to /email, once the linger is over.
    let started = Instant::now();
    rig.queue_to(vec!["lone@example.org".into()], MSG).await;
    assert!(rig.until(200 * SECOND, |r| r.api.count() == 1).await);
    let waited = rig.api.times()[0] - started;
    assert!(
        waited <= super::LINGER + Duration::from_millis(10),
        "{waited:?}"
    );
    assert_eq!(rig.api.batch_sizes(), vec![5]);
}

/// A mapping of `env` whose subject says where it came from.
fn kept_mapping(env: &Envelope, subject: &str) -> crate::mapping::Mapped {
    let shared = crate::mapping::SharedBody::new(serde_json::Map::from_iter([(
        "Subject".to_string(),
        serde_json::Value::from(subject),
    )]));
    let call = ApiCall::new(env.rcpt_to.clone(), shared, serde_json::Map::new());
    crate::mapping::Mapped {
        calls: vec![call],
        warnings: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_sends_the_mapping_kept_at_data_for_the_same_envelope_only() {
    let rig = Rig::start(Scripted::new(vec![], ok()), 1, Duration::from_secs(3600));
    let one = vec!["r0@example.org".to_string()];
    let warm = rig.warm.clone();
    rig.queue_kept(one.clone(), MSG, |id, env| {
        warm.keep(id, env, None, kept_mapping(env, "kept at DATA"), 10)
    })
    .await;
    // Kept for another envelope: mapped afresh from the spooled bytes.
    let warm = rig.warm.clone();
    rig.queue_kept(one, MSG, |id, env| {
        let mut other = env.clone();
        other.rcpt_to.push("r1@example.org".into());
        warm.keep(id, &other, None, kept_mapping(&other, "kept at DATA"), 10)
    })
    .await;
    assert!(rig.until(10 * SECOND, |r| r.api.count() == 2).await);
    assert_eq!(*rig.api.subjects.lock().unwrap(), ["kept at DATA", "x"]);
    assert_eq!(rig.warm.bytes(), 0, "each kept mapping was taken once");
}
