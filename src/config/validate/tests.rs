//! Table tests of the checks: each range at and past its edges, the URL
//! rules, the log filter, and credentials kept out of every message.

use super::*;
use crate::config::testing::{err, load_env};

/// The default config with `change` applied, validated without secrets.
fn check(change: impl FnOnce(&mut Config)) -> Result<Vec<String>, String> {
    let mut c = Config::default();
    change(&mut c);
    validate(&c, None).map_err(|e| e.to_string())
}

type Change = fn(&mut Config);

#[test]
fn out_of_range_values_are_refused_naming_key_and_range() {
    let cases: &[(Change, &str)] = &[
        (
            |c| c.smtp.max_connections = 100_001,
            "smtp.max_connections: must be at least 1 and at most 100000 (got 100001)",
        ),
        (
            |c| c.smtp.max_connections = 0,
            "smtp.max_connections: must be at least 1 and at most 100000 (got 0)",
        ),
        (
            |c| c.delivery.concurrency = usize::MAX,
            "delivery.concurrency: must be at least 1 and at most 100000",
        ),
        (
            |c| c.delivery.retry_max = Dur::secs(31 * 86400),
            "delivery.retry_max: must be at most 30d (got 1month",
        ),
        (
            |c| c.delivery.max_age = Dur::secs(366 * 86400),
            "delivery.max_age: must be longer than 0s and at most 365d",
        ),
        (
            |c| c.delivery.max_age = Dur::secs(0),
            "delivery.max_age: must be longer than 0s and at most 365d (got 0s)",
        ),
        (
            |c| c.delivery.retry_initial = Dur::secs(0),
            "delivery.retry_initial: must be longer than 0s",
        ),
        (
            |c| c.delivery.retry_initial = Dur::secs(3600),
            "delivery.retry_initial: must not be longer than delivery.retry_max",
        ),
        (
            |c| c.shutdown_timeout = Dur::secs(7200),
            "shutdown_timeout: must be between 0s and 1h (got 2h)",
        ),
        (
            |c| c.smtp.command_timeout = Dur(Duration::from_millis(99)),
            "smtp.command_timeout: must be between 100ms and 1h (got 99ms)",
        ),
        (
            |c| c.smtp.data_timeout = Dur::secs(61 * 60),
            "smtp.data_timeout: must be between 100ms and 1h (got 1h 1m)",
        ),
        (
            |c| c.smtp.max_message_size = 0,
            "smtp.max_message_size: must be a positive number",
        ),
        (
            |c| c.smtp.max_recipients = 0,
            "smtp.max_recipients: must be at least 1",
        ),
        (
            |c| c.smtp.max_header_size = 1023,
            "smtp.max_header_size: must be at least 1024 bytes",
        ),
        (
            |c| c.smtp.check_memory = 1024 * 1024 - 1,
            "smtp.check_memory: must be at least 1048576 bytes",
        ),
        (
            |c| c.smtp.hostname = "relay example".into(),
            "smtp.hostname: must be a host name without spaces",
        ),
        (
            |c| {
                c.backend = BackendKind::Postmark;
                c.postmark.message_stream = " ".into();
            },
            "postmark.message_stream: must not be empty",
        ),
        (
            |c| c.backend = BackendKind::Postal,
            "postal.api_url: backend \"postal\" needs the URL of your Postal server",
        ),
    ];
    for (change, want) in cases {
        let e = check(change).expect_err(want);
        assert!(e.starts_with(want), "want {want:?}, got {e:?}");
    }
}

#[test]
fn the_edges_of_each_range_are_allowed() {
    check(|c| {
        c.smtp.max_connections = MAX_PARALLEL;
        c.delivery.concurrency = MAX_PARALLEL;
        c.delivery.retry_max = Dur::secs(30 * 86400);
        c.delivery.max_age = Dur::secs(365 * 86400);
        c.shutdown_timeout = Dur::secs(0);
        c.smtp.command_timeout = Dur(Duration::from_millis(100));
        c.smtp.data_timeout = Dur::secs(3600);
        c.smtp.max_header_size = 1024;
        c.smtp.check_memory = 1024 * 1024;
    })
    .unwrap();
}

#[test]
fn log_level_must_be_a_filter_the_logger_accepts() {
    for good in [
        "info",
        "warn,postrelay=debug",
        "postrelay::smtp=trace",
        "off",
        "",
    ] {
        check(|c| c.log.level = good.into()).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
    for bad in ["warning", "info,verbose"] {
        let e = check(|c| c.log.level = bad.into()).expect_err(bad);
        assert!(e.contains("is not a level (trace, debug"), "{bad:?}: {e}");
    }
    check(|c| c.log.level = "WARN,postrelay".into()).unwrap();
    for bad in ["postrelay=loud", "info,postrelay=[", "=debug"] {
        let e = check(|c| c.log.level = bad.into()).expect_err(bad);
        assert!(
            e.starts_with(&format!("log.level: {bad:?} is not a log filter (")),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn urls_must_be_http_with_a_host_and_plain_http_warns_off_loopback() {
    let warning = |url: &str| {
        format!(
            "k {url:?} is plain http on a non-loopback host: the credential travels unencrypted"
        )
    };
    let cases: &[(&str, Result<Option<String>, &str>)] = &[
        ("https://api.postmarkapp.com", Ok(None)),
        ("http://127.0.0.1:8080", Ok(None)),
        ("http://localhost/x", Ok(None)),
        ("http://[::1]:9", Ok(None)),
        (
            "http://api.example.com",
            Ok(Some(warning("http://api.example.com"))),
        ),
        (
            "http://u:pw@10.0.0.1/",
            Ok(Some(warning("http://[redacted]@10.0.0.1/"))),
        ),
        ("ftp://x", Err("k: scheme \"ftp\" is not supported")),
        (
            "api.example.com",
            Err("k: \"api.example.com\" is not a URL ("),
        ),
        (
            "http://u:pw@[::1",
            Err("k: \"http://[redacted]@[::1\" is not a URL ("),
        ),
        (
            "gopher://u:pw@h",
            Err("k: scheme \"gopher\" is not supported"),
        ),
    ];
    for (url, want) in cases {
        let got = check_url("k", url).map_err(|e| e.to_string());
        match (got, want) {
            (Ok(w), Ok(want)) => assert_eq!(&w, want, "{url}"),
            (Err(e), Err(want)) => {
                assert!(e.starts_with(want), "{url}: {e}");
                assert!(!e.contains("pw"), "{url}: {e}");
            }
            (got, _) => panic!("{url}: {got:?}"),
        }
    }
}

#[test]
fn a_backend_needs_its_credential_only_when_secrets_are_resolved() {
    let mut c = Config {
        backend: BackendKind::Postmark,
        ..Config::default()
    };
    assert!(validate(&c, None).is_ok());
    let e = validate(&c, Some(&Secrets::default())).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("postmark.server_token: backend \"postmark\" needs a server token"),
        "{e}"
    );
    c.backend = BackendKind::Postal;
    c.postal.api_url = Some("https://postal.example.com".into());
    assert!(validate(&c, None).is_ok());
    let e = validate(&c, Some(&Secrets::default())).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("postal.api_key: backend \"postal\" needs an API key"),
        "{e}"
    );
}

#[test]
fn credentials_in_api_url_never_reach_a_message_or_the_printed_config() {
    let l = load_env(&[
        ("POSTRELAY_BACKEND", "postmark"),
        ("POSTRELAY_POSTMARK__SERVER_TOKEN", "t"),
        (
            "POSTRELAY_POSTMARK__API_URL",
            "http://user:s3cret@10.0.0.1/base",
        ),
    ])
    .unwrap();
    assert_eq!(
        l.warnings,
        vec![
            "postmark.api_url \"http://[redacted]@10.0.0.1/base\" is plain http on a non-loopback host: the credential travels unencrypted"
        ]
    );
    let printed = l.config.to_toml();
    assert!(
        printed.contains("api_url = \"http://[redacted]@10.0.0.1/base\""),
        "{printed}"
    );
    assert!(!printed.contains("s3cret"), "{printed}");
    // The real value is still what the backend gets.
    assert_eq!(
        l.config.postmark.api_url,
        "http://user:s3cret@10.0.0.1/base"
    );

    for url in [
        "http://user:s3cret@[::1",
        "gopher://user:s3cret@h",
        "user:s3cret@h/x",
    ] {
        let e = err(&[
            ("POSTRELAY_BACKEND", "postal"),
            ("POSTRELAY_POSTAL__API_KEY", "k"),
            ("POSTRELAY_POSTAL__API_URL", url),
        ]);
        assert!(e.starts_with("postal.api_url: "), "{e}");
        assert!(!e.contains("s3cret"), "{url}: {e}");
    }
    let l = load_env(&[
        ("POSTRELAY_BACKEND", "postal"),
        ("POSTRELAY_POSTAL__API_KEY", "k"),
        (
            "POSTRELAY_POSTAL__API_URL",
            "https://u:s3cret@postal.example.com",
        ),
    ])
    .unwrap();
    assert!(!l.config.to_toml().contains("s3cret"));
}

#[test]
fn local_names_and_the_maildrop_are_checked() {
    let cases: &[(Change, Option<&str>)] = &[
        (|c| c.local.domain = "example.com".into(), None),
        (|_| {}, None),
        (
            |c| c.local.domain = "ex ample.com".into(),
            Some("local.domain: must be a domain name"),
        ),
        (
            |c| c.local.domain = "root@example.com".into(),
            Some("local.domain: must be a domain name"),
        ),
        (|c| c.local.admin_address = "ops@example.com".into(), None),
        (
            |c| c.local.admin_address = "ops".into(),
            Some("local.admin_address: must be an address"),
        ),
        (
            |c| c.local.admin_address = "ops@example.com\r\nRCPT TO:<x@y>".into(),
            Some("local.admin_address: must be an address"),
        ),
        (
            |c| c.sendmail.maildrop = "".into(),
            Some("sendmail.maildrop: must be a directory path"),
        ),
        (
            |c| {
                c.spool.dir = "/var/lib/postrelay".into();
                c.sendmail.maildrop = "/var/lib/postrelay/maildrop".into();
            },
            Some("sendmail.maildrop: /var/lib/postrelay/maildrop is inside spool.dir"),
        ),
    ];
    for (change, want) in cases {
        match (check(change), want) {
            (Ok(_), None) => {}
            (Err(e), Some(w)) => assert!(e.starts_with(w), "{e}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }
}
