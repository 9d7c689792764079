//! The Postal backend: one `POST {api_url}/api/v1/send/raw` per message, and
//! [`classify`], the only place that knows what Postal's answers mean.
//!
//! Postal answers HTTP 200 for every outcome and puts the result in a JSON
//! envelope: `{"status": "success" | "error" | "parameter-error", "data":
//! {...}}`. Anything else (another status, a body that is not the envelope)
//! came from a proxy or a crashed Postal and is retried. Operator texts keep
//! Postal's own code and message; none carries the API key, and the `token`
//! field Postal sends back with `InvalidServerAPIKey` is never read.
//!
//! Decisions where the rules leave room:
//! * An error code postrelay does not know is `Transient`: Postal's
//!   documented codes are all handled, so an unknown one is more likely a
//!   new or instance-specific condition than a verdict on the message.
//!   Retrying keeps the mail; a fault that really is permanent still reaches
//!   the dead-letter area once `delivery.max_age` has passed.
//! * HTTP 404 and 3xx are `ConfigFault` (wrong `postal.api_url`), not
//!   `Transient`: Postal itself never sends them for this endpoint, and
//!   redirects are not followed (see `http::build_client_with`). Every other
//!   non-2xx is `Transient`; 429 from a proxy in front of Postal is
//!   `throttled`, and its `Retry-After` is kept.

use std::fmt;

use secrecy::SecretString;
use serde_json::Value;

use super::http;
use crate::backends::Outcome;

#[cfg(test)]
mod tests;

/// The header that carries the server's API key.
pub const KEY_HEADER: &str = "X-Server-API-Key";

const API: &str = "Postal";

/// Sends raw messages to a Postal server's legacy send API.
pub struct PostalClient {
    client: reqwest::Client,
    endpoint: http::Endpoint,
    api_key: SecretString,
}

impl PostalClient {
    /// `client` is the shared client from `http::build_client`; `api_url`
    /// is the Postal host (`https://postal.example.com`, a trailing slash is
    /// fine, a path prefix for a proxied install is kept).
    pub fn new(
        client: reqwest::Client,
        api_url: &str,
        api_key: SecretString,
    ) -> Result<Self, super::BackendError> {
        let endpoint = http::Endpoint::new(
            api_url,
            "/api/v1/send/raw",
            "postal.api_url",
            KEY_HEADER,
            &api_key,
            "postal.api_key",
        )
        .map_err(super::BackendError::Config)?;
        Ok(PostalClient {
            client,
            endpoint,
            api_key,
        })
    }

    /// POST {api_url}/api/v1/send/raw with X-Server-API-Key, JSON body.
    /// [`send`](Self::send) with `credential` in place of the configured
    /// one when given (see [`http::call`]).
    pub async fn send_with<B: http::JsonBody + ?Sized>(
        &self,
        body: &B,
        credential: Option<&SecretString>,
    ) -> Outcome {
        let judge = |a: http::Answered| match classify(a.status, &a.body) {
            // Postal never sends Retry-After; a proxy in front of it may.
            Outcome::Transient {
                reason, throttled, ..
            } => Outcome::Transient {
                reason,
                retry_after: a.retry_after,
                throttled,
            },
            other => other,
        };
        http::call(
            &self.client,
            &self.endpoint,
            &self.api_key,
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

impl fmt::Debug for PostalClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostalClient")
            .field("endpoint", &self.endpoint.display())
            .field("api_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Pure: HTTP status + response body -> Outcome. The ONE place Postal answers are classified.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let envelope = serde_json::from_slice::<Value>(body).ok();
    let result = envelope.as_ref().and_then(|e| e.get("status")?.as_str());
    let data = envelope.as_ref().and_then(|e| e.get("data"));
    let text = |key: &str| {
        data.and_then(|d| d.get(key)?.as_str())
            .map(http::clean_api_text)
            .unwrap_or_default()
    };
    let code = text("code");
    let message = text("message");
    let said = format!("{code}: \"{message}\"");
    let transient = |reason: String| Outcome::Transient {
        reason,
        retry_after: None,
        throttled: status == 429,
    };
    let permanent = |what: &str| Outcome::Permanent {
        code: Some(code.clone()),
        reason: format!("Postal refused the message, {what} ({said})"),
    };
    let operator = |what: &str, fix: &str| Outcome::ConfigFault {
        code: Some(code.clone()),
        reason: format!("{what} ({said}): {fix}"),
    };

    match (status, result) {
        (300..=399 | 404, _) => Outcome::ConfigFault {
            code: None,
            reason: format!(
                "Postal's send API is not at the configured address (HTTP {status}, {}): \
                 check postal.api_url (the Postal web host, without /api/v1)",
                http::body_snippet(body)
            ),
        },
        (200..=299, Some("success")) => delivered(data),
        (200..=299, Some("parameter-error")) => Outcome::ConfigFault {
            code: None,
            reason: format!(
                "Postal refused the parameters of postrelay's request (\"{message}\"): this is \
                 a postrelay bug, please report it with this text"
            ),
        },
        (200..=299, Some("error")) => match code.as_str() {
            "NoRecipients" => permanent("it has no recipients"),
            "NoContent" => permanent("it has no content"),
            "UnauthenticatedFromAddress" => {
                permanent("the From address is not on a domain this Postal server may send for")
            }
            "FromAddressMissing" => permanent("it has no From address"),
            "AttachmentMissingName" | "AttachmentMissingData" => {
                permanent("an attachment is incomplete")
            }
            "TooManyToAddresses" | "TooManyCCAddresses" | "TooManyBCCAddresses" => {
                permanent("it has too many recipients")
            }
            "AccessDenied" => operator(
                "Postal refused access without a valid API key",
                "check postal.api_key",
            ),
            "InvalidServerAPIKey" => operator(
                "Postal rejected the API key",
                "check postal.api_key (an API credential of the mail server)",
            ),
            "ServerSuspended" => operator(
                "The Postal mail server that owns postal.api_key is suspended",
                "lift the suspension in Postal",
            ),
            _ => transient(format!(
                "Postal answered with an error code postrelay does not know, retrying ({said})"
            )),
        },
        (200..=299, _) => transient(format!(
            "Postal answered HTTP {status} without its JSON envelope ({})",
            http::body_snippet(body)
        )),
        _ => transient(format!(
            "Postal is unavailable (HTTP {status}, {})",
            http::body_snippet(body)
        )),
    }
}

/// A `success` envelope: Postal's message id and one queued message per
/// recipient, listed in the note as `rcpt=id` in address order.
fn delivered(data: Option<&Value>) -> Outcome {
    let api_id = data
        .and_then(|d| d.get("message_id")?.as_str())
        .map(str::to_owned);
    let mut recipients: Vec<String> = data
        .and_then(|d| d.get("messages")?.as_object())
        .map(|messages| {
            messages
                .iter()
                .map(|(rcpt, msg)| {
                    let id = match msg.get("id") {
                        Some(Value::Number(n)) => n.to_string(),
                        Some(Value::String(s)) => s.clone(),
                        _ => "?".to_owned(),
                    };
                    format!("{rcpt}={id}")
                })
                .collect()
        })
        .unwrap_or_default();
    recipients.sort();
    let note = (!recipients.is_empty()).then(|| recipients.join(", "));
    Outcome::Delivered { api_id, note }
}
