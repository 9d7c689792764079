//! `classify_batch` against Postmark's batch answer shapes, each element
//! checked against the lone `/email` classification of the same body; then
//! `send_batch_with` against the scripted server.

use secrecy::SecretString;
use serde_json::{Value, json};

use super::*;
use crate::backends::api_mock::{Answer, ApiMock};
use crate::backends::http::build_client;
use crate::mapping::SharedBody;

const TOKEN: &str = "pm-token-0b5e7c1d";

fn element(code: i64, message: &str) -> Value {
    json!({"ErrorCode": code, "Message": message, "MessageID": format!("id-{code}"), "To": "a@b"})
}

/// How `/email` answers a lone message that got `code`.
fn lone_status(code: i64) -> u16 {
    match code {
        0 => 200,
        10 => 401,
        429 => 429,
        _ => 422,
    }
}

/// The outcome's kind and code, without the texts (which say where the
/// answer came from).
fn kind(o: &Outcome) -> (String, Option<String>, bool) {
    match o {
        Outcome::Delivered { api_id, .. } => ("delivered".into(), api_id.clone(), false),
        Outcome::Transient {
            throttled,
            retry_after,
            ..
        } => (
            "transient".into(),
            retry_after.map(|d| d.as_secs().to_string()),
            *throttled,
        ),
        Outcome::Permanent { code, .. } => ("permanent".into(), code.clone(), false),
        Outcome::ConfigFault { code, .. } => ("config".into(), code.clone(), false),
    }
}

#[test]
fn each_element_is_classified_as_a_lone_email_answer_with_that_body() {
    let codes = [0, 300, 406, 10, 429, 100, 411, 400, 405, 1235, 402, 9999];
    let elements: Vec<Value> = codes
        .iter()
        .map(|&c| element(c, "Found inactive addresses: x@y"))
        .collect();
    let body = Value::Array(elements.clone()).to_string();
    let got = classify_batch(200, body.as_bytes(), None, codes.len());
    assert_eq!(got.len(), codes.len());
    for ((code, element), outcome) in codes.iter().zip(&elements).zip(&got) {
        let lone = classify(lone_status(*code), element.to_string().as_bytes(), None);
        assert_eq!(
            kind(outcome),
            kind(&lone),
            "ErrorCode {code}: {outcome:?} vs {lone:?}"
        );
    }
    let table = [
        (0, "delivered"),
        (300, "permanent"),
        (406, "permanent"),
        (10, "config"),
        (429, "transient"),
        (100, "transient"),
        (9999, "transient"),
    ];
    for (code, want) in table {
        let i = codes.iter().position(|c| *c == code).unwrap();
        assert_eq!(kind(&got[i]).0, want, "ErrorCode {code}");
    }
    assert!(
        kind(&got[codes.iter().position(|c| *c == 429).unwrap()]).2,
        "429 throttles"
    );
    let Outcome::Permanent { reason, .. } = &got[1] else {
        unreachable!()
    };
    assert!(reason.contains("batch answer 2"), "{reason}");
}

#[test]
fn an_answer_about_the_whole_call_is_every_elements_outcome() {
    let err = |code: i64| json!({"ErrorCode": code, "Message": "m"}).to_string();
    let two = Value::Array(vec![element(0, "OK"), element(0, "OK")]).to_string();
    let cases: [(&str, u16, String, &str); 7] = [
        ("5xx", 503, "Service Unavailable".into(), "transient"),
        ("bad token", 401, err(10), "config"),
        ("too many", 422, err(410), "config"),
        ("throttled", 429, String::new(), "transient"),
        ("not JSON", 200, "<html>proxy</html>".into(), "transient"),
        (
            "not an array",
            200,
            element(0, "OK").to_string(),
            "transient",
        ),
        ("wrong length", 200, two, "transient"),
    ];
    for (name, status, body, want) in cases {
        let got = classify_batch(status, body.as_bytes(), None, 3);
        assert_eq!(got.len(), 3, "{name}");
        for o in &got {
            assert_eq!(kind(o).0, want, "{name}: {o:?}");
        }
        assert!(got.iter().all(|o| o == &got[0]), "{name}: the same for all");
    }
}

fn call(to: &str) -> ApiCall {
    let shared = match json!({"From": "app@example.com", "TextBody": "Hi", "MessageStream": "outbound"})
    {
        Value::Object(m) => SharedBody::new(m),
        _ => unreachable!(),
    };
    let own = match json!({ "To": to }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    ApiCall::new(vec![to.to_string()], shared, own)
}

fn client(api: &ApiMock) -> PostmarkClient {
    PostmarkClient::new(
        build_client().unwrap(),
        &api.url(),
        SecretString::from(TOKEN),
    )
    .unwrap()
    .with_batch_size(500)
}

#[tokio::test]
async fn a_batch_posts_one_array_to_email_batch_and_reads_each_answer() {
    let answer = json!([element(0, "OK"), element(406, "inactive")]);
    let api = ApiMock::scripted(vec![], Answer::json(200, answer));
    let (a, b) = (call("a@example.org"), call("b@example.org"));
    let own = SecretString::from("user-token");

    let got = client(&api).send_batch_with(&[&a, &b], Some(&own)).await;

    let sent = api.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/email/batch");
    assert_eq!(
        sent[0].header("x-postmark-server-token"),
        Some("user-token")
    );
    assert_eq!(sent[0].json(), json!([a.body(), b.body()]));
    assert_eq!(
        kind(&got[0]),
        ("delivered".into(), Some("id-0".into()), false)
    );
    assert_eq!(kind(&got[1]).0, "permanent");
}

#[tokio::test]
async fn a_failed_batch_call_is_every_elements_outcome_and_the_token_is_redacted() {
    let api = ApiMock::scripted(
        vec![],
        Answer::json(
            401,
            json!({"ErrorCode": 10, "Message": format!("Token {TOKEN} bad")}),
        ),
    );
    let (a, b) = (call("a@example.org"), call("b@example.org"));

    let got = client(&api).send_batch_with(&[&a, &b], None).await;

    assert_eq!(got.len(), 2);
    for o in got {
        let Outcome::ConfigFault { reason, .. } = o else {
            panic!("{o:?}")
        };
        assert!(
            !reason.contains(TOKEN) && reason.contains("[redacted]"),
            "{reason}"
        );
    }
}

#[test]
fn batch_size_is_held_to_postmarks_500() {
    let api = ApiMock::scripted(vec![], Answer::json(200, json!([])));
    let make = |n| {
        PostmarkClient::new(
            build_client().unwrap(),
            &api.url(),
            SecretString::from(TOKEN),
        )
        .unwrap()
        .with_batch_size(n)
        .batch_size()
    };
    assert_eq!([make(0), make(1), make(500), make(900)], [1, 1, 500, 500]);
}
