//! Postmark's `POST /email/batch`: several mapped messages in one call, and
//! the classification of its answer into one [`Outcome`] per message.
//!
//! Postmark answers a batch with HTTP 200 even when messages in it fail: the
//! body is an array in request order, each element shaped like a lone
//! `/email` answer. Invariant: each element is classified exactly as a lone
//! `/email` answer with that body would be (the same `judge`, with the HTTP
//! status Postmark gives that `ErrorCode` on `/email`); anything else (a
//! non-2xx status, a body that is not an array of the right length, a
//! transport failure) is one outcome for every message of the call, so no
//! message is ever taken as delivered without its own `ErrorCode` 0.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;

use super::{API, Answer, PostmarkClient, classify, judge};
use crate::backends::Outcome;
use crate::backends::http;
use crate::mapping::ApiCall;

impl PostmarkClient {
    /// Elements per batch call (`postmark.batch_size`).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// POST {api_url}/email/batch with `calls` as its array; one outcome
    /// per call, in order. `credential` as in [`send_with`](Self::send_with).
    pub async fn send_batch_with(
        &self,
        calls: &[&ApiCall],
        credential: Option<&SecretString>,
    ) -> Vec<Outcome> {
        let count = calls.len();
        let target = http::Target {
            client: &self.client,
            endpoint: &self.batch_endpoint,
            configured: &self.token,
            credential,
            api: API,
        };
        let judge = |a: http::Answered| classify_batch(a.status, &a.body, a.retry_after, count);
        http::call_each(target, count, calls, judge).await
    }
}

/// Pure: the answer to a batch of `count` messages -> one outcome each.
pub fn classify_batch(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    count: usize,
) -> Vec<Outcome> {
    if !(200..=299).contains(&status) {
        // 401, 422 (ErrorCode 410: too many), 429, 5xx...: about the call.
        return vec![classify(status, body, retry_after); count];
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(elements)) if elements.len() == count => elements
            .iter()
            .enumerate()
            .map(|(i, e)| classify_element(i, e, retry_after))
            .collect(),
        parsed => {
            let what = match parsed {
                Ok(Value::Array(elements)) => {
                    format!("{} answers for {count} messages", elements.len())
                }
                _ => format!("not a JSON array ({})", http::body_snippet(body)),
            };
            let reason = format!(
                "Postmark's answer to a batch of {count} is {what}; retrying each message, which \
                 duplicates those Postmark did accept. Check postmark.api_url if this persists"
            );
            let outcome = Outcome::Transient {
                reason,
                retry_after,
                throttled: false,
            };
            vec![outcome; count]
        }
    }
}

/// One element of a batch answer, classified as the lone `/email` answer
/// with this body: Postmark answers `ErrorCode` 0 with 200, 10 (bad token)
/// with 401, 429 with 429 and every other code with 422.
fn classify_element(index: usize, element: &Value, retry_after: Option<Duration>) -> Outcome {
    let answer = Answer::from_value(element);
    let status = match answer.as_ref().and_then(|a| a.error_code) {
        None | Some(0) => 200,
        Some(10) => 401,
        Some(429) => 429,
        Some(_) => 422,
    };
    let heading = format!("batch answer {} of HTTP 200", index + 1);
    // Its text is quoted only when it is not an answer object.
    let body = if answer.is_none() {
        element.to_string()
    } else {
        String::new()
    };
    judge(status, &heading, answer, body.as_bytes(), retry_after)
}

#[cfg(test)]
mod tests;
