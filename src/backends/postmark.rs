//! The Postmark backend: one `POST {api_url}/email` per mapped message, and
//! [`classify`], the only place that knows what Postmark's answers mean.
//!
//! Postmark says what happened twice: with the HTTP status and with the
//! `ErrorCode` in its JSON body (`{"ErrorCode": 300, "Message": "..."}`).
//! The HTTP status decides where it is unambiguous (429, 5xx, 401, 404,
//! 413, 415); otherwise the `ErrorCode` decides. Every operator text keeps
//! Postmark's own code and message and says what to fix; none carries the
//! server token.
//!
//! Decisions where Postmark's documentation leaves room:
//! * A 2xx whose body is not Postmark's JSON is `Transient`, not
//!   `Delivered`. Postmark itself always answers 200 with JSON, so such a
//!   body most likely comes from something else at `api_url` (a web server,
//!   a captive proxy) that did not take the message. Calling that delivered
//!   would drop every message silently; retrying risks only a duplicate in
//!   the rare case that Postmark took the message and the body was mangled.
//! * An `ErrorCode` postrelay does not know (on a 422 or anywhere else) is
//!   `Transient`. It may be about the message or about the account, and
//!   dead-lettering on a guess could throw away every message during an
//!   account-level problem. Retrying costs API calls under backoff; a fault
//!   that really is permanent still ends in the dead-letter area once
//!   `delivery.max_age` has passed, with this code and text as the reason.
//! * A 3xx is a `ConfigFault` (wrong `postmark.api_url`): redirects are not
//!   followed (see `http::build_client_with`).

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;

use super::http;
use crate::backends::Outcome;

mod batch;
#[cfg(test)]
mod tests;

pub use batch::classify_batch;

/// The header that carries the server token.
pub const TOKEN_HEADER: &str = "X-Postmark-Server-Token";

const API: &str = "Postmark";

/// Sends mapped messages to Postmark's `/email` endpoint, and several at
/// once to `/email/batch` (see `batch.rs`).
pub struct PostmarkClient {
    client: reqwest::Client,
    endpoint: http::Endpoint,
    batch_endpoint: http::Endpoint,
    token: SecretString,
    /// Elements per batch call; 1: no batches.
    batch_size: usize,
}

impl PostmarkClient {
    /// `client` is the shared client from `http::build_client`; `api_url`
    /// is the base address (`https://api.postmarkapp.com`, a trailing slash
    /// is fine).
    pub fn new(
        client: reqwest::Client,
        api_url: &str,
        token: SecretString,
    ) -> Result<Self, super::BackendError> {
        let endpoint_for = |path| {
            http::Endpoint::new(
                api_url,
                path,
                "postmark.api_url",
                TOKEN_HEADER,
                &token,
                "postmark.server_token",
            )
            .map_err(super::BackendError::Config)
        };
        Ok(PostmarkClient {
            client,
            endpoint: endpoint_for("/email")?,
            batch_endpoint: endpoint_for("/email/batch")?,
            token,
            batch_size: 1,
        })
    }

    /// The same client sending up to `batch_size` messages per
    /// `/email/batch` call (`postmark.batch_size`, 1..=500); 1 never batches.
    pub fn with_batch_size(self, batch_size: usize) -> Self {
        PostmarkClient {
            batch_size: batch_size.clamp(1, crate::config::postmark::MAX_BATCH_SIZE),
            ..self
        }
    }

    /// POST {api_url}/email with X-Postmark-Server-Token, Accept and Content-Type application/json.
    /// [`send`](Self::send) with `credential` in place of the configured
    /// one when given (see [`http::call`]).
    pub async fn send_with<B: http::JsonBody + ?Sized>(
        &self,
        body: &B,
        credential: Option<&SecretString>,
    ) -> Outcome {
        let judge = |a: http::Answered| classify(a.status, &a.body, a.retry_after);
        http::call(
            &self.client,
            &self.endpoint,
            &self.token,
            credential,
            API,
            body,
            judge,
        )
        .await
    }

    pub async fn send<B: http::JsonBody + ?Sized>(&self, body: &B) -> Outcome {
        self.send_with(body, None).await
    }
}

impl fmt::Debug for PostmarkClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostmarkClient")
            .field("endpoint", &self.endpoint.display())
            .field("batch_size", &self.batch_size)
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The parts of a Postmark JSON answer that classification reads.
#[derive(Debug, Default)]
struct Answer {
    error_code: Option<i64>,
    message: Option<String>,
    message_id: Option<String>,
}

impl Answer {
    /// `None` when the body is not a JSON object with at least one of
    /// Postmark's fields: then it is not Postmark talking.
    fn parse(body: &[u8]) -> Option<Answer> {
        Answer::from_value(&serde_json::from_slice::<Value>(body).ok()?)
    }

    /// [`parse`](Self::parse) for an already parsed value (an element of a
    /// batch answer).
    fn from_value(value: &Value) -> Option<Answer> {
        let Value::Object(map) = value else {
            return None;
        };
        let error_code = map.get("ErrorCode").and_then(|code| match code {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
        let answer = Answer {
            error_code,
            message: text("Message"),
            message_id: text("MessageID"),
        };
        let is_postmark = map.contains_key("ErrorCode")
            || answer.message.is_some()
            || answer.message_id.is_some();
        is_postmark.then_some(answer)
    }
}

/// Pure: HTTP status + response body (+ Retry-After) -> Outcome. The ONE
/// place Postmark answers are classified: a batch element goes through
/// [`judge`] too (see `batch::classify_element`).
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Outcome {
    let heading = format!("HTTP {status}");
    judge(status, &heading, Answer::parse(body), body, retry_after)
}

/// Classifies what Postmark said with `status`: `answer` parsed from
/// `body` (`None`: not Postmark's JSON, described by a snippet of `body`).
/// `heading` starts every text ("HTTP 422"; for a batch element, where it
/// was in the answer).
fn judge(
    status: u16,
    heading: &str,
    answer: Option<Answer>,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Outcome {
    let code = answer.as_ref().and_then(|a| a.error_code);
    let code_text = code.map(|c| c.to_string());
    // What Postmark said, for every operator text: "HTTP 422, ErrorCode 300:
    // "Invalid 'To' address."" or, for a foreign body, a snippet of it.
    // Built only for an answer that is not a plain success.
    let said = || match &answer {
        Some(a) => {
            let mut said = heading.to_string();
            if let Some(c) = a.error_code {
                said.push_str(&format!(", ErrorCode {c}"));
            }
            if let Some(m) = &a.message {
                said.push_str(&format!(": \"{}\"", http::clean_api_text(m)));
            }
            said
        }
        None => format!("{heading}, {}", http::body_snippet(body)),
    };
    let transient = |reason: String, throttled: bool| Outcome::Transient {
        reason,
        retry_after,
        throttled,
    };
    let permanent = |what: &str| Outcome::Permanent {
        code: code_text.clone(),
        reason: format!("Postmark refused the message, {what} ({})", said()),
    };
    let operator = |what: &str, fix: &str| {
        config_fault(code_text.clone(), format!("{what} ({}): {fix}", said()))
    };
    let relay_bug = || {
        operator(
            "Postmark refused the shape of postrelay's request",
            "this is a postrelay bug, please report it with this text",
        )
    };

    match (status, code) {
        (429, _) => transient(format!("Postmark is rate-limiting ({})", said()), true),
        (_, Some(100)) => transient(format!("Postmark is in maintenance ({})", said()), false),
        (500..=599, _) => transient(format!("Postmark server error ({})", said()), false),
        (401, _) | (_, Some(10)) => operator(
            "Postmark rejected the server token",
            "check postmark.server_token",
        ),
        (404, _) => operator(
            "Postmark does not know the send endpoint",
            "check postmark.api_url (normally https://api.postmarkapp.com)",
        ),
        (300..=399, _) => operator(
            "Postmark answered with a redirect, which postrelay does not follow",
            "set postmark.api_url to the API's final https:// address",
        ),
        (413, _) => permanent("it is too large (10 MB at most, attachments counted after base64)"),
        (415, _) => relay_bug(),
        (200..=299, _) if answer.is_none() => transient(
            format!(
                "The answer is not Postmark's JSON ({}); retrying, which duplicates the \
                 message if Postmark did accept it. Check postmark.api_url if this persists",
                said()
            ),
            false,
        ),
        (200..=299, None | Some(0)) => {
            let answer = answer.unwrap_or_default();
            Outcome::Delivered {
                api_id: answer.message_id,
                note: answer
                    .message
                    .filter(|m| is_partial_success(m))
                    .map(|m| http::clean_api_text(&m)),
            }
        }
        (_, Some(300)) => permanent("the request is invalid"),
        (_, Some(406)) => {
            permanent("every recipient is inactive (bounced, complained or suppressed)")
        }
        (_, Some(411)) => permanent("an attachment has a forbidden file type"),
        (_, Some(1100..=1123)) => permanent("its template is missing or invalid"),
        (_, Some(400)) => operator(
            "Postmark has no sender signature for the From address",
            "add a sender signature or verify the From domain in Postmark",
        ),
        (_, Some(401)) => operator(
            "The From address's sender signature is not confirmed in Postmark",
            "confirm the sender signature in Postmark",
        ),
        (_, Some(405)) => operator(
            "The Postmark account may not send, it is out of credits",
            "add credits or fix billing in Postmark",
        ),
        (_, Some(412)) => operator(
            "The Postmark account is pending approval and may only send to its own domain",
            "finish the account approval with Postmark",
        ),
        (_, Some(413)) => operator(
            "The Postmark account is not allowed to send",
            "contact Postmark support",
        ),
        (_, Some(1235)) => operator(
            "The message stream does not exist on this Postmark server",
            "check postmark.message_stream and X-PM-Message-Stream headers",
        ),
        (_, Some(1236)) => operator(
            "The message stream does not allow sending",
            "check postmark.message_stream and X-PM-Message-Stream headers",
        ),
        (_, Some(402 | 403 | 409 | 410)) => relay_bug(),
        (_, Some(_)) => transient(
            format!(
                "Postmark answered with an ErrorCode postrelay does not know, retrying ({})",
                said()
            ),
            false,
        ),
        (_, None) => transient(
            format!("Postmark answered unexpectedly ({})", said()),
            false,
        ),
    }
}

/// A 200 whose `Message` tells of something short of full delivery:
/// recipients dropped as inactive, or delivery delayed.
fn is_partial_success(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("inactive") || message.contains("delay")
}

fn config_fault(code: Option<String>, reason: String) -> Outcome {
    Outcome::ConfigFault { code, reason }
}
