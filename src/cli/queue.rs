//! `postrelay queue ...`: the operator's view of the spool (like Postfix's
//! `mailq`/`postsuper`). Listing and showing read files without a lock;
//! retry, delete and requeue go through the daemon's control socket when a
//! daemon owns the spool, or run here when none does.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{QueueCommand, Target};
use crate::config::Config;
use crate::control::{self, Op, Report, Request};
use crate::mapping::Mapper;
use crate::observability::escape::escape;
use crate::spool::{self, Area, Meta, RecipientState, Spool, SpoolError};

/// Runs a queue command; returns the process exit code.
pub fn run(cmd: &QueueCommand, cfg: &Config) -> anyhow::Result<u8> {
    let root = cfg.spool.dir.as_path();
    match cmd {
        QueueCommand::List { json } => print_list(&spool::list(root, Area::Queue)?, *json, false),
        QueueCommand::Failed { json } => print_list(&spool::list(root, Area::Failed)?, *json, true),
        QueueCommand::Show { id } => show(root, id, cfg),
        QueueCommand::Retry(t) => mutate(root, cfg, Op::Retry, t),
        QueueCommand::Delete { id } => mutate(
            root,
            cfg,
            Op::Delete,
            &Target {
                id: Some(id.clone()),
                all: false,
            },
        ),
        QueueCommand::Requeue(t) => mutate(root, cfg, Op::Requeue, t),
    }
}

fn print_list(entries: &[Meta], as_json: bool, failed: bool) -> anyhow::Result<u8> {
    let now = SystemTime::now();
    let mut out = std::io::stdout().lock();
    if as_json {
        let rows: Vec<_> = entries.iter().map(|m| row_json(m, now)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(0);
    }
    if entries.is_empty() {
        writeln!(
            out,
            "{}",
            if failed {
                "No dead letters."
            } else {
                "Queue is empty."
            }
        )?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:<26}  {:>6}  {:<30}  {:>5}  {:>8}  {:<10}  {}",
        "ID",
        "AGE",
        "FROM",
        "RCPTS",
        "ATTEMPTS",
        if failed { "CODE" } else { "NEXT" },
        if failed { "REASON" } else { "LAST ERROR" }
    )?;
    for m in entries {
        let from = if m.envelope.mail_from.is_empty() {
            "<>"
        } else {
            &m.envelope.mail_from
        };
        let next_or_code = match &m.failure {
            Some(f) => f.code.clone().unwrap_or_else(|| "-".into()),
            None if m.held => format!("held {}", until(now, m.next_attempt_at)),
            None => until(now, m.next_attempt_at),
        };
        let err = match &m.failure {
            Some(f) => f.reason.clone(),
            None => m.last_error.clone().unwrap_or_default(),
        };
        writeln!(
            out,
            "{:<26}  {:>6}  {:<30}  {:>5}  {:>8}  {:<10}  {}",
            m.id,
            age(now, m.received_at),
            truncate(&escape(from), 30),
            m.envelope.rcpt_to.len(),
            m.attempts,
            next_or_code,
            truncate(&escape(&err), 100)
        )?;
    }
    writeln!(
        out,
        "-- {} message{}",
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    )?;
    Ok(0)
}

fn row_json(m: &Meta, now: SystemTime) -> serde_json::Value {
    json!({
        "id": m.id,
        "age_seconds": now.duration_since(m.received_at).unwrap_or_default().as_secs(),
        "received_at": humantime::format_rfc3339_seconds(m.received_at).to_string(),
        "from": m.envelope.mail_from,
        "recipients": m.envelope.rcpt_to,
        "delivered_recipients": recipients_in(m, |s| matches!(s, RecipientState::Accepted { .. })),
        "refused_recipients": recipients_in(m, |s| matches!(s, RecipientState::Refused { .. })),
        "size": m.size,
        "attempts": m.attempts,
        "next_attempt_at": humantime::format_rfc3339_seconds(m.next_attempt_at).to_string(),
        "held": m.held,
        "last_error": m.last_error,
        "failure": m.failure.as_ref().map(|f| json!({"code": f.code, "reason": f.reason, "failed_at": humantime::format_rfc3339_seconds(f.failed_at).to_string()})),
    })
}

fn recipients_in(m: &Meta, pick: impl Fn(&RecipientState) -> bool) -> Vec<&str> {
    m.envelope_states()
        .into_iter()
        .filter(|(_, s)| pick(s))
        .map(|(r, _)| r)
        .collect()
}

fn show(root: &Path, id: &str, cfg: &Config) -> anyhow::Result<u8> {
    let (meta, raw, area) = match spool::read(root, Area::Queue, id) {
        Ok((m, r)) => (m, r, "queue"),
        Err(SpoolError::NotFound(_)) => match spool::read(root, Area::Failed, id) {
            Ok((m, r)) => (m, r, "failed"),
            Err(SpoolError::NotFound(_)) => {
                eprintln!("postrelay: no message {id} in the queue or in failed/");
                return Ok(1);
            }
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "== {id} ({area})")?;
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&row_json(&meta, SystemTime::now()))?
    )?;
    writeln!(out, "== headers")?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(raw.len());
    // Client text: control characters (an OSC or CSI sequence in a
    // Subject) are spelled out, never sent to the operator's terminal.
    for line in raw[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            writeln!(out, "{}", escape(&String::from_utf8_lossy(line)))?;
        }
    }
    writeln!(
        out,
        "== {} request{}",
        cfg.backend.as_str(),
        if meta.accepted_count() == 0 {
            ""
        } else {
            " (recipients not yet delivered)"
        }
    )?;
    let envelope = crate::message::Envelope {
        mail_from: meta.envelope.mail_from.clone(),
        rcpt_to: meta.pending_recipients(),
    };
    // The stream the engine would use: the sending user's own, if any.
    let stream = match &meta.credential {
        spool::Credential::User(name) => cfg
            .users
            .iter()
            .find(|u| &u.name == name)
            .and_then(|u| u.message_stream.as_deref()),
        _ => None,
    };
    match Mapper::from_config(cfg).map_as(&envelope, &raw, stream) {
        Ok(mapped) => {
            for call in &mapped.calls {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&redact_payload(call.body()))?
                )?;
            }
            for w in &mapped.warnings {
                writeln!(out, "warning: {w}")?;
            }
        }
        Err(e) => writeln!(out, "refused by the mapping: {e}")?,
    }
    Ok(0)
}

/// Attachment and raw-message contents are long base64: show their size instead.
fn redact_payload(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(atts) = v.get_mut("Attachments").and_then(|a| a.as_array_mut()) {
        for a in atts {
            if let Some(c) = a.get_mut("Content") {
                let len = c.as_str().map(str::len).unwrap_or(0);
                *c = json!(format!("<{len} base64 characters>"));
            }
        }
    }
    if let Some(d) = v.get_mut("data") {
        let len = d.as_str().map(str::len).unwrap_or(0);
        *d = json!(format!("<{len} base64 characters>"));
    }
    v
}

fn mutate(root: &Path, cfg: &Config, op: Op, target: &Target) -> anyhow::Result<u8> {
    let req = Request {
        op,
        id: if target.all { None } else { target.id.clone() },
    };
    let mut progress = |done: usize, total: usize| eprintln!("postrelay: {done}/{total} ...");
    let report = match Spool::open(root, cfg.spool.min_free_space) {
        Ok((spool, _)) => control::execute(&Arc::new(spool), &req, &mut progress)?,
        Err(SpoolError::Locked) => {
            control::request(root, &req, &mut progress).map_err(anyhow::Error::msg)?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(print_report(op, &report))
}

fn print_report(op: Op, r: &Report) -> u8 {
    let verb = match op {
        Op::Retry => "scheduled for immediate retry",
        Op::Delete => "deleted",
        Op::Requeue => "moved back to the queue",
    };
    for (id, why) in &r.errors {
        eprintln!("postrelay: {id}: {why}");
    }
    println!(
        "{} of {} message{} {verb}",
        r.ok,
        r.total,
        if r.total == 1 { "" } else { "s" }
    );
    if r.errors.is_empty() { 0 } else { 1 }
}

fn age(now: SystemTime, t: SystemTime) -> String {
    short(now.duration_since(t).unwrap_or_default())
}

fn until(now: SystemTime, t: SystemTime) -> String {
    match t.duration_since(now) {
        Ok(d) if d.as_secs() > 0 => format!("in {}", short(d)),
        _ => "now".into(),
    }
}

fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn truncate(s: &str, max: usize) -> String {
    let one_line = s.replace(['\r', '\n'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        one_line.chars().take(max - 1).collect::<String>() + "…"
    }
}
