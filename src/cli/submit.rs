//! A minimal SMTP submission client for `postrelay sendmail`: EHLO, MAIL,
//! RCPT, DATA (dot-stuffed), QUIT, over a plain loopback connection.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A reply that ended the submission: code and text.
#[derive(Debug)]
pub struct Refused {
    pub code: u16,
    pub text: String,
    pub during: &'static str,
}

#[derive(Debug)]
pub enum SubmitError {
    Connect(String),
    Io(std::io::Error),
    Refused(Refused),
}

impl From<std::io::Error> for SubmitError {
    fn from(e: std::io::Error) -> Self {
        SubmitError::Io(e)
    }
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: &str) -> Result<Client, SubmitError> {
        let stream = TcpStream::connect(addr).map_err(|e| SubmitError::Connect(e.to_string()))?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        stream.set_write_timeout(Some(Duration::from_secs(300)))?;
        let mut c = Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        c.expect(220, "greeting")?;
        Ok(c)
    }

    /// Sends one message; returns the final `250` text (it names the queue id).
    pub fn send(
        &mut self,
        from: &str,
        rcpts: &[String],
        crlf_message: &[u8],
    ) -> Result<String, SubmitError> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "localhost".into());
        self.command(&format!("EHLO {}", host.trim()), 250, "EHLO")?;
        self.command(&format!("MAIL FROM:<{from}>"), 250, "MAIL FROM")?;
        for r in rcpts {
            self.command(&format!("RCPT TO:<{r}>"), 250, "RCPT TO")?;
        }
        self.command("DATA", 354, "DATA")?;
        let mut data = Vec::with_capacity(crlf_message.len() + 64);
        for line in crlf_message.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        self.writer.write_all(&data)?;
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
        self.expect(want, during)
    }

    fn expect(&mut self, want: u16, during: &'static str) -> Result<String, SubmitError> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(SubmitError::Io(std::io::ErrorKind::UnexpectedEof.into()));
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
            text.push(' ');
        }
    }
}
