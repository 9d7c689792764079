//! Validation of what deserializing cannot check: ranges, the URLs and
//! credentials a backend needs, the log filter; plus the warnings (plain
//! http to a public host) logged once logging is up.
//!
//! Invariant: a `Config` that passes here is usable as is: every count is
//! within `1..=limit`, every duration within its documented range, the
//! chosen backend's URL is http(s) with a host, and `log.level` is a filter
//! the logger accepts. URLs appear in messages only through
//! [`without_userinfo`].

use std::time::Duration;

use super::{BackendKind, Config, ConfigError, Dur, Secrets, key_error, without_userinfo};

/// Upper bound for `smtp.max_connections` and `delivery.concurrency`: far
/// above any real need, far below what a semaphore or a task set can hold.
const MAX_PARALLEL: usize = 100_000;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Checks everything; `secrets` is `None` in [`Mode::Tools`](super::Mode),
/// which skips the "backend needs a credential" checks. Returns the warnings.
pub(super) fn validate(c: &Config, secrets: Option<&Secrets>) -> Result<Vec<String>, ConfigError> {
    smtp(c)?;
    let mut warnings = super::access::validate(c)?;
    delivery(c)?;
    local(c)?;
    log_level(&c.log.level)?;
    postmark_defaults(c)?;
    warnings.extend(backend(c, secrets)?);
    Ok(warnings)
}

/// The `[postmark]` send defaults, held to the limits Postmark applies to
/// the headers they stand in for (dry-run maps as Postmark, so always).
fn postmark_defaults(c: &Config) -> Result<(), ConfigError> {
    use super::postmark::{
        MAX_METADATA_FIELDS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS, MAX_TAG_CHARS,
        TrackLinks,
    };
    let pm = &c.postmark;
    check_count(
        "postmark.batch_size",
        pm.batch_size,
        super::postmark::MAX_BATCH_SIZE,
    )?;
    let controls = |text: &str| text.chars().any(char::is_control);
    if controls(&pm.tag) {
        return Err(key_error(
            "postmark.tag",
            "must not contain control characters",
        ));
    }
    let tag_chars = pm.tag.chars().count();
    if tag_chars > MAX_TAG_CHARS {
        return Err(key_error(
            "postmark.tag",
            format!("must be at most {MAX_TAG_CHARS} characters (got {tag_chars})"),
        ));
    }
    if let Some(links) = &pm.track_links
        && TrackLinks::parse(links).is_none()
    {
        return Err(key_error(
            "postmark.track_links",
            format!(
                "must be one of \"None\", \"HtmlAndText\", \"HtmlOnly\", \"TextOnly\" (got {links:?})"
            ),
        ));
    }
    if pm.metadata.len() > MAX_METADATA_FIELDS {
        return Err(key_error(
            "postmark.metadata",
            format!(
                "at most {MAX_METADATA_FIELDS} fields (got {})",
                pm.metadata.len()
            ),
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in &pm.metadata {
        let name = format!("postmark.metadata.{key}");
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > MAX_METADATA_KEY_CHARS {
            return Err(key_error(
                &name,
                format!("a key must be 1 to {MAX_METADATA_KEY_CHARS} characters (got {key_chars})"),
            ));
        }
        if controls(key) || controls(value) {
            return Err(key_error(&name, "must not contain control characters"));
        }
        let value_chars = value.chars().count();
        if value_chars > MAX_METADATA_VALUE_CHARS {
            return Err(key_error(
                &name,
                format!(
                    "a value must be at most {MAX_METADATA_VALUE_CHARS} characters (got {value_chars})"
                ),
            ));
        }
        if let Some(other) = seen.iter().find(|k| k.eq_ignore_ascii_case(key)) {
            return Err(key_error(
                &name,
                format!("same key as \"{other}\" ignoring case"),
            ));
        }
        seen.push(key);
    }
    Ok(())
}

fn smtp(c: &Config) -> Result<(), ConfigError> {
    let s = &c.smtp;
    if s.hostname.trim().is_empty() || s.hostname.contains(char::is_whitespace) {
        return Err(key_error(
            "smtp.hostname",
            "must be a host name without spaces, e.g. \"relay.local\"",
        ));
    }
    if s.max_message_size == 0 {
        return Err(key_error(
            "smtp.max_message_size",
            "must be a positive number of bytes",
        ));
    }
    if s.max_recipients == 0 {
        return Err(key_error("smtp.max_recipients", "must be at least 1"));
    }
    if s.max_header_size < 1024 {
        return Err(key_error(
            "smtp.max_header_size",
            "must be at least 1024 bytes, e.g. 1048576",
        ));
    }
    if s.check_memory < 1024 * 1024 {
        return Err(key_error(
            "smtp.check_memory",
            "must be at least 1048576 bytes (1 MiB), e.g. 268435456",
        ));
    }
    check_count("smtp.max_connections", s.max_connections, MAX_PARALLEL)?;
    let timeout = (Duration::from_millis(100), HOUR);
    let range = "between 100ms and 1h";
    check_duration(
        "smtp.command_timeout",
        s.command_timeout,
        timeout,
        range,
        "5m",
    )?;
    check_duration("smtp.data_timeout", s.data_timeout, timeout, range, "10m")?;
    let shutdown = (Duration::ZERO, HOUR);
    check_duration(
        "shutdown_timeout",
        c.shutdown_timeout,
        shutdown,
        "between 0s and 1h",
        "30s",
    )
}

fn delivery(c: &Config) -> Result<(), ConfigError> {
    let d = &c.delivery;
    check_count("delivery.concurrency", d.concurrency, MAX_PARALLEL)?;
    if d.retry_initial.0.is_zero() {
        return Err(key_error(
            "delivery.retry_initial",
            "must be longer than 0s, e.g. \"5s\"",
        ));
    }
    if d.retry_initial > d.retry_max {
        return Err(key_error(
            "delivery.retry_initial",
            "must not be longer than delivery.retry_max",
        ));
    }
    let retry_max = (Duration::ZERO, 30 * DAY);
    check_duration(
        "delivery.retry_max",
        d.retry_max,
        retry_max,
        "at most 30d",
        "15m",
    )?;
    let max_age = (Duration::from_nanos(1), 365 * DAY);
    let range = "longer than 0s and at most 365d";
    check_duration("delivery.max_age", d.max_age, max_age, range, "5d")
}

/// `[local]` and `[sendmail]`: names that end up in envelopes, and a maildrop
/// outside the private spool (which no other user may enter).
fn local(c: &Config) -> Result<(), ConfigError> {
    let domain = &c.local.domain;
    let bad_char = |s: &str| s.chars().any(|ch| ch.is_whitespace() || ch.is_control());
    if !domain.is_empty() && (bad_char(domain) || domain.contains(['@', '<', '>'])) {
        return Err(key_error(
            "local.domain",
            "must be a domain name, e.g. \"example.com\" (empty: the host's FQDN)",
        ));
    }
    let admin = &c.local.admin_address;
    let admin_ok = admin.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && !d.is_empty() && !d.contains('@') && !admin.contains(['<', '>'])
    });
    if !admin.is_empty() && (bad_char(admin) || !admin_ok) {
        return Err(key_error(
            "local.admin_address",
            "must be an address like \"ops@example.com\" (empty: local users' mail keeps their qualified name)",
        ));
    }
    let maildrop = &c.sendmail.maildrop;
    if maildrop.as_os_str().is_empty() {
        return Err(key_error(
            "sendmail.maildrop",
            "must be a directory path, e.g. \"/var/spool/postrelay/maildrop\"",
        ));
    }
    if maildrop.starts_with(&c.spool.dir) {
        return Err(key_error(
            "sendmail.maildrop",
            format!(
                "{} is inside spool.dir, which only the daemon may enter; put it beside it, e.g. \"/var/spool/postrelay/maildrop\"",
                maildrop.display()
            ),
        ));
    }
    Ok(())
}

/// The credential and the URL of the chosen backend.
fn backend(c: &Config, secrets: Option<&Secrets>) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    match c.backend {
        BackendKind::Postmark => {
            if secrets.is_some_and(|s| s.postmark_token.is_none()) {
                return Err(key_error(
                    "postmark.server_token",
                    "backend \"postmark\" needs a server token (postmark.server_token, postmark.server_token_file, POSTRELAY_POSTMARK__SERVER_TOKEN or POSTMARK_SERVER_TOKEN)",
                ));
            }
            warnings.extend(check_url("postmark.api_url", &c.postmark.api_url)?);
            if c.postmark.message_stream.trim().is_empty() {
                return Err(key_error(
                    "postmark.message_stream",
                    "must not be empty, e.g. \"outbound\"",
                ));
            }
        }
        BackendKind::Postal => {
            let Some(url) = &c.postal.api_url else {
                return Err(key_error(
                    "postal.api_url",
                    "backend \"postal\" needs the URL of your Postal server, e.g. \"https://postal.example.com\"",
                ));
            };
            warnings.extend(check_url("postal.api_url", url)?);
            if secrets.is_some_and(|s| s.postal_key.is_none()) {
                return Err(key_error(
                    "postal.api_key",
                    "backend \"postal\" needs an API key (postal.api_key, postal.api_key_file, POSTRELAY_POSTAL__API_KEY or POSTAL_API_KEY)",
                ));
            }
        }
        BackendKind::DryRun => {}
    }
    Ok(warnings)
}

/// `1..=max`, else "must be at least 1 and at most {max} (got {value})".
fn check_count(key: &str, value: usize, max: usize) -> Result<(), ConfigError> {
    if value == 0 || value > max {
        return Err(key_error(
            key,
            format!("must be at least 1 and at most {max} (got {value})"),
        ));
    }
    Ok(())
}

/// `min..=max`; `range` and `example` are how the message spells them.
fn check_duration(
    key: &str,
    value: Dur,
    (min, max): (Duration, Duration),
    range: &str,
    example: &str,
) -> Result<(), ConfigError> {
    if value.0 < min || value.0 > max {
        return Err(key_error(
            key,
            format!(
                "must be {range} (got {}), e.g. \"{example}\"",
                humantime::format_duration(value.0)
            ),
        ));
    }
    Ok(())
}

/// An http(s) URL with a host; plain http to anything but loopback is
/// allowed with a warning. Messages show the URL without its user-info.
fn check_url(key: &str, url: &str) -> Result<Option<String>, ConfigError> {
    let shown = without_userinfo(url);
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        key_error(
            key,
            format!("{shown:?} is not a URL ({e}), e.g. \"https://api.postmarkapp.com\""),
        )
    })?;
    let plain_http = match parsed.scheme() {
        "https" => false,
        "http" => true,
        other => {
            return Err(key_error(
                key,
                format!(
                    "scheme {other:?} is not supported; use https:// (or http:// for a local server)"
                ),
            ));
        }
    };
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(key_error(key, format!("{shown:?} has no host"))),
    };
    Ok((plain_http && !loopback).then(|| {
        format!(
            "{key} {shown:?} is plain http on a non-loopback host: the credential travels unencrypted"
        )
    }))
}

/// The filter the logger will build from `log.level`, parsed the same way
/// now, so a typo stops the start instead of silently logging at `info`.
/// A bare word is read by the logger as a target name (`"warning"` would
/// silence everything but a target called `warning`), so a bare word must
/// be a level or one of our own targets.
fn log_level(level: &str) -> Result<(), ConfigError> {
    let bare_word = level.split(',').map(str::trim).find(|d| {
        !d.is_empty()
            && !d.contains(['=', ':', '['])
            && !d.starts_with("postrelay")
            && d.parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
    });
    if let Some(word) = bare_word {
        return Err(key_error(
            "log.level",
            format!(
                "{word:?} is not a level (trace, debug, info, warn, error, off), e.g. \"info\" or \"warn,postrelay=debug\""
            ),
        ));
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| {
            key_error(
                "log.level",
                format!(
                    "{level:?} is not a log filter ({e}), e.g. \"info\" or \"warn,postrelay=debug\""
                ),
            )
        })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod postmark_default_tests {
    use super::super::Mode;
    use super::super::testing::load_toml;

    fn load(postmark: &str) -> Result<super::Config, String> {
        load_toml(&format!("[postmark]\n{postmark}\n"), &[], Mode::Tools).map(|l| l.config)
    }

    #[test]
    fn send_defaults_load_from_the_postmark_table() {
        let c = load(
            "tag = \"billing\"\ntrack_opens = true\ntrack_links = \"HtmlOnly\"\nmetadata = { client = \"acme\", env = \"prod\" }",
        )
        .unwrap();
        assert_eq!(c.postmark.tag, "billing");
        assert_eq!(c.postmark.track_opens, Some(true));
        assert_eq!(c.postmark.track_links.as_deref(), Some("HtmlOnly"));
        assert_eq!(c.postmark.metadata.len(), 2);
        let unset = load("").unwrap();
        assert_eq!(
            (unset.postmark.tag.as_str(), unset.postmark.track_opens),
            ("", None)
        );
        assert!(unset.postmark.track_links.is_none() && unset.postmark.metadata.is_empty());
    }

    #[test]
    fn send_defaults_beyond_postmark_limits_are_refused_naming_the_key() {
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i} = \"v\"")).collect();
        let cases = [
            (
                format!("tag = \"{}\"", "t".repeat(1001)),
                "postmark.tag: must be at most 1000 characters (got 1001)",
            ),
            (
                "tag = \"a\\nb\"".to_string(),
                "postmark.tag: must not contain control characters",
            ),
            (
                "track_links = \"Always\"".to_string(),
                "postmark.track_links: must be one of",
            ),
            (
                format!("metadata = {{ {} }}", eleven.join(", ")),
                "postmark.metadata: at most 10 fields (got 11)",
            ),
            (
                format!("metadata = {{ {} = \"v\" }}", "k".repeat(21)),
                "postmark.metadata.kkkkkkkkkkkkkkkkkkkkk: a key must be 1 to 20 characters (got 21)",
            ),
            (
                format!("metadata = {{ k = \"{}\" }}", "v".repeat(81)),
                "postmark.metadata.k: a value must be at most 80 characters (got 81)",
            ),
            (
                "metadata = { Key = \"a\", key = \"b\" }".to_string(),
                "postmark.metadata.key: same key as \"Key\" ignoring case",
            ),
        ];
        for (toml, want) in cases {
            let err = load(&toml).expect_err(want);
            assert!(err.contains(want), "want {want:?}, got {err:?}");
        }
        let edge = format!(
            "tag = \"{}\"\nmetadata = {{ {} = \"{}\" }}",
            "t".repeat(1000),
            "k".repeat(20),
            "v".repeat(80)
        );
        load(&edge).unwrap();
    }

    #[test]
    fn batch_size_defaults_to_500_and_must_be_1_to_500_naming_the_key() {
        let unset = load("").unwrap();
        assert_eq!(unset.postmark.batch_size, 500);
        assert!(!unset.postmark.trace_metadata);
        assert_eq!(load("batch_size = 1").unwrap().postmark.batch_size, 1);
        assert_eq!(load("batch_size = 500").unwrap().postmark.batch_size, 500);
        for (toml, want) in [
            (
                "batch_size = 0",
                "postmark.batch_size: must be at least 1 and at most 500 (got 0)",
            ),
            (
                "batch_size = 501",
                "postmark.batch_size: must be at least 1 and at most 500 (got 501)",
            ),
        ] {
            let err = load(toml).expect_err(want);
            assert!(err.contains(want), "want {want:?}, got {err:?}");
        }
        assert!(
            load("trace_metadata = true")
                .unwrap()
                .postmark
                .trace_metadata
        );
    }
}
