//! Wiring: opens the spool, builds the backend, binds the listeners, runs the
//! SMTP server, the delivery engine, the control socket and (when configured)
//! the admin HTTP listener, and drains on shutdown within `shutdown_timeout`.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends;
use crate::config::Loaded;
use crate::control;
use crate::delivery::credentials::CredentialBook;
use crate::delivery::{Engine, Settings, backoff::Backoff};
use crate::mapping::Mapper;
use crate::mapping::warm::{WARM_BUDGET, Warm};
use crate::observability::health::Health;
use crate::observability::{http as admin_http, metrics as prom, notify};
use crate::smtp::access::{PerAddress, Policy};
use crate::smtp::auth::{Accounts, Throttle};
use crate::smtp::tls::Tls;
use crate::smtp::{self, session::Limits};
use crate::spool::Spool;

/// Runs the daemon until `shutdown` is cancelled, then drains.
pub async fn run(loaded: Loaded, shutdown: CancellationToken) -> anyhow::Result<()> {
    let cfg = &loaded.config;
    // Before any port is bound: a client (or a test) that sees the port open
    // may send SIGHUP at once, and its default action ends the process.
    let hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let spool_dir = cfg.spool.dir.clone();
    let min_free = cfg.spool.min_free_space;
    let (spool, recovery) = tokio::task::spawn_blocking(move || Spool::open(&spool_dir, min_free))
        .await?
        .with_context(|| format!("cannot open spool {}", cfg.spool.dir.display()))?;
    let spool = Arc::new(spool);
    // Right away: a `queue` command finds the spool locked, so it must find the socket too.
    let control_listener = control::bind(spool.root()).with_context(|| {
        format!(
            "cannot create the control socket {}",
            control::socket_path(spool.root()).display()
        )
    })?;
    tracing::info!(
        dir = %cfg.spool.dir.display(),
        queued = recovery.queued,
        held_released = recovery.held_released,
        temp_removed = recovery.temp_removed,
        orphans_removed = recovery.orphans_removed,
        broken = recovery.broken,
        dead_letters_completed = recovery.dead_letters_completed,
        stale_dead_letters_removed = recovery.stale_dead_letters_removed,
        parked = recovery.parked,
        may_duplicate = recovery.may_duplicate,
        "spool recovered"
    );
    let sender = backends::build(cfg, &loaded.secrets, spool.dry_run_dir())
        .context("cannot set up the backend")?;
    let mapper = Arc::new(Mapper::from_config(cfg));
    let health = Arc::new(Health::default());
    let metrics = prom::install()
        .inspect_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
        .ok();

    // Bind everything before serving anything: a taken port fails the start.
    let smtp_listener = TcpListener::bind(cfg.smtp.listen)
        .await
        .with_context(|| format!("cannot listen on smtp.listen {}", cfg.smtp.listen))?;
    let smtp_addr = smtp_listener.local_addr()?;
    let tls = match &cfg.smtp.tls {
        Some(t) => Some(Arc::new(
            Tls::new(&t.cert_file, &t.key_file, t.handshake_timeout.0)
                .context("smtp.tls: cannot load the certificate")?,
        )),
        None => None,
    };
    let tls_listener = match cfg.smtp.tls.as_ref().and_then(|t| t.listen) {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on smtp.tls.listen {addr}"))?,
        ),
        None => None,
    };
    let admin_listener = match &cfg.http {
        Some(http) => Some(
            TcpListener::bind(http.listen)
                .await
                .with_context(|| format!("cannot listen on http.listen {}", http.listen))?,
        ),
        None => None,
    };

    let tracker = TaskTracker::new();
    let warm = Arc::new(Warm::new(WARM_BUDGET));
    let engine = Arc::new(
        Engine::new(
            spool.clone(),
            mapper.clone(),
            sender.clone(),
            Settings {
                rate_limit: cfg.delivery.rate_limit,
                backoff: Backoff::new(cfg.delivery.retry_initial.0, cfg.delivery.retry_max.0),
                max_age: cfg.delivery.max_age.0,
                concurrency: cfg.delivery.concurrency,
            },
            health.clone(),
        )
        .with_credentials(
            CredentialBook::new(loaded.secrets.user_tokens.clone()).with_streams(&cfg.users),
        )
        .with_warm(warm.clone()),
    );
    let shared = Arc::new(smtp::Shared {
        spool: spool.clone(),
        mapper,
        warm,
        hostname: cfg.smtp.hostname.clone(),
        limits: Limits {
            max_message_size: cfg.smtp.max_message_size,
            max_recipients: cfg.smtp.max_recipients,
            max_errors: cfg.smtp.max_errors,
            max_header_size: cfg.smtp.max_header_size,
            max_transactions: cfg.smtp.max_transactions,
            postmaster: cfg.local.admin().map_or_else(
                || format!("postmaster@{}", cfg.local.effective_domain()),
                str::to_string,
            ),
        },
        max_session_time: cfg.smtp.max_session_time.0,
        received_header: cfg.smtp.received_header,
        slots: Arc::new(Semaphore::new(cfg.smtp.max_connections)),
        per_address: PerAddress::new(cfg.smtp.max_connections_per_ip),
        access: Policy {
            allowed_networks: cfg.smtp.allowed_networks.clone(),
            require_auth: cfg.smtp.require_auth,
            auth_available: cfg.auth_available(),
            tls_required: cfg.smtp.tls.as_ref().is_some_and(|t| t.required),
            allow_plaintext_auth: cfg.smtp.allow_plaintext_auth,
        },
        tls: tls.clone(),
        auth: smtp::AuthSetup {
            accounts: Arc::new(Accounts::from_config(cfg, &loaded.secrets)),
            throttle: Throttle::new(cfg.smtp.max_auth_failures),
            failure_delay: cfg.smtp.auth_failure_delay.0,
        },
        command_timeout: cfg.smtp.command_timeout.0,
        data_timeout: cfg.smtp.data_timeout.0,
        check_budget: smtp::budget::CheckBudget::new(cfg.smtp.check_memory),
    });

    let control_task = tokio::spawn(control::serve(
        control_listener,
        spool.clone(),
        shutdown.clone(),
    ));
    let admin_task = admin_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(addr = %addr, "http listening on {addr}");
        }
        let state = admin_http::AdminState {
            spool: spool.clone(),
            health: health.clone(),
            metrics,
            disk: Arc::new(std::sync::Mutex::new(Ok(()))),
        };
        let http = cfg.http.clone().unwrap_or_default();
        let limits = admin_http::Limits {
            max_connections: http.max_connections,
            header_read_timeout: http.header_read_timeout.0,
        };
        tokio::spawn(admin_http::serve(listener, state, limits, shutdown.clone()))
    });
    tracing::info!(
        backend = sender.name(),
        spool = %cfg.spool.dir.display(),
        max_message_size = cfg.smtp.max_message_size,
        max_recipients = cfg.smtp.max_recipients,
        rate_limit = cfg.delivery.rate_limit,
        concurrency = cfg.delivery.concurrency,
        retry_initial = %humantime::format_duration(cfg.delivery.retry_initial.0),
        retry_max = %humantime::format_duration(cfg.delivery.retry_max.0),
        max_age = %humantime::format_duration(cfg.delivery.max_age.0),
        "effective configuration (postrelay check-config prints all of it)"
    );
    tracing::info!(addr = %smtp_addr, backend = sender.name(), "smtp listening on {smtp_addr}");
    let tls_task = tls_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(addr = %addr, "smtp implicit TLS listening on {addr}");
        }
        tokio::spawn(smtp::serve(
            listener,
            smtp::Mode::ImplicitTls,
            shared.clone(),
            shutdown.clone(),
            tracker.clone(),
        ))
    });
    reload_on_sighup(hup, tls, shutdown.clone());
    let smtp_task = tokio::spawn(smtp::serve(
        smtp_listener,
        smtp::Mode::Plain,
        shared,
        shutdown.clone(),
        tracker.clone(),
    ));
    let engine_task = tokio::spawn(engine.run(shutdown.clone(), tracker.clone()));
    // Local submission: import what `sendmail` left while we were down, then keep polling.
    let maildrop_task =
        tokio::spawn(crate::maildrop::Importer::new(cfg, spool.clone()).run(shutdown.clone()));
    notify::ready();

    let mut core = vec![
        ("the delivery engine", engine_task),
        ("the SMTP listener", smtp_task),
        ("the control socket", control_task),
        ("the maildrop importer", maildrop_task),
    ];
    core.extend(admin_task.map(|t| ("the admin HTTP listener", t)));
    core.extend(tls_task.map(|t| ("the implicit-TLS SMTP listener", t)));
    let died = supervise(core, &shutdown, &health).await;
    tracker.close();
    let grace = cfg.shutdown_timeout.0;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            timeout = %humantime::format_duration(grace),
            "shutdown_timeout reached with work in flight; unfinished messages stay queued"
        );
    }
    tracing::info!("stopped");
    match died {
        Some(why) => Err(anyhow::anyhow!(
            "{why}: exiting so the service manager restarts postrelay"
        )),
        None => Ok(()),
    }
}

/// Reads the certificate and key again on each SIGHUP; the listeners stay
/// up and a bad pair leaves the current one in use. Without TLS a SIGHUP
/// is logged and ignored (it never stops the daemon).
fn reload_on_sighup(mut hup: Signal, tls: Option<Arc<Tls>>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                got = hup.recv() => if got.is_none() { break },
            }
            let Some(tls) = &tls else {
                tracing::info!("SIGHUP: nothing to reload (no [smtp.tls])");
                continue;
            };
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the previous one stays in use")
                }
            }
        }
    });
}

/// Waits for `shutdown` while the core tasks (the listeners, the delivery
/// engine) run, then for all of them to end. If one ends first (a
/// panic, a bug), the daemon is no longer doing its job: readiness fails at
/// once, everything drains, and the reason is returned so the process exits
/// non-zero and the service manager restarts it.
async fn supervise(
    core: Vec<(&'static str, JoinHandle<()>)>,
    shutdown: &CancellationToken,
    health: &Health,
) -> Option<String> {
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    for (what, task) in core {
        let ended_tx = ended_tx.clone();
        tokio::spawn(async move {
            let _ = ended_tx.send((what, task.await));
        });
    }
    drop(ended_tx);
    let died = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        Some((what, result)) = ended.recv() => match result {
            // Ended because shutdown began meanwhile: not a failure.
            Ok(()) if shutdown.is_cancelled() => None,
            Err(e) => Some(format!("{what} failed: {e}")),
            Ok(()) => Some(format!("{what} stopped")),
        },
    };
    if let Some(why) = &died {
        tracing::error!(error = %why, "a core task ended; shutting down to be restarted");
        health.set_broken(why);
        shutdown.cancel();
    }
    notify::stopping();
    health.set_draining();
    while ended.recv().await.is_some() {}
    died
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dying_core_task_fails_readiness_and_stops_the_others() {
        let shutdown = CancellationToken::new();
        let health = Health::default();
        let token = shutdown.clone();
        let engine = tokio::spawn(async { panic!("engine bug") });
        let listener = tokio::spawn(async move { token.cancelled().await });
        let died = supervise(
            vec![
                ("the delivery engine", engine),
                ("the SMTP listener", listener),
            ],
            &shutdown,
            &health,
        )
        .await;
        let why = died.expect("reported");
        assert!(why.starts_with("the delivery engine failed"), "{why}");
        assert!(shutdown.is_cancelled());
        assert_eq!(health.fault(), Some(why));
    }

    #[tokio::test]
    async fn a_normal_shutdown_is_not_a_failure() {
        let shutdown = CancellationToken::new();
        let health = Health::default();
        let token = shutdown.clone();
        let listener = tokio::spawn(async move { token.cancelled().await });
        shutdown.cancel();
        let died = supervise(vec![("the SMTP listener", listener)], &shutdown, &health).await;
        assert_eq!(died, None);
        assert_eq!(health.fault(), None);
    }
}
