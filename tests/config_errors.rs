//! Configuration: every bad config fails before any port is bound, exit 78,
//! with a message naming the key and the expected form. Also: environment
//! overrides, secret files, and `check-config` redaction.

mod support;

use std::process::{Command, Output};

use support::{BIN, tempdir};

fn run(args: &[&str], toml: Option<&str>, env: &[(&str, &str)]) -> Output {
    let dir = tempdir();
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    // A port that something already holds: reaching the bind would fail differently.
    cmd.env("POSTRELAY_SPOOL__DIR", dir.path().join("spool"));
    if let Some(t) = toml {
        let p = dir.path().join("postrelay.toml");
        std::fs::write(&p, t).unwrap();
        cmd.arg("--config").arg(p);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args);
    let out = cmd.output().expect("run postrelay");
    drop(dir);
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// (config file, extra environment, text the error must contain)
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_configs_exit_78_with_a_message_naming_the_key() {
    let cases: &[Case] = &[
        ("bogus_key = 1\n", &[], "unknown field `bogus_key`"),
        (
            "[smtp]\nlisten = \"not-an-address\"\n",
            &[],
            "smtp.listen: invalid socket address syntax, expected host:port",
        ),
        (
            "[smtp]\nmax_message_size = \"ten\"\n",
            &[],
            "smtp.max_message_size: invalid type: string \"ten\", expected an integer (in ",
        ),
        (
            "[smtp]\nmax_message_size = 0\n",
            &[],
            "smtp.max_message_size: must be a positive number",
        ),
        (
            "[delivery]\nmax_age = \"five days\"\n",
            &[],
            "delivery.max_age: \"five days\" is not a duration",
        ),
        (
            "[delivery]\nretry_initial = \"1h\"\nretry_max = \"1m\"\n",
            &[],
            "delivery.retry_initial: must not be longer than delivery.retry_max",
        ),
        (
            "[delivery]\nconcurrency = 0\n",
            &[],
            "delivery.concurrency: must be at least 1",
        ),
        (
            "[delivery]\nretry_typo = \"1s\"\n",
            &[],
            "unknown field `retry_typo`",
        ),
        (
            "backend = \"sendgrid\"\n",
            &[],
            "backend: unknown value \"sendgrid\", expected \"postmark\", \"postal\" or \"dry-run\"",
        ),
        (
            "backend = \"postmark\"\n",
            &[],
            "postmark.server_token: backend \"postmark\" needs a server token",
        ),
        (
            "backend = \"postmark\"\n[postmark]\nserver_token = \"t\"\napi_url = \"ftp://x\"\n",
            &[],
            "postmark.api_url: scheme \"ftp\"",
        ),
        (
            "backend = \"postal\"\n[postal]\napi_key = \"k\"\n",
            &[],
            "postal.api_url: backend \"postal\" needs the URL",
        ),
        (
            "backend = \"postal\"\n[postal]\napi_url = \"https://postal.example.com\"\n",
            &[],
            "postal.api_key: backend \"postal\" needs an API key",
        ),
        (
            "[postmark]\nserver_token = \"a\"\nserver_token_file = \"/nonexistent\"\n",
            &[],
            "set either postmark.server_token or postmark.server_token_file",
        ),
        (
            "[postmark]\nserver_token_file = \"/nonexistent/token\"\n",
            &[],
            "postmark.server_token_file: cannot read /nonexistent/token",
        ),
        (
            "[log]\nformat = \"xml\"\n",
            &[],
            "log.format: unknown value \"xml\"",
        ),
        (
            "[log]\nlevel = \"postrelay=loud\"\n",
            &[],
            "log.level: \"postrelay=loud\" is not a log filter",
        ),
        (
            "[http]\nlisten = \"9025\"\n",
            &[],
            "http.listen: invalid socket address syntax, expected host:port",
        ),
        (
            "",
            &[("POSTRELAY_DELIVERY__MAX_AGE", "soon")],
            "delivery.max_age: \"soon\" is not a duration",
        ),
        ("not toml at all [[[\n", &[], "configuration error"),
        (
            "",
            &[("POSTRELAY_DELIVERY__RATE_LIMIT", "fast")],
            "delivery.rate_limit: invalid type: string \"fast\", expected an integer (in the environment)",
        ),
        (
            "",
            &[("POSTRELAY_SMTP__BOGUS", "1")],
            "smtp.bogus: unknown field `bogus`, expected one of `listen`",
        ),
        (
            "",
            &[("POSTRELAY_POSTMARK__SERVER_TOKEN", "")],
            "postmark.server_token: must not be empty or only whitespace",
        ),
        (
            "[postmark]\nserver_token = \"  \"\n",
            &[],
            "postmark.server_token: must not be empty or only whitespace",
        ),
        (
            "",
            &[("POSTRELAY_POSTAL__API_KEY", "key\nX-Injected: 1")],
            "postal.api_key: contains a character an HTTP header cannot carry",
        ),
        (
            "[smtp]\nmax_connections = 1000000\n",
            &[],
            "smtp.max_connections: must be at least 1 and at most 100000 (got 1000000)",
        ),
        (
            "[delivery]\nconcurrency = 100001\n",
            &[],
            "delivery.concurrency: must be at least 1 and at most 100000",
        ),
        (
            "[delivery]\nretry_max = \"60d\"\n",
            &[],
            "delivery.retry_max: must be at most 30d",
        ),
        (
            "[delivery]\nmax_age = \"400d\"\n",
            &[],
            "delivery.max_age: must be longer than 0s and at most 365d",
        ),
        (
            "shutdown_timeout = \"90m\"\n",
            &[],
            "shutdown_timeout: must be between 0s and 1h (got 1h 30m)",
        ),
        (
            "[smtp]\ncommand_timeout = \"10ms\"\n",
            &[],
            "smtp.command_timeout: must be between 100ms and 1h (got 10ms)",
        ),
        (
            "[smtp]\ndata_timeout = \"2h\"\n",
            &[],
            "smtp.data_timeout: must be between 100ms and 1h (got 2h)",
        ),
    ];
    for (toml, env, needle) in cases {
        let out = run(&["check-config"], Some(toml), env);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(78),
            "config {toml:?} env {env:?}: {err}"
        );
        assert!(
            err.contains(needle),
            "config {toml:?} env {env:?}: expected {needle:?} in {err:?}"
        );
    }
}

#[test]
fn serve_with_a_bad_config_exits_78_before_binding() {
    let out = run(
        &["serve"],
        Some("[smtp]\nlisten = \"127.0.0.1:0\"\nmax_recipients = 0\n"),
        &[],
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(!stderr(&out).contains("listening"), "{}", stderr(&out));
}

#[test]
fn a_bad_log_level_stops_serve_with_exit_78_naming_the_key() {
    let out = run(
        &["serve"],
        Some("[smtp]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info,postrelay=chatty\"\n"),
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(
            "configuration error: log.level: \"info,postrelay=chatty\" is not a log filter"
        ),
        "{err}"
    );
    assert!(!err.contains("listening"), "{err}");
}

#[test]
fn missing_config_file_exits_78() {
    let out = run(
        &["check-config"],
        None,
        &[("POSTRELAY_CONFIG", "/nonexistent/postrelay.toml")],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("/nonexistent/postrelay.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_config_at_all_is_the_dry_run_default() {
    let out = run(&["check-config"], None, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backend = \"dry-run\""), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:2525\""), "{text}");
}

#[test]
fn environment_overrides_every_level_and_wins_over_the_file() {
    let out = run(
        &["check-config"],
        Some("[smtp]\nhostname = \"from-file\"\nmax_recipients = 5\n"),
        &[
            ("POSTRELAY_SMTP__HOSTNAME", "from-env"),
            ("POSTRELAY_SMTP__LISTEN", "0.0.0.0:2626"),
            ("POSTRELAY_DELIVERY__RETRY_MAX", "2h"),
            ("POSTRELAY_IGNORE_UNSUPPORTED_FEATURES", "true"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "hostname = \"from-env\"",
        "listen = \"0.0.0.0:2626\"",
        "max_recipients = 5",
        "retry_max = \"2h\"",
        "ignore_unsupported_features = true",
    ] {
        assert!(text.contains(want), "missing {want} in {text}");
    }
}

#[test]
fn secrets_are_redacted_and_read_trimmed_from_files() {
    let dir = tempdir();
    let token = dir.path().join("token");
    std::fs::write(&token, "file-secret-token\n").unwrap();
    let toml = format!(
        "backend = \"postmark\"\n[postmark]\nserver_token_file = \"{}\"\n",
        token.display()
    );
    let out = run(&["check-config"], Some(&toml), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!all.contains("file-secret-token"), "{all}");

    let out = run(
        &["check-config"],
        Some("backend = \"postmark\"\n[postmark]\nserver_token = \"inline-secret\"\n"),
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("server_token = \"[redacted]\""), "{text}");
    assert!(!text.contains("inline-secret"), "{text}");
}

#[test]
fn root_fallback_token_is_honoured_and_env_beats_file() {
    // POSTMARK_SERVER_TOKEN alone is enough.
    let out = run(
        &["check-config"],
        Some("backend = \"postmark\"\n"),
        &[("POSTMARK_SERVER_TOKEN", "root-token")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // POSTRELAY_* beats a *_file from the config file (no "not both" error).
    let out = run(
        &["check-config"],
        Some("backend = \"postmark\"\n[postmark]\nserver_token_file = \"/nonexistent\"\n"),
        &[("POSTRELAY_POSTMARK__SERVER_TOKEN", "env-token")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn plain_http_api_url_on_a_public_host_warns() {
    let out = run(
        &["check-config"],
        Some(
            "backend = \"postmark\"\n[postmark]\nserver_token = \"t\"\napi_url = \"http://api.example.com\"\n",
        ),
        &[],
    );
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("plain http on a non-loopback host"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &["check-config"],
        Some(
            "backend = \"postmark\"\n[postmark]\nserver_token = \"t\"\napi_url = \"http://127.0.0.1:8080\"\n",
        ),
        &[],
    );
    assert!(!stderr(&out).contains("plain http"), "{}", stderr(&out));
}

#[test]
fn env_values_that_look_like_numbers_stay_strings() {
    let out = run(
        &["check-config"],
        None,
        &[
            ("POSTRELAY_SMTP__HOSTNAME", "0123"),
            ("POSTRELAY_POSTMARK__MESSAGE_STREAM", "0042"),
            ("POSTRELAY_DELIVERY__RATE_LIMIT", "7"),
            ("POSTRELAY_SMTP__MAX_MESSAGE_SIZE", "100"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "hostname = \"0123\"",
        "message_stream = \"0042\"",
        "rate_limit = 7",
        "max_message_size = 100",
    ] {
        assert!(text.contains(want), "missing {want} in {text}");
    }
}

#[test]
fn secrets_in_an_api_url_are_never_printed() {
    let out = run(
        &["check-config"],
        Some(
            "backend = \"postmark\"\n[postmark]\nserver_token = \"t\"\napi_url = \"http://user:s3cret@10.0.0.1\"\n",
        ),
        &[],
    );
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("\"http://[redacted]@10.0.0.1/\" is plain http on a non-loopback host"),
        "{err}"
    );
    assert!(
        stdout.contains("api_url = \"http://[redacted]@10.0.0.1/\""),
        "{stdout}"
    );
    assert!(
        !format!("{stdout}{err}").contains("s3cret"),
        "{stdout}{err}"
    );

    let out = run(
        &["check-config"],
        Some(
            "backend = \"postal\"\n[postal]\napi_key = \"k\"\napi_url = \"http://user:s3cret@[::1\"\n",
        ),
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("postal.api_url: "), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn a_password_with_slash_or_hash_is_not_printed_either() {
    let out = run(
        &["check-config"],
        None,
        &[
            (
                "POSTRELAY_POSTMARK__API_URL",
                "https://u:p/w#x@h.example:99999/",
            ),
            ("POSTRELAY_BACKEND", "postmark"),
            ("POSTRELAY_POSTMARK__SERVER_TOKEN", "t"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("postmark.api_url: ") && !err.contains("p/w"),
        "{err}"
    );
}
