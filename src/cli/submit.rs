//! A minimal SMTP submission client for `postrelay sendmail`: EHLO, MAIL,
//! RCPT, DATA (dot-stuffed, streamed), QUIT, over a loopback connection.
//!
//! Invariant: every command line is built from an envelope whose addresses
//! were validated (no CR, LF, spaces or angle brackets) and from DSN values
//! the argument parser checked; the message streams through a fixed buffer.
//! DSN parameters are sent only when the server offers DSN.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::message::Envelope;

/// A reply that ended the submission: code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: u16,
    pub text: String,
    pub during: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("refused at {}: {} {}", .0.during, .0.code, .0.text)]
    Refused(Refused),
}

/// What `-N`, `-R`, `-V` and `-B` ask of the server.
#[derive(Debug, Clone, Default)]
pub struct Dsn {
    pub notify: Option<String>,
    pub ret: Option<String>,
    pub envid: Option<String>,
    pub body: Option<String>,
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Client {
    pub fn connect(addr: &str) -> Result<Client, SubmitError> {
        let stream = TcpStream::connect(addr).map_err(SubmitError::Connect)?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        stream.set_write_timeout(Some(Duration::from_secs(300)))?;
        let mut c = Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::with_capacity(64 * 1024, stream),
        };
        c.expect(220, "greeting")?;
        Ok(c)
    }

    /// Sends one message read from `message` (CRLF lines, not dot-stuffed);
    /// returns the final `250` text (it names the queue id).
    pub fn send(
        &mut self,
        env: &Envelope,
        dsn: &Dsn,
        message: &mut impl Read,
    ) -> Result<String, SubmitError> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "localhost".into());
        let caps = self.command(&format!("EHLO {}", host.trim()), 250, "EHLO")?;
        let offers = |kw: &str| {
            caps.lines().any(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case(kw))
            })
        };
        let mut mail = format!("MAIL FROM:<{}>", env.mail_from);
        if offers("DSN") {
            if let Some(ret) = &dsn.ret {
                mail.push_str(&format!(" RET={ret}"));
            }
            if let Some(envid) = &dsn.envid {
                mail.push_str(&format!(" ENVID={envid}"));
            }
        }
        if let Some(body) = dsn.body.as_ref().filter(|_| offers("8BITMIME")) {
            mail.push_str(&format!(" BODY={body}"));
        }
        self.command(&mail, 250, "MAIL FROM")?;
        for r in &env.rcpt_to {
            let mut rcpt = format!("RCPT TO:<{r}>");
            if let Some(notify) = dsn.notify.as_ref().filter(|_| offers("DSN")) {
                rcpt.push_str(&format!(" NOTIFY={notify}"));
            }
            self.command(&rcpt, 250, "RCPT TO")?;
        }
        self.command("DATA", 354, "DATA")?;
        stuff(message, &mut self.writer)?;
        self.writer.flush()?;
        let done = self.expect(250, "end of data")?;
        let _ = self.command("QUIT", 221, "QUIT");
        Ok(done)
    }

    fn command(
        &mut self,
        line: &str,
        want: u16,
        during: &'static str,
    ) -> Result<String, SubmitError> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.writer.flush()?;
        self.expect(want, during)
    }

    /// Reads a (multi-line) reply; its lines' texts joined by newlines.
    fn expect(&mut self, want: u16, during: &'static str) -> Result<String, SubmitError> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.by_ref().take(4096).read_line(&mut line)? == 0 {
                return Err(SubmitError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            let line = line.trim_end();
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return if code == want {
                    Ok(text)
                } else {
                    Err(SubmitError::Refused(Refused { code, text, during }))
                };
            }
            text.push('\n');
        }
    }
}

/// Copies `message` dot-stuffed and ends it with `.` (RFC 5321 §4.5.2).
fn stuff(message: &mut impl Read, w: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0; 64 * 1024];
    let mut at_line_start = true;
    let mut last = b'\n';
    loop {
        let n = message.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut from = 0;
        for i in 0..n {
            if at_line_start && buf[i] == b'.' {
                w.write_all(&buf[from..i])?;
                w.write_all(b".")?;
                from = i;
            }
            at_line_start = buf[i] == b'\n';
        }
        w.write_all(&buf[from..n])?;
        last = buf[n - 1];
    }
    if last != b'\n' {
        w.write_all(b"\r\n")?;
    }
    w.write_all(b".\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_dot_stuffed_and_terminated() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a\r\n.\r\n..b\r\n", b"a\r\n..\r\n...b\r\n.\r\n"),
            (b".first\r\n", b"..first\r\n.\r\n"),
            (b"no end", b"no end\r\n.\r\n"),
            (b"", b".\r\n"),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            stuff(&mut &input[..], &mut out).unwrap();
            assert_eq!(out, *want, "{}", String::from_utf8_lossy(input));
        }
    }
}
