//! Test harness: runs the real `postrelay` binary on a fresh spool with
//! SMTP on an ephemeral port, and talks to it over real sockets.
#![allow(dead_code)]

pub mod api_mock;
pub mod tls;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_postrelay");

/// A running daemon.
pub struct Relay {
    pub child: Child,
    pub smtp: SocketAddr,
    pub http: Option<SocketAddr>,
    pub dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

/// What a test wants from the daemon it starts.
#[derive(Default, Clone)]
pub struct Setup {
    /// TOML without `smtp.listen` / `spool.dir` (the harness sets those through the environment).
    pub toml: String,
    pub env: HashMap<String, String>,
}

impl Setup {
    pub fn toml(toml: &str) -> Setup {
        Setup {
            toml: toml.to_string(),
            env: HashMap::new(),
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Setup {
        self.env.insert(k.to_string(), v.to_string());
        self
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("postrelay-test")
        .tempdir()
        .expect("tempdir")
}

impl Relay {
    /// Starts the daemon with its spool under `dir` (reused across restarts).
    pub fn start(dir: &Path, setup: &Setup) -> Relay {
        let cfg = dir.join("postrelay.toml");
        std::fs::write(&cfg, &setup.toml).expect("write config");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&cfg)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("POSTRELAY_SMTP__LISTEN", "127.0.0.1:0")
            .env("POSTRELAY_SPOOL__DIR", dir.join("spool"))
            .env("POSTRELAY_SPOOL__MIN_FREE_SPACE", "0")
            .env("POSTRELAY_SENDMAIL__MAILDROP", dir.join("maildrop"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn postrelay");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = after(&line, "smtp listening on ") {
                    let _ = tx.send(("smtp", addr));
                }
                if let Some(addr) = after(&line, "http listening on ") {
                    let _ = tx.send(("http", addr));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut relay = Relay {
            child,
            smtp: "0.0.0.0:0".parse().unwrap(),
            http: None,
            dir: dir.to_path_buf(),
            logs,
        };
        let wants_http =
            setup.toml.contains("[http]") || setup.env.contains_key("POSTRELAY_HTTP__LISTEN");
        let deadline = Instant::now() + Duration::from_secs(30);
        while relay.smtp.port() == 0 || (wants_http && relay.http.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(("smtp", a)) => relay.smtp = a.parse().expect("smtp addr"),
                Ok((_, a)) => relay.http = Some(a.parse().expect("http addr")),
                Err(_) => panic!("daemon did not start; log:\n{}", relay.log()),
            }
        }
        relay
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool")
    }

    pub fn log(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn connect(&self) -> Smtp {
        Smtp::connect(self.smtp)
    }

    /// Connects and says EHLO.
    pub fn session(&self) -> Smtp {
        let mut c = self.connect();
        c.expect("220");
        c.cmd("EHLO client.example", "250");
        c
    }

    /// Sends one simple message from sender@example.com to `rcpt`; returns its queue id.
    pub fn send_simple(&self, subject: &str, rcpt: &[&str]) -> String {
        let mut c = self.session();
        let r = c.send_mail("sender@example.com", rcpt, &simple_message(subject));
        assert!(r.starts_with("250 2.0.0"), "{r}");
        c.cmd("QUIT", "221");
        queued_id(&r)
    }

    /// Waits until the message has left `queue/` and its delivery is logged;
    /// checks nothing went to `failed/`.
    pub fn wait_delivered(&self, id: &str) {
        self.wait_for("the message to leave the queue", 20, || {
            !self.queued_ids().iter().any(|q| q == id)
        });
        assert!(
            self.files_in("failed", "json").is_empty(),
            "unexpected dead letter; log:\n{}",
            self.log()
        );
        // The log line follows the spool change through a pipe: wait for it too.
        self.wait_for("the delivery log line", 10, || {
            self.log()
                .lines()
                .any(|l| l.contains("message delivered") && l.contains(id))
        });
    }

    /// Polls `cond` until it holds or `secs` pass; panics with the log otherwise.
    pub fn wait_for(&self, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log());
    }

    pub fn wait_log(&self, needle: &str, secs: u64) {
        self.wait_for(&format!("log line {needle:?}"), secs, || {
            self.log().contains(needle)
        });
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for exit (with a deadline).
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit()
    }

    /// Waits for the daemon to exit by itself (with a deadline).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!("daemon did not stop; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the daemon in KiB (`VmRSS`) and its peak (`VmHWM`).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Ids of the queued messages, wherever the spool keeps them (its log
    /// or `queue/`), read as `postrelay queue list` reads them.
    pub fn queued_ids(&self) -> Vec<String> {
        queued_in(&self.spool())
    }

    /// A queued message's record (as JSON) and bytes, as `postrelay queue show` reads them.
    pub fn queued(&self, id: &str) -> Option<(serde_json::Value, Vec<u8>)> {
        let (meta, raw) =
            postrelay::spool::read(&self.spool(), postrelay::spool::Area::Queue, id).ok()?;
        Some((serde_json::to_value(&meta).unwrap(), raw))
    }

    /// Ids of the queued messages held (their record says `"held": true`).
    pub fn held_ids(&self) -> Vec<String> {
        let held = |id: &String| self.queued(id).is_some_and(|(m, _)| m["held"] == true);
        self.queued_ids().into_iter().filter(held).collect()
    }

    pub fn files_in(&self, sub: &str, ext: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.spool().join(sub))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|e| e == ext));
        v.sort();
        v
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    // Text logs end the address at a space, JSON logs at a quote.
    Some(
        rest.split(|c: char| c.is_whitespace() || c == '"')
            .next()?
            .to_string(),
    )
}

/// A raw SMTP client: exact bytes out, whole replies in.
pub struct Smtp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Smtp {
    pub fn connect(addr: SocketAddr) -> Smtp {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Smtp {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &str) {
        self.send_bytes(bytes.as_bytes());
    }

    /// A reply if one arrives within `wait`, else None.
    pub fn reply_within(&mut self, wait: Duration) -> Option<String> {
        if !self.buf.contains(&b'\n') {
            self.stream.set_read_timeout(Some(wait)).unwrap();
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk);
            self.stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            match n {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
        Some(self.reply())
    }

    /// Sends without panicking; false once the server has closed.
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one reply (all its lines); returns the full text.
    pub fn reply(&mut self) -> String {
        let mut text = String::new();
        loop {
            let line = self.line();
            text.push_str(&line);
            text.push('\n');
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return text;
            }
        }
    }

    /// Reads one reply and asserts it starts with `prefix` (e.g. "250" or "250 2.0.0").
    pub fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply();
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    /// Sends a command line and expects a reply code.
    pub fn cmd(&mut self, line: &str, prefix: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.expect(prefix)
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return String::from_utf8_lossy(&line).trim_end().to_string();
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read reply");
            assert!(
                n > 0,
                "connection closed while waiting for a reply (have {:?})",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server has closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    /// Sends one whole message; returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250");
        for r in to {
            self.cmd(&format!("RCPT TO:<{r}>"), "250");
        }
        self.cmd("DATA", "354");
        self.send(body);
        self.send("\r\n.\r\n");
        self.reply()
    }
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("json")
}

/// Ids of the messages queued in the spool at `root` (see [`Relay::queued_ids`]).
pub fn queued_in(root: &Path) -> Vec<String> {
    postrelay::spool::list(root, postrelay::spool::Area::Queue)
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.id)
        .collect()
}

/// Queue id from `250 2.0.0 Ok: queued as <id>`.
pub fn queued_id(reply: &str) -> String {
    reply.trim().rsplit(' ').next().expect("id").to_string()
}

pub fn simple_message(subject: &str) -> String {
    format!(
        "From: Sender <sender@example.com>\r\nTo: rcpt@example.org\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.com>\r\n\r\nHello from the test.\r\n"
    )
}

/// Config for a Postmark backend at an address where nothing listens: mail stays queued.
pub fn unreachable_postmark() -> String {
    "backend = \"postmark\"\n[postmark]\nserver_token = \"test-token\"\napi_url = \"http://127.0.0.1:9\"\n[delivery]\nretry_initial = \"1h\"\nretry_max = \"2h\"\n".to_string()
}

/// Runs `cmd` with `input` on its stdin, capturing stdout and stderr. The
/// input is written whole before the output is read: keep it small.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// GET over a plain socket: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

// Postmark calls, whether `/email` (one message) or `/email/batch` (an
// array): what they carry and the success answer for each element.

/// The messages one request carries: `/email` one object, `/email/batch` an array.
pub fn messages(body: &Value) -> Vec<Value> {
    match body {
        Value::Array(all) => all.clone(),
        one => vec![one.clone()],
    }
}

pub fn subjects(body: &Value) -> Vec<String> {
    messages(body)
        .iter()
        .map(|m| m["Subject"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Postmark's success for each message of the request, in the shape of
/// its path: one object for `/email`, an array of them for `/email/batch`.
pub fn ok_body(path: &str, body: &Value) -> Value {
    let results: Vec<Value> = messages(body)
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "ErrorCode": 0,
                "Message": "OK",
                "MessageID": format!("b7bc2f4a-e38e-4336-af7d-{i:012}"),
                "To": m["To"],
                "SubmittedAt": "2026-03-01T10:00:00.1234567-05:00"
            })
        })
        .collect();
    if path.ends_with("/batch") {
        Value::Array(results)
    } else {
        results.into_iter().next().unwrap_or(Value::Null)
    }
}

/// An SMTP session that reports failures instead of panicking: for loads
/// under which the daemon may die, refuse or cut a session at any byte.
pub struct Lenient {
    reader: BufReader<TcpStream>,
    out: TcpStream,
}

impl Lenient {
    pub fn open(addr: SocketAddr) -> std::io::Result<Lenient> {
        let out = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        out.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut s = Lenient {
            reader: BufReader::new(out.try_clone()?),
            out,
        };
        s.expect("", "220")?;
        s.expect("EHLO load.example\r\n", "250")?;
        Ok(s)
    }

    /// Sends `line` (may be empty) and reads one whole reply; an error
    /// unless it starts with `code`.
    pub fn expect(&mut self, line: &str, code: &str) -> std::io::Result<String> {
        self.out.write_all(line.as_bytes())?;
        let mut reply = String::new();
        loop {
            let mut l = String::new();
            if self.reader.read_line(&mut l)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            reply.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                break;
            }
        }
        if reply.starts_with(code) {
            Ok(reply)
        } else {
            Err(std::io::Error::other(reply))
        }
    }

    pub fn send(&mut self, subject: &str) -> std::io::Result<()> {
        self.expect("MAIL FROM:<load@example.com>\r\n", "250")?;
        self.expect("RCPT TO:<rcpt@example.org>\r\n", "250")?;
        self.expect("DATA\r\n", "354")?;
        let body = format!("{}.\r\n", simple_message(subject));
        self.expect(&body, "250 2.0.0").map(|_| ())
    }
}

/// The addresses of a Postmark `To`/`Cc`/`Bcc` field (`Name <a@x>, b@y`).
pub fn split_addresses(field: &Value) -> Vec<String> {
    field
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| match (a.rfind('<'), a.rfind('>')) {
            (Some(l), Some(r)) if l < r => a[l + 1..r].to_string(),
            _ => a.to_string(),
        })
        .collect()
}

/// Every address a Postmark message sends to (To, Cc and Bcc).
pub fn recipients_of(message: &Value) -> Vec<String> {
    ["To", "Cc", "Bcc"]
        .iter()
        .flat_map(|f| split_addresses(&message[*f]))
        .collect()
}
