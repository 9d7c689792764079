//! The SMTP listener: the accept loop, the cap on concurrent connections
//! (`421 4.3.2` when full), and one task per connection. It owns sockets,
//! timeouts, limits and replies; it knows the backend only as the pure
//! check that refuses at `DATA` what the API would refuse later, and runs
//! those checks within one memory budget.
//!
//! By role: [`codec`] frames bytes (pure), [`session`] decides (pure),
//! [`reply`] words the answers, [`capabilities`] says what EHLO offers,
//! [`budget`] bounds the checks' memory, [`access`] admits clients,
//! [`tls`] holds the certificate, `connection` does the I/O.

pub mod access;
pub mod auth;
pub mod budget;
pub mod capabilities;
pub mod codec;
mod connection;
pub mod reply;
pub mod session;
pub mod tls;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::mapping::Mapper;
use crate::mapping::warm::Warm;
use crate::spool::Spool;
use access::{PerAddress, Policy};
use budget::CheckBudget;
use reply::Reply;
use session::Limits;
use tls::Tls;

/// Everything a connection needs, shared by all of them.
pub struct Shared {
    pub spool: Arc<Spool>,
    pub mapper: Arc<Mapper>,
    /// Where `DATA`'s mapping of a message is kept for its first attempt.
    pub warm: Arc<Warm>,
    pub hostname: String,
    pub limits: Limits,
    /// `smtp.max_connections`, shared by every listener.
    pub slots: Arc<Semaphore>,
    /// `smtp.max_connections_per_ip`, shared by every listener.
    pub per_address: PerAddress,
    pub access: Policy,
    /// `[smtp.tls]`: STARTTLS and the implicit-TLS listener.
    pub tls: Option<Arc<Tls>>,
    pub auth: AuthSetup,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// `smtp.max_session_time`: the whole session, DATA included.
    pub max_session_time: Duration,
    /// `smtp.received_header`: prepend a `Received:` trace header.
    pub received_header: bool,
    /// Shared by every DATA-time check (`smtp.check_memory`).
    pub check_budget: CheckBudget,
}

/// The accounts and the failure rules of SMTP AUTH.
#[derive(Debug)]
pub struct AuthSetup {
    pub accounts: Arc<auth::Accounts>,
    /// `smtp.max_auth_failures` per client address per 10 minutes.
    pub throttle: auth::Throttle,
    /// `smtp.auth_failure_delay`, before each `535`.
    pub failure_delay: Duration,
}

/// Which protocol a listener speaks from the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SMTP, with STARTTLS when TLS is configured.
    Plain,
    /// TLS first (port-465 style), then SMTP.
    ImplicitTls,
}

/// Accepts connections until `shutdown`; connection tasks join `tracker`.
pub async fn serve(
    listener: TcpListener,
    mode: Mode,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
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
        let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
            metrics::counter!("postrelay_smtp_sessions_rejected_total").increment(1);
            tracing::warn!(peer = %peer, "connection refused: smtp.max_connections reached");
            refuse(stream, reply::too_many_connections(), mode, &shared);
            continue;
        };
        let Some(slot) = shared.per_address.enter(peer.ip()) else {
            metrics::counter!("postrelay_smtp_connections_refused_total", "reason" => "per_address")
                .increment(1);
            tracing::warn!(peer = %peer, "connection refused: smtp.max_connections_per_ip reached");
            refuse(stream, reply::too_many_from_address(), mode, &shared);
            continue;
        };
        let Some(client) = shared.access.admit(peer.ip(), mode == Mode::ImplicitTls) else {
            metrics::counter!("postrelay_smtp_connections_refused_total", "reason" => "network")
                .increment(1);
            tracing::warn!(peer = %peer, "connection refused: outside smtp.allowed_networks and no AUTH configured");
            refuse(
                stream,
                reply::access_denied(&shared.hostname),
                mode,
                &shared,
            );
            continue;
        };
        let shared = shared.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            metrics::gauge!("postrelay_smtp_sessions_active").increment(1.0);
            metrics::counter!("postrelay_smtp_sessions_total").increment(1);
            match (mode, shared.tls.clone()) {
                (Mode::ImplicitTls, Some(tls)) => match tls.accept(stream).await {
                    Ok(stream) => connection::run(stream, peer, shared, token, client).await,
                    Err(e) => {
                        metrics::counter!("postrelay_smtp_tls_failures_total").increment(1);
                        tracing::info!(peer = %peer, error = %e, "TLS handshake failed");
                    }
                },
                _ => connection::run(stream, peer, shared, token, client).await,
            }
            metrics::gauge!("postrelay_smtp_sessions_active").decrement(1.0);
            drop(slot);
            drop(permit);
        });
    }
}

/// Says `reply` and closes, off the accept loop and within a few seconds
/// (through a TLS handshake on an implicit-TLS listener).
fn refuse(stream: TcpStream, reply: Reply, mode: Mode, shared: &Shared) {
    let tls = shared.tls.clone();
    tokio::spawn(async move {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        let said = async move {
            match (mode, tls) {
                (Mode::ImplicitTls, Some(tls)) => {
                    if let Ok(mut s) = tls.accept(stream).await {
                        let _ = s.write_all(&out).await;
                        let _ = s.shutdown().await;
                    }
                }
                (_, _) => {
                    let mut stream = stream;
                    let _ = stream.write_all(&out).await;
                    let _ = stream.shutdown().await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), said).await;
    });
}
