//! sendmail(8)'s command line, parsed the way getopt does it (clustered
//! flags, `-fADDR` or `-f ADDR`, options anywhere before `--`), so every
//! flag cron, PHP, mutt, Symfony Mailer and the rest pass is understood.
//!
//! Invariant: a flag outside the documented set, a missing value, or CR,
//! LF or NUL in any argument is a [`UsageError`] (exit 64) naming the
//! argument; nothing an argument holds can later become a protocol line.

/// What the invocation asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// `-bm` (the default): read a message from stdin and send it.
    #[default]
    Deliver,
    /// `-bs`: an SMTP dialogue on stdin/stdout.
    Smtp,
    /// `-bp` (and `mailq`): list the queue.
    ListQueue,
    /// `-q`: retry the queue now.
    RunQueue,
    /// `-bi` (and `newaliases`): nothing to do; succeeds.
    NewAliases,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// `-t`: recipients from To, Cc and Bcc (Bcc is removed).
    pub read_headers: bool,
    /// `-i`, `-oi`: a line with a single "." does not end the message.
    pub ignore_dots: bool,
    /// `-f`, `-r`: envelope sender.
    pub from: Option<String>,
    /// `-F`: full name for a generated From.
    pub full_name: Option<String>,
    /// `-B`: `7BIT` or `8BITMIME`.
    pub body_type: Option<String>,
    /// `-N`: DSN NOTIFY (`never` or a list of `success,failure,delay`).
    pub notify: Option<String>,
    /// `-R`: DSN RET (`full` or `hdrs`).
    pub ret: Option<String>,
    /// `-V`: DSN ENVID.
    pub envid: Option<String>,
    /// `-v`: print the final reply to stderr.
    pub verbose: bool,
    /// `--server HOST:PORT`: postrelay's SMTP address.
    pub server: Option<String>,
    pub recipients: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Flags that take a value (attached or as the next argument).
const WITH_VALUE: &[char] = &['f', 'r', 'F', 'B', 'N', 'R', 'V', 'h', 'L', 'O'];

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Options, UsageError> {
    for (i, a) in args.iter().enumerate() {
        if a.contains(['\r', '\n', '\0']) {
            return Err(usage(format!(
                "argument {} ({}) contains CR, LF or NUL",
                i + 1,
                a.split(['\r', '\n', '\0']).next().unwrap_or_default()
            )));
        }
    }
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            o.recipients.extend(it.by_ref().cloned());
            break;
        }
        if let Some(server) = arg.strip_prefix("--server") {
            o.server = Some(match server.strip_prefix('=') {
                Some(v) => v.to_string(),
                None if server.is_empty() => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage("--server needs HOST:PORT"))?,
                None => return Err(usage(format!("unknown option {arg}"))),
            });
            continue;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            o.recipients.push(arg.clone());
            continue;
        };
        for (at, flag) in flags.char_indices() {
            let rest = &flags[at + flag.len_utf8()..];
            if WITH_VALUE.contains(&flag) {
                let value = match rest {
                    "" => it
                        .next()
                        .cloned()
                        .ok_or_else(|| usage(format!("-{flag} needs a value")))?,
                    attached => attached.to_string(),
                };
                value_flag(&mut o, flag, value)?;
                break;
            }
            match flag {
                't' => o.read_headers = true,
                'i' => o.ignore_dots = true,
                'v' => o.verbose = true,
                'G' | 'U' | 'm' => {}
                'A' => break,
                'o' => {
                    let opt = match rest {
                        "" => it.next().cloned().unwrap_or_default(),
                        attached => attached.to_string(),
                    };
                    if opt == "i" {
                        o.ignore_dots = true;
                    }
                    break;
                }
                'b' => {
                    o.mode = match rest {
                        "m" => Mode::Deliver,
                        "s" => Mode::Smtp,
                        "p" => Mode::ListQueue,
                        "i" => Mode::NewAliases,
                        other => return Err(usage(format!("-b{other}: unsupported mode"))),
                    };
                    break;
                }
                'q' => {
                    o.mode = Mode::RunQueue;
                    break;
                }
                other => return Err(usage(format!("-{other}: unknown option"))),
            }
        }
    }
    Ok(o)
}

fn value_flag(o: &mut Options, flag: char, value: String) -> Result<(), UsageError> {
    let bad = |what: &str| usage(format!("-{flag} {value:?}: {what}"));
    match flag {
        'f' | 'r' => o.from = Some(value),
        'F' => o.full_name = Some(value),
        'B' => {
            if !["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) {
                return Err(bad("must be 7BIT or 8BITMIME"));
            }
            o.body_type = Some(value.to_ascii_uppercase());
        }
        'N' => {
            let words: Vec<String> = value
                .split(',')
                .map(|w| w.trim().to_ascii_lowercase())
                .collect();
            let known = words
                .iter()
                .all(|w| ["success", "failure", "delay"].contains(&w.as_str()));
            if !(words == ["never"] || known) {
                return Err(bad("must be never, or a list of success, failure, delay"));
            }
            o.notify = Some(words.join(",").to_ascii_uppercase());
        }
        'R' => {
            let v = value.to_ascii_uppercase();
            if v != "FULL" && v != "HDRS" {
                return Err(bad("must be full or hdrs"));
            }
            o.ret = Some(v);
        }
        'V' => {
            let printable = value
                .bytes()
                .all(|b| (33..=126).contains(&b) && b != b'+' && b != b'=');
            if value.is_empty() || value.len() > 100 || !printable {
                return Err(bad("must be up to 100 printable characters without + or ="));
            }
            o.envid = Some(value);
        }
        'h' if value.parse::<u32>().is_err() => return Err(bad("must be a hop count")),
        // -L label, -O option=value: accepted and ignored.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, UsageError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn opts(f: impl FnOnce(&mut Options)) -> Options {
        let mut o = Options::default();
        f(&mut o);
        o
    }

    #[test]
    fn real_callers_invocations_parse() {
        let cases: Vec<(&[&str], Options)> = vec![
            // Debian cron
            (
                &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
                opts(|o| {
                    o.full_name = Some("CronDaemon".into());
                    o.ignore_dots = true;
                    o.body_type = Some("8BITMIME".into());
                    o.recipients = vec!["root".into()];
                }),
            ),
            // PHP mail() with additional parameters
            (
                &["-t", "-i", "-f", "app@example.com"],
                opts(|o| {
                    o.read_headers = true;
                    o.ignore_dots = true;
                    o.from = Some("app@example.com".into());
                }),
            ),
            (
                &["-t", "-i", "-rapp@example.com"],
                opts(|o| {
                    o.read_headers = true;
                    o.ignore_dots = true;
                    o.from = Some("app@example.com".into());
                }),
            ),
            // Symfony Mailer / Laravel
            (&["-bs"], opts(|o| o.mode = Mode::Smtp)),
            (
                &["-bs", "-i"],
                opts(|o| {
                    o.mode = Mode::Smtp;
                    o.ignore_dots = true;
                }),
            ),
            // mutt with DSN
            (
                &[
                    "-oi",
                    "-N",
                    "failure,delay",
                    "-R",
                    "hdrs",
                    "-V",
                    "env-1",
                    "--",
                    "a@x",
                    "-b@y",
                ],
                opts(|o| {
                    o.ignore_dots = true;
                    o.notify = Some("FAILURE,DELAY".into());
                    o.ret = Some("HDRS".into());
                    o.envid = Some("env-1".into());
                    o.recipients = vec!["a@x".into(), "-b@y".into()];
                }),
            ),
            // clustered flags, ignored ones, options after a recipient
            (
                &[
                    "-ti", "-h", "5", "-L", "tag", "-G", "-U", "-m", "-Am", "-Ac", "-O", "A=b",
                    "r@x", "-v",
                ],
                opts(|o| {
                    o.read_headers = true;
                    o.ignore_dots = true;
                    o.verbose = true;
                    o.recipients = vec!["r@x".into()];
                }),
            ),
            (&["-bp"], opts(|o| o.mode = Mode::ListQueue)),
            (&["-q"], opts(|o| o.mode = Mode::RunQueue)),
            (&["-q30m"], opts(|o| o.mode = Mode::RunQueue)),
            (&["-bi"], opts(|o| o.mode = Mode::NewAliases)),
            (
                &["-bm", "-N", "never", "r@x"],
                opts(|o| {
                    o.notify = Some("NEVER".into());
                    o.recipients = vec!["r@x".into()];
                }),
            ),
            (
                &["--server", "127.0.0.1:25", "r@x"],
                opts(|o| {
                    o.server = Some("127.0.0.1:25".into());
                    o.recipients = vec!["r@x".into()];
                }),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(p(args), Ok(want), "{args:?}");
        }
    }

    #[test]
    fn unknown_flags_and_bad_values_are_usage_errors_naming_them() {
        let cases: &[(&[&str], &str)] = &[
            (&["-x", "r@x"], "-x: unknown option"),
            (&["-bd"], "-bd: unsupported mode"),
            (&["-f"], "-f needs a value"),
            (&["-N", "sometimes"], "-N \"sometimes\": must be never"),
            (&["-R", "body"], "-R \"body\": must be full or hdrs"),
            (&["-V", "a=b"], "-V \"a=b\": must be up to 100"),
            (&["-h", "five"], "-h \"five\": must be a hop count"),
            (&["-B", "BINARY"], "-B \"BINARY\": must be 7BIT or 8BITMIME"),
        ];
        for (args, want) in cases {
            let e = p(args).unwrap_err().0;
            assert!(e.starts_with(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn cr_lf_or_nul_in_any_argument_is_refused_naming_it() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["-f", "app@example.com>\r\nRCPT TO:<victim@evil.example>"],
                "argument 2 (app@example.com>)",
            ),
            (
                &["-FBob\r\nX-PM-Message-Stream: broadcast", "r@x"],
                "argument 1 (-FBob)",
            ),
            (&["r@x", "s@x\nt@x"], "argument 2 (s@x)"),
            (&["-N", "never\0"], "argument 2 (never)"),
            (&["-V", "id\r"], "argument 2 (id)"),
            (&["-R", "\nfull"], "argument 2 ()"),
        ];
        for (args, want) in cases {
            let e = p(args).unwrap_err().0;
            assert!(
                e.starts_with(want) && e.ends_with("contains CR, LF or NUL"),
                "{e}"
            );
        }
    }
}
