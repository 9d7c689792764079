//! `postrelay sendmail` (and `/usr/sbin/sendmail`): what cron, PHP's
//! `mail()`, mutt, Symfony Mailer and other local programs expect. The
//! message streams from stdin into a drop file in the maildrop (or, when
//! the maildrop is not usable, an unnamed temp file), is handed to the
//! daemon over SMTP, and when the daemon is down or answers 4xx, the drop
//! file is committed to the maildrop for the daemon to import later.
//!
//! Invariant: exit 0 only when the daemon answered 250 or the message is
//! durably in the maildrop (fsync, rename, directory sync). Exit codes
//! follow sysexits(3): 64 usage, 65 data, 67 unknown recipient, 69
//! unavailable, 74 I/O, 75 try again.

pub mod args;
mod bs;
pub mod headers;
pub mod input;

use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use args::{Mode, Options};
use headers::Local;
use input::InputError;

use super::submit::{Client, Dsn, Refused, SubmitError};
use crate::maildrop::{DropFile, format};
use crate::message::Envelope;

pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOUSER: u8 = 67;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_IOERR: u8 = 74;
pub const EX_TEMPFAIL: u8 = 75;

/// What a submission needs from the configuration and the host.
#[derive(Debug, Clone)]
pub struct Context {
    /// postrelay's SMTP address.
    pub server: String,
    pub maildrop: PathBuf,
    pub max_message_size: u64,
    pub max_header_size: usize,
    /// More recipients than the daemon takes in one transaction is refused
    /// here: the importer would refuse the drop file too.
    pub max_recipients: usize,
    pub local: Local,
}

/// Where a message is written while it is handed on.
enum Spill {
    /// In the maildrop, under a temp name: committed if the daemon cannot take it.
    Drop(DropFile),
    /// The maildrop is not usable (the text says why): an unnamed temp file.
    Temp(File, String),
}

impl Spill {
    fn open(maildrop: &Path) -> io::Result<Spill> {
        match DropFile::create(maildrop) {
            Ok(d) => Ok(Spill::Drop(d)),
            Err(e) => {
                let why = format!("the maildrop {} is not usable: {e}", maildrop.display());
                let path =
                    crate::spool::fsio::temp_name(&std::env::temp_dir(), ".postrelay-sendmail");
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(
                        (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32,
                    )
                    .open(&path)?;
                let _ = std::fs::remove_file(&path);
                Ok(Spill::Temp(file, why))
            }
        }
    }

    fn file(&mut self) -> &mut File {
        match self {
            Spill::Drop(d) => d.file(),
            Spill::Temp(f, _) => f,
        }
    }
}

/// How a message was handed on.
#[derive(Debug)]
pub enum Handed {
    /// The daemon answered 250 with this text.
    Accepted(String),
    /// Durably in the maildrop under this name.
    Dropped(PathBuf),
    /// The daemon refused it for good (5xx).
    Refused(Refused),
    /// Neither: the exit code and what to tell the caller.
    Failed(u8, String),
}

/// Writes the envelope block and returns the spill, positioned to write the message.
fn start(ctx: &Context, env: &Envelope) -> Result<(Spill, u64), (u8, String)> {
    let block = format::encode(env).map_err(|e| (EX_USAGE, e.to_string()))?;
    let mut spill = Spill::open(&ctx.maildrop)
        .map_err(|e| (EX_TEMPFAIL, format!("cannot write the message: {e}")))?;
    spill
        .file()
        .write_all(&block)
        .map_err(|e| (EX_TEMPFAIL, format!("cannot write the message: {e}")))?;
    Ok((spill, block.len() as u64))
}

/// Offers the message to the daemon; when it cannot take it now, commits
/// the drop file to the maildrop.
fn hand_on(ctx: &Context, mut spill: Spill, at: u64, env: &Envelope, dsn: &Dsn) -> Handed {
    let sent = spill
        .file()
        .seek(SeekFrom::Start(at))
        .map_err(SubmitError::Io)
        .and_then(|_| {
            let mut message = BufReader::with_capacity(64 * 1024, spill.file());
            Client::connect(&ctx.server)?.send(env, dsn, &mut message)
        });
    let problem = match sent {
        Ok(text) => return Handed::Accepted(text),
        Err(SubmitError::Refused(r)) if r.code >= 500 => return Handed::Refused(r),
        Err(SubmitError::Connect(e)) => format!(
            "cannot reach postrelay at {}: {e} (is the daemon running? see --server)",
            ctx.server
        ),
        Err(e) => format!("postrelay at {} did not take the message: {e}", ctx.server),
    };
    match spill {
        Spill::Drop(d) => match d.commit() {
            Ok(path) => Handed::Dropped(path),
            Err(e) => Handed::Failed(
                EX_TEMPFAIL,
                format!(
                    "{problem}, and the maildrop {} cannot take it: {e}",
                    ctx.maildrop.display()
                ),
            ),
        },
        Spill::Temp(_, why) if problem.starts_with("cannot reach") => {
            Handed::Failed(EX_UNAVAILABLE, format!("{problem}; {why}"))
        }
        Spill::Temp(_, why) => Handed::Failed(EX_TEMPFAIL, format!("{problem}; {why}")),
    }
}

fn dsn(o: &Options) -> Dsn {
    Dsn {
        notify: o.notify.clone(),
        ret: o.ret.clone(),
        envid: o.envid.clone(),
        body: o.body_type.clone(),
    }
}

/// Runs a `-bm` or `-bs` submission; returns the exit code.
pub fn run(o: &Options, ctx: &Context) -> u8 {
    if o.mode == Mode::Smtp {
        return bs::serve(&mut io::stdin().lock(), &mut io::stdout().lock(), o, ctx);
    }
    let mut stdin = BufReader::with_capacity(64 * 1024, io::stdin().lock());
    match deliver(o, ctx, &mut stdin) {
        Handed::Accepted(text) => {
            if o.verbose {
                eprintln!("sendmail: {text}");
            }
            0
        }
        Handed::Dropped(path) => {
            if o.verbose {
                eprintln!(
                    "sendmail: the daemon cannot take it now; kept in the maildrop as {}",
                    path.display()
                );
            }
            0
        }
        Handed::Refused(r) => {
            eprintln!(
                "sendmail: postrelay refused the message at {}: {} {}",
                r.during, r.code, r.text
            );
            match r.during {
                "RCPT TO" => EX_NOUSER,
                "greeting" | "EHLO" => EX_UNAVAILABLE,
                _ => EX_DATAERR,
            }
        }
        Handed::Failed(code, why) => {
            eprintln!("sendmail: {why}");
            code
        }
    }
}

fn deliver(o: &Options, ctx: &Context, stdin: &mut impl io::BufRead) -> Handed {
    let head = match input::read_head(stdin, o.ignore_dots, ctx.max_header_size) {
        Ok(h) => h,
        Err(e) => return input_failure(e),
    };
    let prepared = match headers::prepare(o, &head, &ctx.local, SystemTime::now()) {
        Ok(p) => p,
        Err(e) => return Handed::Failed(EX_USAGE, e),
    };
    let count = prepared.envelope.rcpt_to.len();
    if count > ctx.max_recipients {
        let max = ctx.max_recipients;
        return Handed::Failed(
            EX_DATAERR,
            format!("{count} recipients: more than smtp.max_recipients ({max})"),
        );
    }
    let (mut spill, at) = match start(ctx, &prepared.envelope) {
        Ok(s) => s,
        Err((code, why)) => return Handed::Failed(code, why),
    };
    let header = prepared.header.len() as u64;
    if header > ctx.max_message_size {
        return input_failure(InputError::TooLarge(ctx.max_message_size));
    }
    let written = spill
        .file()
        .write_all(&prepared.header)
        .map_err(InputError::Io);
    let mut out = io::BufWriter::with_capacity(64 * 1024, spill.file());
    let body = written.and_then(|_| {
        if head.ended {
            return Ok(0);
        }
        input::copy_body(
            stdin,
            &mut out,
            o.ignore_dots,
            ctx.max_message_size - header,
        )
    });
    let flushed = out.flush().map_err(InputError::Io);
    drop(out);
    if let Err(e) = body.and(flushed.map(|_| 0)) {
        return input_failure(e);
    }
    hand_on(ctx, spill, at, &prepared.envelope, &dsn(o))
}

fn input_failure(e: InputError) -> Handed {
    match e {
        InputError::Io(_) => Handed::Failed(EX_IOERR, e.to_string()),
        _ => Handed::Failed(EX_DATAERR, e.to_string()),
    }
}

/// The login name of `uid` from an `/etc/passwd` text; the number when absent.
pub fn login_name(uid: u32, passwd: &str) -> String {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2].parse() == Ok(uid))
        .map(|f| f[0].to_string())
        .filter(|name| format::valid_address(name))
        .unwrap_or_else(|| uid.to_string())
}

/// The real uid's login name (not `$USER`, which the caller controls).
pub fn real_login() -> String {
    let uid = rustix::process::getuid().as_raw();
    login_name(
        uid,
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_comes_from_the_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\nodd user:x:7:7::/:/bin/sh\n";
        let cases = [(0, "root"), (33, "www-data"), (1000, "1000"), (7, "7")];
        for (uid, want) in cases {
            assert_eq!(login_name(uid, passwd), want, "{uid}");
        }
    }
}
