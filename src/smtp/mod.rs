//! The SMTP listener: the accept loop, the cap on concurrent connections
//! (`421 4.3.2` when full), and one task per connection. It owns sockets,
//! timeouts, limits and replies; it knows the backend only as the pure
//! check that refuses at `DATA` what the API would refuse later, and runs
//! those checks within one memory budget.
//!
//! By role: [`codec`] frames bytes (pure), [`session`] decides (pure),
//! [`reply`] words the answers, [`capabilities`] says what EHLO offers,
//! [`budget`] bounds the checks' memory, `connection` does the I/O.

pub mod budget;
pub mod capabilities;
pub mod codec;
mod connection;
pub mod reply;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::mapping::Mapper;
use crate::spool::Spool;
use budget::CheckBudget;
use session::Limits;

/// Everything a connection needs, shared by all of them.
pub struct Shared {
    pub spool: Arc<Spool>,
    pub mapper: Arc<Mapper>,
    pub hostname: String,
    pub limits: Limits,
    pub max_connections: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Shared by every DATA-time check (`smtp.check_memory`).
    pub check_budget: CheckBudget,
}

/// Accepts connections until `shutdown`; connection tasks join `tracker`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(shared.max_connections));
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // EMFILE and friends: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                let token = shutdown.clone();
                tracker.spawn(async move {
                    metrics::gauge!("postrelay_smtp_sessions_active").increment(1.0);
                    metrics::counter!("postrelay_smtp_sessions_total").increment(1);
                    connection::run(stream, peer, shared, token).await;
                    metrics::gauge!("postrelay_smtp_sessions_active").decrement(1.0);
                    drop(permit);
                });
            }
            Err(_) => {
                metrics::counter!("postrelay_smtp_sessions_rejected_total").increment(1);
                tracing::warn!(peer = %peer, "connection refused: smtp.max_connections reached");
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    reply::too_many_connections().write_to(&mut out);
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out)).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}
