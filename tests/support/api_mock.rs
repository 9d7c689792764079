//! A stand-in for the Postmark and Postal HTTP APIs: a real HTTP/1.1 server
//! on a loopback port that records every request (with the instant it
//! arrived) and answers each one through a responder, with the status codes
//! and JSON shapes the real API uses (see reference/postmark-postal-api.md).
//!
//! It runs on its own small tokio runtime, so the synchronous tests (and the
//! `Relay` harness) can use it from plain `#[test]` functions.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request as the API saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the complete request reached the handler.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics (with the body) when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What the mock answers to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// How long the API takes before it answers.
    pub delay: Duration,
}

impl Answer {
    pub fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// A non-JSON answer, e.g. a proxy's HTML error page.
    pub fn text(status: u16, content_type: &str, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Answers only after `delay` (a slow API).
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// Postmark's 200 for `/email`.
pub fn postmark_ok(message_id: &str) -> Answer {
    Answer::json(
        200,
        json!({
            "To": "recipient@example.org",
            "SubmittedAt": "2026-03-01T10:00:00.1234567-05:00",
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK"
        }),
    )
}

/// Postmark's error body `{"ErrorCode": n, "Message": "..."}` with an HTTP status.
pub fn postmark_error(status: u16, code: i64, message: &str) -> Answer {
    Answer::json(status, json!({"ErrorCode": code, "Message": message}))
}

/// Postal's `success` envelope for send/raw: one queued message per recipient.
pub fn postal_success(message_id: &str, rcpt_to: &[String]) -> Answer {
    let messages: serde_json::Map<String, Value> = rcpt_to
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                r.clone(),
                json!({"id": 1000 + i, "token": format!("tok{i}")}),
            )
        })
        .collect();
    Answer::json(
        200,
        json!({
            "status": "success",
            "time": 0.05,
            "flags": {},
            "data": {"message_id": message_id, "messages": messages}
        }),
    )
}

/// Postal's `error` envelope (always HTTP 200).
pub fn postal_error(code: &str, message: &str) -> Answer {
    Answer::json(
        200,
        json!({
            "status": "error",
            "time": 0.01,
            "flags": {},
            "data": {"code": code, "message": message}
        }),
    )
}

/// The messages of a Postmark request: the `/email` body, or each element
/// of a `/email/batch` array.
pub fn postmark_messages(request: &Received) -> Vec<Value> {
    match request.json() {
        Value::Array(messages) => messages,
        message => vec![message],
    }
}

/// A Postmark responder for `/email` and `/email/batch` alike: `code` gives
/// the `ErrorCode` for one message (0: accepted). `/email` answers as
/// Postmark does (200, 401 for 10, 422 otherwise); a batch answers 200 with
/// one element per message.
pub fn postmark_per_message(
    mut code: impl FnMut(&Value) -> i64 + Send + 'static,
) -> impl FnMut(&Received) -> Answer + Send {
    move |request| {
        let element = |c: i64, n: usize| {
            json!({
                "ErrorCode": c,
                "Message": if c == 0 { "OK".to_string() } else { format!("refused with {c}") },
                "MessageID": format!("id-{n}"),
                "To": "recipient@example.org",
                "SubmittedAt": "2026-03-01T10:00:00.1234567-05:00",
            })
        };
        if request.path == "/email/batch" {
            let answers: Vec<Value> = postmark_messages(request)
                .iter()
                .enumerate()
                .map(|(n, m)| element(code(m), n))
                .collect();
            return Answer::json(200, Value::Array(answers));
        }
        let c = code(&request.json());
        let status = match c {
            0 => 200,
            10 => 401,
            _ => 422,
        };
        Answer::json(status, element(c, 0))
    }
}

type Responder = Box<dyn FnMut(&Received) -> Answer + Send>;

struct Shared {
    received: Mutex<Vec<Received>>,
    responder: Mutex<Responder>,
    /// While true, answers wait (requests are still recorded on arrival).
    held: tokio::sync::watch::Sender<bool>,
}

/// A running mock API.
pub struct ApiMock {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ApiMock {
    /// Starts on an ephemeral loopback port; `respond` answers every request.
    pub fn start(respond: impl FnMut(&Received) -> Answer + Send + 'static) -> ApiMock {
        ApiMock::start_on("127.0.0.1:0".parse().unwrap(), respond)
    }

    /// Starts on `addr` (to bring up an API where nothing listened before).
    pub fn start_on(
        addr: SocketAddr,
        respond: impl FnMut(&Received) -> Answer + Send + 'static,
    ) -> ApiMock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("mock runtime");
        let std_listener = std::net::TcpListener::bind(addr).expect("bind mock API");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            responder: Mutex::new(Box::new(respond)),
            held: tokio::sync::watch::Sender::new(false),
        });
        // Batch bodies reach 50 MB: no body limit below what the API takes.
        let app = axum::Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(shared.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("mock listener");
            let _ = axum::serve(listener, app).await;
        });
        ApiMock {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Answers `script` in order, then `then` for every later request.
    pub fn scripted(script: Vec<Answer>, then: Answer) -> ApiMock {
        ApiMock::start(sequence(script, then))
    }

    /// `http://127.0.0.1:PORT`, for `api_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// From now on, answers wait until [`release`](Self::release): a slow
    /// API that keeps the relay's workers busy while mail queues up.
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Lets every waiting and later answer go.
    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// Waits until at least `n` requests arrived (panics after `secs`).
    pub fn wait_for_requests(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "mock API got {} requests, expected {n} within {secs}s",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ApiMock {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A responder that answers `script` in order, then `then`.
pub fn sequence(script: Vec<Answer>, then: Answer) -> impl FnMut(&Received) -> Answer + Send {
    let mut script = VecDeque::from(script);
    move |_| script.pop_front().unwrap_or_else(|| then.clone())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    // One critical section, so the recorded order is the order of answers.
    let answer = {
        let mut respond = shared.responder.lock().unwrap();
        let answer = respond(&received);
        shared.received.lock().unwrap().push(received);
        answer
    };
    let mut held = shared.held.subscribe();
    let _ = held.wait_for(|held| !*held).await;
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(answer.status).expect("status"),
        answer.body,
    )
        .into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(
            HeaderName::try_from(name).expect("header name"),
            HeaderValue::try_from(value).expect("header value"),
        );
    }
    response
}
