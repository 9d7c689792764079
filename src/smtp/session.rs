//! The SMTP state machine: HELO → MAIL → RCPT → DATA, one verb at a time.
//! Pure: it sees parsed commands (from smtp-proto) and returns what the
//! connection should do. Sockets, timeouts and the spool are the
//! connection's business.

use std::borrow::Cow;

use smtp_proto::{Error as ProtoError, Request};

use super::auth::{Mechanism, User, sender_allowed};
use super::capabilities::Capabilities;
use super::reply::{self, Reply};
use crate::message::Envelope;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_errors: u32,
    /// Bytes of header block (before the first empty line) a message may carry.
    pub max_header_size: usize,
    /// `MAIL` commands accepted in one session; the next gets `421 4.7.0`.
    pub max_transactions: u32,
    /// Where `RCPT TO:<postmaster>` goes (RFC 5321 §4.5.1: always accepted).
    pub postmaster: String,
}

/// What the connection knows about the client before its first command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Client {
    /// May send without AUTH (inside `smtp.allowed_networks`, no `require_auth`).
    pub trusted: bool,
    /// `MAIL` needs TLS first (`[smtp.tls] required`, client not on loopback).
    pub tls_required: bool,
    /// The stream is TLS already (implicit TLS, or after STARTTLS).
    pub tls: bool,
    /// Some account exists, so AUTH may be offered.
    pub auth_available: bool,
    /// AUTH may be offered before TLS (loopback, or `allow_plaintext_auth`).
    pub plaintext_auth: bool,
}

impl Client {
    /// A client that may send as is (loopback, no TLS or AUTH asked).
    pub fn trusted() -> Client {
        Client {
            trusted: true,
            ..Client::default()
        }
    }

    /// True when EHLO should offer AUTH now.
    pub fn offers_auth(&self) -> bool {
        self.auth_available && (self.tls || self.plaintext_auth)
    }
}

/// What the connection does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Reply(Reply),
    /// Send `354` and read the message.
    StartData,
    /// Send `220`, discard whatever was pipelined, and start the TLS handshake.
    StartTls,
    /// Run a SASL exchange; `initial` is the initial response, if sent.
    Auth {
        mechanism: Mechanism,
        initial: Option<String>,
    },
    /// Send the reply and close the connection.
    Close(Reply),
    /// Send the reply, then drop the next `bytes` bytes unread (a `BDAT` chunk).
    Discard {
        reply: Reply,
        bytes: usize,
    },
}

#[derive(Debug)]
pub struct Session {
    hostname: String,
    limits: Limits,
    capabilities: Capabilities,
    client: Client,
    /// The account the client authenticated as.
    user: Option<User>,
    helo: Option<String>,
    mail_from: Option<String>,
    /// The transaction's `MAIL` carried `SMTPUTF8`.
    smtputf8: bool,
    rcpts: Vec<String>,
    errors: u32,
    /// NOOP/RSET/VRFY/HELP, repeated HELO/EHLO and recipients over the cap
    /// since the last MAIL: past [`JUNK_LIMIT`] each counts as an error, so
    /// a client cannot hold a slot with them forever.
    junk: u32,
    /// `MAIL` commands accepted so far.
    transactions: u32,
}

/// Junk commands allowed between two transactions (Postfix uses 100 too).
pub const JUNK_LIMIT: u32 = 100;

impl Session {
    pub fn new(
        hostname: String,
        limits: Limits,
        capabilities: Capabilities,
        client: Client,
    ) -> Session {
        Session {
            hostname,
            limits,
            capabilities,
            client,
            user: None,
            helo: None,
            mail_from: None,
            smtputf8: false,
            rcpts: Vec::new(),
            errors: 0,
            junk: 0,
            transactions: 0,
        }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// True between `MAIL FROM` and the end of the transaction.
    pub fn in_transaction(&self) -> bool {
        self.mail_from.is_some()
    }

    pub fn envelope(&self) -> Envelope {
        Envelope {
            mail_from: self.mail_from.clone().unwrap_or_default(),
            rcpt_to: self.rcpts.clone(),
        }
    }

    /// What EHLO will advertise from now on (STARTTLS and AUTH change it).
    pub fn set_capabilities(&mut self, capabilities: Capabilities) {
        self.capabilities = capabilities;
    }

    /// The state after a TLS handshake (RFC 3207): everything learnt from
    /// the client before it is forgotten, EHLO must come again, and EHLO
    /// now advertises `capabilities`.
    pub fn restart_with_tls(&mut self, capabilities: Capabilities) {
        self.reset();
        self.helo = None;
        self.client.tls = true;
        self.capabilities = capabilities;
    }

    pub fn client(&self) -> Client {
        self.client
    }

    /// The name the client gave in HELO/EHLO, as sent.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The account the client authenticated as, if any.
    pub fn user(&self) -> Option<&User> {
        self.user.as_ref()
    }

    /// Records a successful AUTH.
    pub fn authenticated(&mut self, user: User) {
        self.user = Some(user);
    }

    /// Ends the transaction (after DATA, RSET, or a new HELO/EHLO); the
    /// authenticated user stays.
    pub fn reset(&mut self) {
        self.mail_from = None;
        self.smtputf8 = false;
        self.rcpts.clear();
    }

    /// Handles one parsed (or unparseable) command line.
    pub fn command(&mut self, parsed: Result<Request<Cow<'_, str>>, ProtoError>) -> Action {
        let request = match parsed {
            Ok(r) => r,
            Err(e) => return self.protocol_error(e),
        };
        match request {
            Request::Ehlo { host } => {
                self.reset();
                let again = self.helo.replace(host.to_string()).is_some();
                let r = reply::ehlo(&self.hostname, &host, &self.capabilities);
                if again {
                    self.junk(r)
                } else {
                    Action::Reply(r)
                }
            }
            Request::Helo { host } => {
                self.reset();
                let again = self.helo.replace(host.to_string()).is_some();
                let r = reply::helo(&self.hostname);
                if again {
                    self.junk(r)
                } else {
                    Action::Reply(r)
                }
            }
            Request::Mail { from } => {
                if self.helo.is_none() {
                    return self.error(reply::bad_sequence("send EHLO or HELO first"));
                }
                if self.mail_from.is_some() {
                    return self.error(reply::nested_mail());
                }
                if self.client.tls_required && !self.client.tls {
                    return self.error(reply::tls_required());
                }
                if !self.client.trusted && self.user.is_none() {
                    return self.error(reply::auth_required());
                }
                if from.size > self.limits.max_message_size {
                    return self.error(reply::too_large(self.limits.max_message_size));
                }
                let addr = from.address.trim();
                if !addr.is_empty() && !valid_mailbox(addr) {
                    return self.error(reply::bad_sender());
                }
                let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
                if !smtputf8 && !addr.is_ascii() {
                    return self.error(reply::needs_smtputf8());
                }
                if let Some(user) = &self.user
                    && !sender_allowed(&user.allowed_from, addr)
                {
                    return self.error(reply::sender_not_allowed(&user.name));
                }
                if self.transactions >= self.limits.max_transactions {
                    metrics::counter!("postrelay_smtp_limits_total", "limit" => "transactions")
                        .increment(1);
                    return Action::Close(reply::too_many_transactions());
                }
                self.transactions += 1;
                self.smtputf8 = smtputf8;
                self.mail_from = Some(addr.to_string());
                self.junk = 0;
                Action::Reply(reply::sender_ok())
            }
            Request::Rcpt { to } => {
                if self.mail_from.is_none() {
                    return self.error(reply::bad_sequence("need MAIL before RCPT"));
                }
                let addr = to.address.trim();
                let addr = if addr.eq_ignore_ascii_case("postmaster") {
                    self.limits.postmaster.as_str()
                } else {
                    addr
                };
                if !valid_mailbox(addr) {
                    return self.error(reply::bad_recipient());
                }
                if !self.smtputf8 && !addr.is_ascii() {
                    return self.error(reply::needs_smtputf8());
                }
                if self.rcpts.len() >= self.limits.max_recipients {
                    // Not an error at first: the client sends the rest in the
                    // next transaction. Endless ones count as junk.
                    return self.junk(reply::too_many_recipients(self.limits.max_recipients));
                }
                if !self.rcpts.iter().any(|r| r.eq_ignore_ascii_case(addr)) {
                    self.rcpts.push(addr.to_string());
                }
                Action::Reply(reply::recipient_ok())
            }
            Request::Data => {
                if self.mail_from.is_none() {
                    return self.error(reply::bad_sequence("need MAIL before DATA"));
                }
                if self.rcpts.is_empty() {
                    return self.error(reply::bad_sequence("no valid recipients"));
                }
                Action::StartData
            }
            Request::Rset => {
                self.reset();
                self.junk(reply::ok())
            }
            Request::Noop { .. } => self.junk(reply::ok()),
            Request::Quit => Action::Close(reply::bye()),
            Request::Vrfy { .. } => self.junk(reply::vrfy()),
            // CHUNKING is not offered: the chunk that follows is dropped, never
            // read as commands; one too large to drop ends the session.
            Request::Bdat { chunk_size, .. } => match self.error(reply::not_implemented("BDAT")) {
                Action::Reply(_) if chunk_size > self.limits.max_message_size => {
                    Action::Close(reply::chunk_too_large(self.limits.max_message_size))
                }
                Action::Reply(reply) => Action::Discard {
                    reply,
                    bytes: chunk_size,
                },
                close => close,
            },
            Request::Help { .. } => self.junk(reply::help()),
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                if !self.client.offers_auth() {
                    return self.error(if self.client.auth_available {
                        reply::encryption_required()
                    } else {
                        reply::not_implemented("AUTH")
                    });
                }
                if self.user.is_some() {
                    return self.error(reply::bad_sequence("already authenticated"));
                }
                if self.mail_from.is_some() {
                    return self.error(reply::bad_sequence("AUTH inside a transaction"));
                }
                let mechanism = match mechanism {
                    smtp_proto::AUTH_PLAIN => Mechanism::Plain,
                    smtp_proto::AUTH_LOGIN => Mechanism::Login,
                    _ => return self.error(reply::unknown_mechanism()),
                };
                let initial = Some(initial_response.trim().to_string()).filter(|s| !s.is_empty());
                Action::Auth { mechanism, initial }
            }
            Request::StartTls => {
                if !self.capabilities.starttls || self.client.tls {
                    return self.error(reply::not_implemented("STARTTLS"));
                }
                if self.mail_from.is_some() {
                    return self.error(reply::bad_sequence("STARTTLS inside a transaction"));
                }
                Action::StartTls
            }
            other => {
                let name = other.name();
                self.error(reply::not_implemented(name))
            }
        }
    }

    /// A line that failed to parse.
    fn protocol_error(&mut self, e: ProtoError) -> Action {
        let r = match e {
            ProtoError::UnknownCommand => reply::unknown_command(),
            ProtoError::InvalidSenderAddress => reply::bad_sender(),
            ProtoError::InvalidRecipientAddress => reply::bad_recipient(),
            ProtoError::SyntaxError { syntax } => reply::syntax(syntax),
            ProtoError::InvalidParameter { param } => reply::bad_parameter(param),
            ProtoError::UnsupportedParameter { param } => reply::bad_parameter(&param),
            ProtoError::ResponseTooLong => reply::line_too_long(),
            ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
                reply::unknown_command()
            }
        };
        self.error(r)
    }

    /// Answers a junk command; past the limit it also counts as an error.
    fn junk(&mut self, r: Reply) -> Action {
        self.junk += 1;
        if self.junk > JUNK_LIMIT {
            self.error(r)
        } else {
            Action::Reply(r)
        }
    }

    /// Counts a client error; too many end the session.
    pub fn error(&mut self, r: Reply) -> Action {
        self.errors += 1;
        if self.errors > self.limits.max_errors {
            metrics::counter!("postrelay_smtp_limits_total", "limit" => "errors").increment(1);
            Action::Close(reply::too_many_errors())
        } else {
            Action::Reply(r)
        }
    }
}

/// `local@domain`, no spaces or control characters. SMTPUTF8 addresses are allowed.
fn valid_mailbox(addr: &str) -> bool {
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !addr
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(
            "relay.test".into(),
            Limits {
                max_message_size: 1000,
                max_recipients: 2,
                max_errors: 3,
                max_header_size: 1000,
                max_transactions: 3,
                postmaster: "postmaster@relay.test".into(),
            },
            Capabilities::standard(1000),
            Client::trusted(),
        )
    }

    fn run(s: &mut Session, line: &str) -> Action {
        let bytes = format!("{line}\r\n").into_bytes();
        let mut it = bytes.iter();
        s.command(Request::parse(&mut it))
    }

    fn code(a: &Action) -> u16 {
        match a {
            Action::Reply(r) | Action::Close(r) => r.code,
            Action::StartData => 354,
            Action::StartTls => 220,
            Action::Auth { .. } => 334,
            Action::Discard { reply, .. } => reply.code,
        }
    }

    #[test]
    fn full_transaction_reaches_data() {
        let mut s = session();
        assert_eq!(code(&run(&mut s, "EHLO client")), 250);
        assert_eq!(code(&run(&mut s, "MAIL FROM:<>")), 250);
        assert_eq!(code(&run(&mut s, "RCPT TO:<a@b.example>")), 250);
        assert_eq!(run(&mut s, "DATA"), Action::StartData);
        assert_eq!(
            s.envelope(),
            Envelope {
                mail_from: String::new(),
                rcpt_to: vec!["a@b.example".into()]
            }
        );
    }

    #[test]
    fn sequence_errors_answer_503() {
        let mut s = session();
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@b>")), 503);
        run(&mut s, "HELO c");
        assert_eq!(code(&run(&mut s, "RCPT TO:<a@b>")), 503);
        assert_eq!(code(&run(&mut s, "DATA")), 503);
    }

    #[test]
    fn recipient_cap_answers_452_without_counting_an_error() {
        let mut s = session();
        run(&mut s, "EHLO c");
        run(&mut s, "MAIL FROM:<a@b>");
        for _ in 0..5 {
            run(&mut s, "RCPT TO:<x@y>");
        }
        run(&mut s, "RCPT TO:<z@y>");
        assert_eq!(code(&run(&mut s, "RCPT TO:<w@y>")), 452);
        assert_eq!(s.envelope().rcpt_to.len(), 2);
    }

    #[test]
    fn declared_size_over_limit_is_refused_at_mail() {
        let mut s = session();
        run(&mut s, "EHLO c");
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@b> SIZE=5000")), 552);
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@b> SIZE=500")), 250);
    }

    #[test]
    fn endless_noops_end_the_session_but_a_transaction_resets_the_count() {
        let mut s = session();
        run(&mut s, "EHLO c");
        for _ in 0..JUNK_LIMIT {
            assert_eq!(code(&run(&mut s, "NOOP")), 250);
        }
        run(&mut s, "MAIL FROM:<a@b>");
        for _ in 0..JUNK_LIMIT {
            assert_eq!(code(&run(&mut s, "RSET")), 250);
        }
        // max_errors is 3: the 4th junk command past the limit closes.
        for _ in 0..3 {
            assert!(matches!(run(&mut s, "NOOP"), Action::Reply(_)));
        }
        assert!(matches!(run(&mut s, "NOOP"), Action::Close(r) if r.code == 421));
    }

    #[test]
    fn too_many_errors_close_the_session() {
        let mut s = session();
        for _ in 0..3 {
            assert!(matches!(run(&mut s, "BOGUS"), Action::Reply(_)));
        }
        assert!(matches!(run(&mut s, "BOGUS"), Action::Close(r) if r.code == 421));
    }

    #[test]
    fn bdat_gets_502_and_its_chunk_is_dropped_or_the_session_closed() {
        let mut s = session();
        run(&mut s, "EHLO c");
        assert_eq!(
            run(&mut s, "BDAT 10 LAST"),
            Action::Discard {
                reply: reply::not_implemented("BDAT"),
                bytes: 10
            }
        );
        assert!(matches!(run(&mut s, "BDAT 1001"), Action::Close(r) if r.code == 421));
    }

    #[test]
    fn ehlo_advertises_the_capabilities_value() {
        let mut s = session();
        let Action::Reply(r) = run(&mut s, "EHLO c") else {
            panic!("EHLO must be answered")
        };
        assert_eq!(r.lines, Capabilities::standard(1000).lines());
        s.set_capabilities(Capabilities {
            starttls: true,
            ..Capabilities::standard(1000)
        });
        let Action::Reply(r) = run(&mut s, "EHLO c") else {
            panic!("EHLO must be answered")
        };
        assert!(r.lines.contains(&"STARTTLS".to_string()));
    }
}

#[cfg(test)]
mod access_tests {
    use super::*;

    fn session(client: Client, starttls: bool) -> Session {
        let limits = Limits {
            max_message_size: 1000,
            max_recipients: 2,
            max_errors: 10,
            max_header_size: 1000,
            max_transactions: 3,
            postmaster: "postmaster@relay.test".into(),
        };
        let capabilities = Capabilities {
            starttls,
            ..Capabilities::standard(1000)
        };
        Session::new("relay.test".into(), limits, capabilities, client)
    }

    fn run(s: &mut Session, line: &str) -> Action {
        let bytes = format!("{line}\r\n").into_bytes();
        s.command(Request::parse(&mut bytes.iter()))
    }

    fn reply(a: Action) -> (u16, &'static str) {
        match a {
            Action::Reply(r) | Action::Close(r) => (r.code, r.status),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn an_untrusted_client_gets_530_at_mail() {
        let mut s = session(Client::default(), false);
        run(&mut s, "EHLO c");
        assert_eq!(
            reply(run(&mut s, "MAIL FROM:<a@b.example>")),
            (530, "5.7.0")
        );
        assert!(!s.in_transaction());
    }

    #[test]
    fn tls_required_refuses_mail_until_the_handshake_and_starttls_resets_the_session() {
        let client = Client {
            trusted: true,
            tls_required: true,
            ..Client::default()
        };
        let mut s = session(client, true);
        run(&mut s, "EHLO c");
        assert_eq!(
            reply(run(&mut s, "MAIL FROM:<a@b.example>")),
            (530, "5.7.0")
        );
        assert_eq!(run(&mut s, "STARTTLS"), Action::StartTls);
        s.restart_with_tls(Capabilities::standard(1000));
        assert_eq!(
            reply(run(&mut s, "MAIL FROM:<a@b.example>")).0,
            503,
            "EHLO again first"
        );
        run(&mut s, "EHLO c");
        assert_eq!(reply(run(&mut s, "MAIL FROM:<a@b.example>")).0, 250);
        assert!(s.client().tls);
    }

    #[test]
    fn starttls_is_refused_when_not_offered_already_done_or_inside_a_transaction() {
        let mut s = session(Client::trusted(), false);
        run(&mut s, "EHLO c");
        assert_eq!(reply(run(&mut s, "STARTTLS")).0, 502);
        let mut s = session(Client::trusted(), true);
        run(&mut s, "EHLO c");
        run(&mut s, "MAIL FROM:<a@b.example>");
        assert_eq!(reply(run(&mut s, "STARTTLS")).0, 503);
        let tls = Client {
            tls: true,
            ..Client::trusted()
        };
        let mut s = session(tls, true);
        run(&mut s, "EHLO c");
        assert_eq!(reply(run(&mut s, "STARTTLS")).0, 502);
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    fn session(client: Client) -> Session {
        let limits = Limits {
            max_message_size: 1000,
            max_recipients: 2,
            max_errors: 10,
            max_header_size: 1000,
            max_transactions: 3,
            postmaster: "postmaster@relay.test".into(),
        };
        let mut capabilities = Capabilities::standard(1000);
        if client.offers_auth() {
            capabilities.auth = vec!["PLAIN".into(), "LOGIN".into()];
        }
        Session::new("relay.test".into(), limits, capabilities, client)
    }

    fn run(s: &mut Session, line: &str) -> Action {
        let bytes = format!("{line}\r\n").into_bytes();
        s.command(Request::parse(&mut bytes.iter()))
    }

    fn code(a: Action) -> (u16, &'static str) {
        match a {
            Action::Reply(r) | Action::Close(r) => (r.code, r.status),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn outside() -> Client {
        Client {
            auth_available: true,
            ..Client::default()
        }
    }

    #[test]
    fn auth_waits_for_tls_unless_plaintext_is_allowed() {
        let mut s = session(outside());
        run(&mut s, "EHLO c");
        assert_eq!(code(run(&mut s, "AUTH PLAIN AGEAYg==")), (538, "5.7.11"));
        let mut s = session(Client {
            tls: true,
            ..outside()
        });
        run(&mut s, "EHLO c");
        assert_eq!(
            run(&mut s, "AUTH PLAIN AGEAYg=="),
            Action::Auth {
                mechanism: Mechanism::Plain,
                initial: Some("AGEAYg==".into())
            }
        );
        assert_eq!(
            run(&mut s, "AUTH LOGIN"),
            Action::Auth {
                mechanism: Mechanism::Login,
                initial: None
            }
        );
        assert_eq!(code(run(&mut s, "AUTH CRAM-MD5")), (504, "5.5.4"));
        let mut none = session(Client::trusted());
        run(&mut none, "EHLO c");
        assert_eq!(code(run(&mut none, "AUTH PLAIN AGEAYg==")).0, 502);
    }

    #[test]
    fn an_authenticated_user_sends_only_from_allowed_addresses() {
        let mut s = session(Client {
            tls: true,
            ..outside()
        });
        run(&mut s, "EHLO c");
        assert_eq!(
            code(run(&mut s, "MAIL FROM:<billing@example.com>")),
            (530, "5.7.0")
        );
        s.authenticated(User {
            name: "billing".into(),
            allowed_from: vec!["billing@example.com".into()],
            credential: crate::spool::Credential::User("billing".into()),
        });
        assert_eq!(
            code(run(&mut s, "MAIL FROM:<ceo@example.com>")),
            (553, "5.7.1")
        );
        assert_eq!(code(run(&mut s, "MAIL FROM:<billing@example.com>")).0, 250);
        assert_eq!(code(run(&mut s, "AUTH PLAIN AGEAYg==")).0, 503);
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn session() -> Session {
        let limits = Limits {
            max_message_size: 1000,
            max_recipients: 1,
            max_errors: 2,
            max_header_size: 1000,
            max_transactions: 2,
            postmaster: "postmaster@relay.test".into(),
        };
        Session::new(
            "relay.test".into(),
            limits,
            Capabilities::standard(1000),
            Client::trusted(),
        )
    }

    fn run(s: &mut Session, line: &str) -> Action {
        let bytes = format!("{line}\r\n").into_bytes();
        s.command(Request::parse(&mut bytes.iter()))
    }

    #[test]
    fn transactions_past_the_cap_close_the_session() {
        let mut s = session();
        run(&mut s, "EHLO c");
        for _ in 0..2 {
            assert!(
                matches!(run(&mut s, "MAIL FROM:<a@b.example>"), Action::Reply(r) if r.code == 250)
            );
            run(&mut s, "RSET");
        }
        assert!(
            matches!(run(&mut s, "MAIL FROM:<a@b.example>"), Action::Close(r) if r.code == 421 && r.status == "4.7.0")
        );
    }

    #[test]
    fn endless_ehlo_or_over_cap_recipients_end_the_session() {
        let mut s = session();
        run(&mut s, "EHLO c");
        let mut closed = false;
        for _ in 0..=JUNK_LIMIT + 2 {
            if matches!(run(&mut s, "EHLO c"), Action::Close(_)) {
                closed = true;
                break;
            }
        }
        assert!(closed, "EHLO loop cut off");

        let mut s = session();
        run(&mut s, "EHLO c");
        run(&mut s, "MAIL FROM:<a@b.example>");
        run(&mut s, "RCPT TO:<x@y.example>");
        let mut closed = false;
        for _ in 0..=JUNK_LIMIT + 2 {
            match run(&mut s, "RCPT TO:<z@y.example>") {
                Action::Close(_) => {
                    closed = true;
                    break;
                }
                Action::Reply(r) => assert_eq!(r.code, 452),
                other => panic!("{other:?}"),
            }
        }
        assert!(closed, "over-cap RCPT loop cut off");
    }
}

#[cfg(test)]
mod address_tests {
    use super::*;

    fn session() -> Session {
        let limits = Limits {
            max_message_size: 1000,
            max_recipients: 10,
            max_errors: 10,
            max_header_size: 1000,
            max_transactions: 10,
            postmaster: "admin@example.com".into(),
        };
        Session::new(
            "relay.test".into(),
            limits,
            Capabilities::standard(1000),
            Client::trusted(),
        )
    }

    fn code(s: &mut Session, line: &str) -> (u16, &'static str) {
        let bytes = format!("{line}\r\n").into_bytes();
        match s.command(crate::smtp::codec::parse_command(&bytes)) {
            Action::Reply(r) | Action::Close(r) => (r.code, r.status),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_ascii_addresses_need_the_smtputf8_parameter() {
        let mut s = session();
        code(&mut s, "EHLO c");
        assert_eq!(code(&mut s, "MAIL FROM:<zoë@example.com>"), (553, "5.6.7"));
        assert_eq!(code(&mut s, "MAIL FROM:<a@example.com>").0, 250);
        assert_eq!(code(&mut s, "RCPT TO:<jürgen@example.de>"), (553, "5.6.7"));
        code(&mut s, "RSET");
        assert_eq!(code(&mut s, "MAIL FROM:<zoë@example.com> SMTPUTF8").0, 250);
        assert_eq!(code(&mut s, "RCPT TO:<jürgen@example.de>").0, 250);
    }

    #[test]
    fn postmaster_is_always_accepted_and_goes_to_the_admin() {
        let mut s = session();
        code(&mut s, "EHLO c");
        code(&mut s, "MAIL FROM:<a@example.com>");
        assert_eq!(code(&mut s, "RCPT TO:<Postmaster>"), (250, "2.1.5"));
        assert_eq!(s.envelope().rcpt_to, ["admin@example.com"]);
    }
}
