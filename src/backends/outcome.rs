//! The result of one API call, as classified by the backend that made it.
use std::time::Duration;
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The API accepted the message. `api_id` is the API's own message id; `note` carries a partial-success text (Postmark "inactive addresses").
    Delivered {
        api_id: Option<String>,
        note: Option<String>,
    },
    /// Try again later: network error, timeout, 429, 5xx, maintenance. `retry_after` from the API when it said so; `throttled` is true for rate-limit answers (429) so the whole queue slows down.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
        throttled: bool,
    },
    /// The API will never accept this message: dead-letter it. `code` is the API's own error code as text ("300", "NoRecipients").
    Permanent {
        code: Option<String>,
        reason: String,
    },
    /// The operator must fix something (rejected credential, suspended/unfunded account, a request shape the API refuses): keep the message, retry slowly, report it in /readyz.
    ConfigFault {
        code: Option<String>,
        reason: String,
    },
}
