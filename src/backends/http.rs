//! The HTTP plumbing every API backend shares: the one `reqwest::Client`
//! (connection pool, TLS, timeouts), reading `Retry-After`, turning a failed
//! request into `Outcome::Transient`, and the text hygiene applied to
//! everything an API says before it reaches a log line.
//!
//! Invariant: no text built here carries a URL or a credential. Transport
//! errors are described by their kind and root cause only; API-provided text
//! is cleaned and bounded, and `redact` removes a credential that an API
//! echoes back.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

use crate::backends::Outcome;
use crate::mapping::{ApiCall, batch_json};

#[cfg(test)]
mod tests;

/// `User-Agent` of every API call.
pub const USER_AGENT: &str = concat!("postrelay/", env!("CARGO_PKG_VERSION"));

/// The longest wait a `Retry-After` header may impose; longer values are
/// clamped so one odd answer cannot park the queue for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// API text (an error `Message`, a body snippet) is cut to this many
/// characters before it goes into an outcome, so a proxy's HTML error page
/// cannot flood the log or the dead-letter record.
const MAX_API_TEXT: usize = 300;

/// Time limits of the shared client. `Default` holds the production values;
/// tests pass short ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// The whole call: connect, send, and reading the complete answer.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            total: Duration::from_secs(30),
        }
    }
}

/// The shared client could not be built (for example no usable TLS roots).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for API calls: {0}")]
pub struct ClientBuildError(#[source] reqwest::Error);

/// Builds the one client all backends share, with production timeouts.
pub fn build_client() -> Result<reqwest::Client, ClientBuildError> {
    build_client_with(Timeouts::default())
}

/// Builds the shared client with the given time limits.
///
/// Redirects are never followed: the credential travels in a custom header
/// (`X-Postmark-Server-Token`, `X-Server-API-Key`) that reqwest would carry
/// to whatever host a redirect names, and a redirected POST turns into a
/// GET anyway. A 3xx therefore reaches the classifier, which reports a
/// wrong `api_url`. Application retries live in the durable queue, never
/// here.
pub fn build_client_with(timeouts: Timeouts) -> Result<reqwest::Client, ClientBuildError> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.total)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_keepalive(Duration::from_secs(60))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(ClientBuildError)
}

/// Reads `Retry-After` from an answer's headers (see [`parse_retry_after`]).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// Parses a `Retry-After` value: delta-seconds (`"120"`) or an HTTP-date
/// (`"Sun, 22 Nov 2026 10:00:00 GMT"`), relative to `now`.
///
/// The result is clamped to [`MAX_RETRY_AFTER`]. A date already past means
/// "now" (`Some(0)`). Anything else (empty, negative, garbage) is `None`:
/// the API gave no usable hint and the queue's own backoff applies.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "a very long time".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Turns a failed call (no complete HTTP answer) into `Outcome::Transient`.
///
/// `api` names the service in the text ("Postmark", "Postal"). The reason
/// says which kind of failure it was and its root cause, never the URL:
/// the top-level reqwest error prints the URL, so only its sources are used.
pub fn transient_from_error(api: &str, error: &reqwest::Error) -> Outcome {
    let cause = root_cause(error);
    let reason = if error.is_timeout() && error.is_connect() {
        format!("{api}: timed out connecting to the API")
    } else if error.is_timeout() {
        format!(
            "{api}: no complete answer within the time limit; the API may have \
             accepted the message, so the retry can duplicate it"
        )
    } else if error.is_connect() {
        format!("{api}: cannot connect to the API: {cause}")
    } else if error.is_body() || error.is_decode() {
        format!("{api}: the answer broke off while being read: {cause}")
    } else {
        format!("{api}: the request failed: {cause}")
    };
    Outcome::Transient {
        reason,
        retry_after: None,
        throttled: false,
    }
}

/// The innermost error's text (for example "Connection refused (os error
/// 111)"), or a fixed word when the error has no source.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause = error.source();
    let mut last = None;
    while let Some(err) = cause {
        last = Some(err);
        cause = err.source();
    }
    match last {
        Some(err) => clean_api_text(&err.to_string()),
        None => "unknown error".to_owned(),
    }
}

/// Makes text from an API (or any peer) safe for a log line: control
/// characters and line breaks become spaces, runs of spaces collapse, and
/// the result is cut to a bounded length with an ellipsis.
pub fn clean_api_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_API_TEXT + 3));
    let mut count = 0;
    let mut last_space = true;
    for ch in text.chars() {
        let ch = if ch.is_control() { ' ' } else { ch };
        if ch == ' ' && last_space {
            continue;
        }
        if count == MAX_API_TEXT {
            out.push('…');
            return out.trim_end().to_owned();
        }
        last_space = ch == ' ';
        out.push(ch);
        count += 1;
    }
    out.trim_end().to_owned()
}

/// A short, cleaned view of a response body for texts about answers that
/// are not the API's JSON (a proxy's error page, an empty body).
pub fn body_snippet(body: &[u8]) -> String {
    let text = clean_api_text(&String::from_utf8_lossy(body));
    if text.is_empty() {
        "empty body".to_owned()
    } else {
        format!("body: {text}")
    }
}

/// Secrets shorter than this are not searched for: a Postmark token has 36
/// characters, a Postal key 24, and replacing every "t" of a one-letter
/// test token would garble the log ("Pos[redacted]mark").
pub const MIN_REDACTED_LEN: usize = 8;

/// Removes `secret` from every text of `outcome`, in case an API echoes the
/// credential back in its message. Secrets under [`MIN_REDACTED_LEN`]
/// (blank ones included) are left alone.
pub fn redact(outcome: Outcome, secret: &SecretString) -> Outcome {
    let secret = secret.expose_secret();
    if secret.trim().len() < MIN_REDACTED_LEN {
        return outcome;
    }
    let scrub = |text: String| {
        if text.contains(secret) {
            text.replace(secret, "[redacted]")
        } else {
            text
        }
    };
    match outcome {
        Outcome::Delivered { api_id, note } => Outcome::Delivered {
            api_id: api_id.map(scrub),
            note: note.map(scrub),
        },
        Outcome::Transient {
            reason,
            retry_after,
            throttled,
        } => Outcome::Transient {
            reason: scrub(reason),
            retry_after,
            throttled,
        },
        Outcome::Permanent { code, reason } => Outcome::Permanent {
            code: code.map(scrub),
            reason: scrub(reason),
        },
        Outcome::ConfigFault { code, reason } => Outcome::ConfigFault {
            code: code.map(scrub),
            reason: scrub(reason),
        },
    }
}

/// Joins a base `api_url` and an endpoint path without doubling the slash
/// (`https://h/` + `/email` is `https://h/email`) and checks the result is
/// an http(s) URL. The error text names the config key and never repeats the
/// value, which may carry credentials in its user-info part.
pub fn endpoint_url(api_url: &str, path: &str, key: &str) -> Result<reqwest::Url, String> {
    let joined = format!("{}{}", api_url.trim().trim_end_matches('/'), path);
    match reqwest::Url::parse(&joined) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        Ok(_) => Err(format!("{key} must be an http:// or https:// URL")),
        Err(err) => Err(format!("{key} is not a valid URL: {err}")),
    }
}

/// A URL as it may appear in `Debug` output: user name and password
/// removed, by the config's one redaction rule.
pub fn display_url(url: &reqwest::Url) -> String {
    crate::config::without_userinfo(url.as_str())
}

/// Where and how to call one API: the endpoint URL and the credential
/// header, both checked once when the backend is built (the config has
/// validated them already; this turns them into their HTTP types).
pub struct Endpoint {
    url: reqwest::Url,
    header: &'static str,
    credential: reqwest::header::HeaderValue,
}

impl Endpoint {
    /// `url_key` and `secret_key` name the config keys in error texts, which
    /// never repeat the values.
    pub fn new(
        api_url: &str,
        path: &str,
        url_key: &str,
        header: &'static str,
        secret: &SecretString,
        secret_key: &str,
    ) -> Result<Endpoint, String> {
        let url = endpoint_url(api_url, path, url_key)?;
        let mut credential = reqwest::header::HeaderValue::from_str(secret.expose_secret())
            .map_err(|_| {
                format!(
                    "{secret_key} contains characters that cannot go into an HTTP header \
                     (a stray line break from a secret file?): check {secret_key}"
                )
            })?;
        credential.set_sensitive(true);
        Ok(Endpoint {
            url,
            header,
            credential,
        })
    }

    /// The same endpoint with another credential (a user's own token, a
    /// passthrough token); `None` when it cannot go into a header.
    pub fn with_credential(&self, secret: &SecretString) -> Option<Endpoint> {
        let mut credential = reqwest::header::HeaderValue::from_str(secret.expose_secret()).ok()?;
        credential.set_sensitive(true);
        Some(Endpoint {
            url: self.url.clone(),
            header: self.header,
            credential,
        })
    }

    /// The URL without user name and password, for `Debug` output.
    pub fn display(&self) -> String {
        display_url(&self.url)
    }
}

/// A request body, sent as JSON: a mapped call, a batch of them, or (in
/// tests) any JSON value.
pub trait JsonBody: Sync {
    fn to_json(&self) -> Vec<u8>;
}

impl JsonBody for ApiCall {
    fn to_json(&self) -> Vec<u8> {
        ApiCall::to_json(self)
    }
}

impl JsonBody for [&ApiCall] {
    fn to_json(&self) -> Vec<u8> {
        batch_json(self)
    }
}

impl JsonBody for serde_json::Value {
    fn to_json(&self) -> Vec<u8> {
        // A JSON value has string keys and finite numbers: it always encodes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What an API answered: status, `Retry-After`, body.
pub struct Answered {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// One API call as every backend makes it: `credential` (the message's own)
/// in place of the configured secret when given, the answer turned into an
/// [`Outcome`] by the backend's `classify`, and whichever secret was used
/// redacted from the outcome's text. A credential that cannot go into a
/// header is a configuration fault of that credential alone.
pub async fn call<B: JsonBody + ?Sized>(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    configured: &SecretString,
    credential: Option<&SecretString>,
    api: &str,
    body: &B,
    classify: impl FnOnce(Answered) -> Outcome,
) -> Outcome {
    let target = Target {
        client,
        endpoint,
        configured,
        credential,
        api,
    };
    call_as(target, body, classify, |o| o, redact).await
}

/// [`call`] for a call that delivers `count` messages at once (a batch):
/// `classify` gives one outcome per message, in order; a failure before an
/// answer, or a credential that cannot go into a header, is the outcome of
/// every one of them. Each outcome is redacted like [`call`]'s.
pub async fn call_each<B: JsonBody + ?Sized>(
    target: Target<'_>,
    count: usize,
    body: &B,
    classify: impl FnOnce(Answered) -> Vec<Outcome>,
) -> Vec<Outcome> {
    let redact_each = |outcomes: Vec<Outcome>, secret: &SecretString| {
        outcomes.into_iter().map(|o| redact(o, secret)).collect()
    };
    call_as(target, body, classify, |o| vec![o; count], redact_each).await
}

/// Where one call goes and with which credential (see [`call`]).
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub client: &'a reqwest::Client,
    pub endpoint: &'a Endpoint,
    /// The backend's configured secret.
    pub configured: &'a SecretString,
    /// The message's own, in place of `configured`.
    pub credential: Option<&'a SecretString>,
    /// The API's name in texts ("Postmark").
    pub api: &'a str,
}

async fn call_as<B: JsonBody + ?Sized, T>(
    target: Target<'_>,
    body: &B,
    classify: impl FnOnce(Answered) -> T,
    failed: impl FnOnce(Outcome) -> T,
    scrub: impl FnOnce(T, &SecretString) -> T,
) -> T {
    let own;
    let (endpoint, secret) = match target.credential {
        None => (target.endpoint, target.configured),
        Some(secret) => match target.endpoint.with_credential(secret) {
            Some(e) => {
                own = e;
                (&own, secret)
            }
            None => {
                return failed(Outcome::ConfigFault {
                    code: None,
                    reason: "the message's own credential cannot be sent in an HTTP header".into(),
                });
            }
        },
    };
    let answer = match post_json(target.client, endpoint, target.api, body).await {
        Ok(answered) => classify(answered),
        Err(outcome) => failed(outcome),
    };
    scrub(answer, secret)
}

/// One authenticated JSON POST, shared by the backends: the credential goes
/// in the endpoint's header (marked sensitive), `Accept` and `Content-Type`
/// are JSON. A failure before an answer is a transient [`Outcome`].
pub async fn post_json<B: JsonBody + ?Sized>(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    api: &str,
    body: &B,
) -> Result<Answered, Outcome> {
    let response = client
        .post(endpoint.url.clone())
        .header(endpoint.header, endpoint.credential.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_json())
        .send()
        .await
        .map_err(|err| transient_from_error(api, &err))?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|err| transient_from_error(api, &err))?
        .to_vec();
    tracing::debug!(status, body_len = body.len(), "{api} answered");
    Ok(Answered {
        status,
        retry_after,
        body,
    })
}
