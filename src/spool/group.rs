//! Group commit of `queue/`'s directory entries: every message renamed into
//! `queue/` needs a directory fsync after its rename before it may be
//! acknowledged, and one fsync covers every rename done before it started.
//!
//! Leader/follower: a committer joins the batch now gathering; when no sync
//! is running, one member of that batch becomes its leader, closes it,
//! syncs the directory once and hands the result to every member. Renames
//! made while a sync runs gather into the next batch, which a member leads
//! as soon as the running sync ends.
//!
//! Invariant: [`GroupSync::covered`] returns `Ok` only after a directory
//! sync that *started* after the caller's rename has succeeded; a failed
//! sync fails every member of its batch (none of them may be acknowledged).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// Syncs one directory; the real one is [`fsio::sync_dir`](super::fsio::sync_dir).
pub(super) type SyncFn = Box<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

/// One sync's result, shareable by every member of its batch.
#[derive(Debug, Clone)]
struct SyncError {
    kind: io::ErrorKind,
    os: Option<i32>,
    text: String,
}

impl SyncError {
    fn of(e: &io::Error) -> SyncError {
        SyncError {
            kind: e.kind(),
            os: e.raw_os_error(),
            text: e.to_string(),
        }
    }

    /// A fresh `io::Error` for one member (the OS code kept, so a full disk stays one).
    fn to_io(&self) -> io::Error {
        match self.os {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.text.clone()),
        }
    }
}

#[derive(Default)]
struct Batch {
    outcome: OnceLock<Result<(), SyncError>>,
}

#[derive(Default)]
struct State {
    /// A leader is syncing (its batch is closed).
    running: bool,
    /// The batch gathering members for the next sync.
    next: Option<Arc<Batch>>,
    /// Members of `next`.
    next_members: usize,
}

pub(super) struct GroupSync {
    state: Mutex<State>,
    changed: Condvar,
    sync: SyncFn,
    syncs: AtomicU64,
}

impl std::fmt::Debug for GroupSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSync")
            .field("syncs", &self.syncs())
            .finish_non_exhaustive()
    }
}

impl GroupSync {
    pub(super) fn new(sync: SyncFn) -> GroupSync {
        GroupSync {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            sync,
            syncs: AtomicU64::new(0),
        }
    }

    /// Directory syncs done so far.
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Members waiting for a sync that has not started yet.
    #[cfg(test)]
    pub(super) fn gathering(&self) -> usize {
        self.lock().next_members
    }

    /// Blocking. Call after renaming into `dir`: returns once a sync of `dir`
    /// that started after this call has finished, with that sync's result.
    pub(super) fn covered(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let batch = st.next.get_or_insert_with(Arc::default).clone();
        st.next_members += 1;
        loop {
            if let Some(outcome) = batch.outcome.get() {
                return outcome.as_ref().map_err(SyncError::to_io).copied();
            }
            // Not done and no sync running: the batch is still `next`
            // (a batch leaves `next` only when its sync starts).
            if !st.running {
                st.running = true;
                st.next = None;
                st.next_members = 0;
                drop(st);
                return self.lead(&batch, dir);
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lead(&self, batch: &Batch, dir: &Path) -> io::Result<()> {
        // Ends the run even if the sync panics, so the followers are not stranded.
        struct Done<'a>(&'a GroupSync, &'a Batch);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let _ = self.1.outcome.set(Err(SyncError {
                    kind: io::ErrorKind::Other,
                    os: None,
                    text: "directory sync did not complete".into(),
                }));
                self.0.lock().running = false;
                self.0.changed.notify_all();
            }
        }
        let _done = Done(self, batch);
        let result = (self.sync)(dir);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let _ = batch
            .outcome
            .set(result.as_ref().map_err(SyncError::of).copied());
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;

    /// A sync that blocks its first call until released, then answers `later`.
    fn gated(later: fn() -> io::Result<()>) -> (SyncFn, mpsc::Sender<()>) {
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(Some(gate));
        let sync: SyncFn = Box::new(move |_| {
            if let Some(gate) = gate.lock().unwrap().take() {
                gate.recv().unwrap();
                return Ok(());
            }
            later()
        });
        (sync, release)
    }

    fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts `n` committers; returns their results in a channel.
    fn committers(
        group: &Arc<GroupSync>,
        n: usize,
    ) -> (Vec<thread::JoinHandle<()>>, mpsc::Receiver<io::Result<()>>) {
        let (tx, rx) = mpsc::channel();
        let handles = (0..n)
            .map(|_| {
                let (group, tx) = (group.clone(), tx.clone());
                thread::spawn(move || tx.send(group.covered(Path::new("q"))).unwrap())
            })
            .collect();
        (handles, rx)
    }

    #[test]
    fn renames_made_during_a_sync_share_the_next_one() {
        let (sync, release) = gated(|| Ok(()));
        let group = Arc::new(GroupSync::new(sync));
        let (first, first_rx) = committers(&group, 1);
        poll_until("the first sync to start", || group.lock().running);
        let (rest, rest_rx) = committers(&group, 7);
        poll_until("seven followers", || group.gathering() == 7);
        release.send(()).unwrap();
        for h in first.into_iter().chain(rest) {
            h.join().unwrap();
        }
        assert!(first_rx.try_iter().all(|r| r.is_ok()));
        let results: Vec<_> = rest_rx.try_iter().collect();
        assert_eq!(results.len(), 7);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            group.syncs(),
            2,
            "one sync for the first, one for the seven"
        );
    }

    #[test]
    fn a_failed_sync_fails_every_member_of_its_batch_and_no_other() {
        let (sync, release) = gated(|| Err(io::Error::from_raw_os_error(5)));
        let group = Arc::new(GroupSync::new(sync));
        let (first, first_rx) = committers(&group, 1);
        poll_until("the first sync to start", || group.lock().running);
        let (rest, rest_rx) = committers(&group, 5);
        poll_until("five followers", || group.gathering() == 5);
        release.send(()).unwrap();
        for h in first.into_iter().chain(rest) {
            h.join().unwrap();
        }
        assert!(first_rx.recv().unwrap().is_ok());
        let results: Vec<_> = rest_rx.try_iter().collect();
        assert_eq!(results.len(), 5);
        for r in results {
            assert_eq!(r.unwrap_err().raw_os_error(), Some(5));
        }
        assert_eq!(group.syncs(), 2);
    }

    #[test]
    fn a_lone_committer_syncs_at_once_and_a_later_one_syncs_again() {
        let group = GroupSync::new(Box::new(|_| Ok(())));
        group.covered(Path::new("q")).unwrap();
        group.covered(Path::new("q")).unwrap();
        assert_eq!(group.syncs(), 2, "a sync never covers a later rename");
    }

    #[test]
    fn a_panicking_sync_fails_its_batch_and_frees_the_next_leader() {
        let group = Arc::new(GroupSync::new(Box::new(|_| panic!("disk on fire"))));
        let g = group.clone();
        assert!(
            thread::spawn(move || g.covered(Path::new("q")))
                .join()
                .is_err()
        );
        assert!(!group.lock().running);
    }
}
