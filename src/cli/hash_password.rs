//! `postrelay hash-password`: prints an argon2id PHC string for a
//! `[[users]] password_hash`. The password comes from stdin (one line, its
//! line end dropped) or, on a terminal, from a prompt without echo, asked
//! twice.
//!
//! Invariant: the password is never echoed, printed or passed as an argument.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{Context, bail};

use crate::smtp::auth::hash_password;

/// Reads the password, prints its hash on stdout.
pub fn run() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        let again = prompt("Again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    } else {
        let mut text = String::new();
        stdin
            .lock()
            .read_to_string(&mut text)
            .context("cannot read the password from stdin")?;
        one_line(&text)?.to_string()
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let phc = hash_password(password.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{phc}");
    Ok(())
}

/// The password in piped input: one line; a trailing line end is not part of it.
fn one_line(text: &str) -> anyhow::Result<&str> {
    let line = text
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(text);
    if line.contains('\n') {
        bail!("stdin holds more than one line; give the password alone");
    }
    Ok(line)
}

/// Asks on stderr and reads a line from the terminal with echo off.
fn prompt(question: &str) -> anyhow::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let saved = tcgetattr(&stdin).context("cannot read the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("cannot turn echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln!();
    read.context("cannot read the password")?;
    Ok(one_line(&line)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn piped_input_is_one_line_without_its_line_end() {
        assert_eq!(one_line("s3cret\n").unwrap(), "s3cret");
        assert_eq!(one_line("s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(one_line(" spaced pass ").unwrap(), " spaced pass ");
        assert!(one_line("a\nb\n").is_err());
    }
}
