//! `sendmail -bs`: an SMTP dialogue on stdin/stdout (Symfony Mailer's and
//! Laravel's default transport). Each message is received into a drop file
//! and handed on exactly as `-bm` does: to the daemon, or when it is down
//! or answers 4xx, into the maildrop; the reply relays the daemon's answer.
//!
//! Invariant: `250` after DATA only when the message was handed on
//! ([`Handed::Accepted`] or [`Handed::Dropped`]); envelope addresses are
//! validated and qualified before they are written anywhere.

use std::io::{self, BufRead, Read, Write};

use super::args::Options;
use super::{Context, Handed, dsn, hand_on, start};
use crate::maildrop::format::valid_address;
use crate::message::Envelope;
use crate::message::local::{qualify, route_recipient};

/// Longest command line read (RFC 5321 allows 512 octets; extensions more).
const LINE: u64 = 4096;

/// Serves one SMTP session; returns the exit code (0 unless I/O failed).
pub fn serve(r: &mut impl BufRead, w: &mut impl Write, o: &Options, ctx: &Context) -> u8 {
    match session(r, w, o, ctx) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sendmail: -bs session failed: {e}");
            super::EX_IOERR
        }
    }
}

fn reply(w: &mut impl Write, text: &str) -> io::Result<()> {
    w.write_all(text.as_bytes())?;
    w.write_all(b"\r\n")?;
    w.flush()
}

/// The address inside `<...>` after `FROM:`/`TO:`, parameters ignored.
fn path_arg<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = line[prefix.len()..].trim_start();
    match rest.strip_prefix('<') {
        Some(inner) => inner.split_once('>').map(|(a, _)| a.trim()),
        None => rest.split_whitespace().next().or(Some("")),
    }
}

fn session(r: &mut impl BufRead, w: &mut impl Write, o: &Options, ctx: &Context) -> io::Result<()> {
    let host = &ctx.local.domain;
    let domain = ctx.local.domain.as_str();
    let admin = ctx.local.admin.as_deref();
    reply(w, &format!("220 {host} ESMTP postrelay sendmail"))?;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let mut raw = Vec::new();
        if r.by_ref().take(LINE).read_until(b'\n', &mut raw)? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                from = None;
                rcpts.clear();
                let size = ctx.max_message_size;
                reply(
                    w,
                    &format!("250-{host}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE {size}"),
                )?;
            }
            "HELO" => {
                from = None;
                rcpts.clear();
                reply(w, &format!("250 {host}"))?;
            }
            "MAIL" if from.is_some() => reply(w, "503 5.5.1 Error: nested MAIL command")?,
            "MAIL" => match path_arg(line, "MAIL FROM:") {
                Some(a) if a.is_empty() || valid_address(a) => {
                    from = Some(qualify(a, domain));
                    reply(w, "250 2.1.0 Ok")?;
                }
                Some(_) => reply(w, "553 5.1.7 Bad sender address syntax")?,
                None => reply(w, "501 5.5.4 Syntax: MAIL FROM:<address>")?,
            },
            "RCPT" if from.is_none() => reply(w, "503 5.5.1 Error: need MAIL command")?,
            "RCPT" => match path_arg(line, "RCPT TO:") {
                Some(a) if valid_address(a) && rcpts.len() < ctx.max_recipients => {
                    rcpts.push(route_recipient(a, domain, admin));
                    reply(w, "250 2.1.5 Ok")?;
                }
                Some(a) if valid_address(a) => reply(w, "452 4.5.3 Error: too many recipients")?,
                Some(_) => reply(w, "553 5.1.3 Bad recipient address syntax")?,
                None => reply(w, "501 5.5.4 Syntax: RCPT TO:<address>")?,
            },
            "DATA" if rcpts.is_empty() => reply(w, "503 5.5.1 Error: need RCPT command")?,
            "DATA" => {
                let env = Envelope {
                    mail_from: from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut rcpts),
                };
                let answer = data(r, w, o, ctx, &env)?;
                reply(w, &answer)?;
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                reply(w, "250 2.0.0 Ok")?;
            }
            "NOOP" => reply(w, "250 2.0.0 Ok")?,
            "VRFY" => reply(w, "252 2.0.0 Send some mail, I'll try my best")?,
            "QUIT" => {
                reply(w, "221 2.0.0 Bye")?;
                return Ok(());
            }
            _ => reply(w, "502 5.5.2 Error: command not recognized")?,
        }
    }
}

/// Receives the DATA section into a drop file and hands it on; returns the reply.
fn data(
    r: &mut impl BufRead,
    w: &mut impl Write,
    o: &Options,
    ctx: &Context,
    env: &Envelope,
) -> io::Result<String> {
    reply(w, "354 End data with <CR><LF>.<CR><LF>")?;
    let (mut spill, at) = match start(ctx, env) {
        Ok(s) => s,
        Err((_, why)) => {
            discard(r)?;
            return Ok(format!("451 4.3.0 {why}"));
        }
    };
    let mut size = 0u64;
    let mut too_large = false;
    let mut out = io::BufWriter::with_capacity(64 * 1024, spill.file());
    loop {
        let mut raw = Vec::new();
        if r.by_ref().take(64 * 1024).read_until(b'\n', &mut raw)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let content = raw
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        if content == Some(b".") {
            break;
        }
        let bytes = match content {
            Some(l) => {
                let l = l.strip_prefix(b".").unwrap_or(l);
                [l, b"\r\n"].concat()
            }
            None => raw,
        };
        size += bytes.len() as u64;
        too_large |= size > ctx.max_message_size;
        if !too_large {
            out.write_all(&bytes)?;
        }
    }
    out.flush()?;
    drop(out);
    if too_large {
        return Ok(format!(
            "552 5.3.4 Message size exceeds fixed limit ({} bytes)",
            ctx.max_message_size
        ));
    }
    Ok(match hand_on(ctx, spill, at, env, &dsn(o)) {
        Handed::Accepted(text) => format!("250 {text}"),
        Handed::Dropped(path) => format!(
            "250 2.0.0 Ok: kept in the maildrop as {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        Handed::Refused(refused) => format!("{} {}", refused.code, refused.text.replace('\n', " ")),
        Handed::Failed(_, why) => format!("451 4.3.0 {why}"),
    })
}

/// Reads and drops a DATA section.
fn discard(r: &mut impl BufRead) -> io::Result<()> {
    loop {
        let mut raw = Vec::new();
        if r.by_ref().take(64 * 1024).read_until(b'\n', &mut raw)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if raw == b".\r\n" || raw == b".\n" {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_taken_from_inside_the_brackets() {
        let cases = [
            ("MAIL FROM:<a@x> BODY=8BITMIME", "MAIL FROM:", Some("a@x")),
            ("mail from: <a@x>", "MAIL FROM:", Some("a@x")),
            ("MAIL FROM:<>", "MAIL FROM:", Some("")),
            ("RCPT TO:root", "RCPT TO:", Some("root")),
            ("MAIL FROM", "MAIL FROM:", None),
            ("RCPT TO:<a@x", "RCPT TO:", None),
        ];
        for (line, prefix, want) in cases {
            assert_eq!(path_arg(line, prefix), want, "{line}");
        }
    }
}
