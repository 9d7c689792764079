//! The SMTP state machine: HELO → MAIL → RCPT → DATA, one verb at a time.
//! Pure: it sees parsed commands (from smtp-proto) and returns what the
//! connection should do. Sockets, timeouts and the spool are the
//! connection's business.

use std::borrow::Cow;

use smtp_proto::{Error as ProtoError, Request};

use super::auth::{Mechanism, User, sender_allowed};
use super::capabilities::Capabilities;
use super::reply::{self, Reply};
use crate::message::{Envelope, address};

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
    /// `address::key` of each of `rcpts`: a duplicate is found in constant
    /// time, so a thousand recipients cost linear time, not quadratic.
    rcpt_keys: std::collections::HashSet<String>,
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
            rcpt_keys: Default::default(),
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
        self.rcpt_keys.clear();
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
                let addr = match from.address.trim() {
                    "" => String::new(),
                    given => match valid_mailbox(given) {
                        Some(addr) => addr,
                        None => return self.error(reply::bad_sender()),
                    },
                };
                let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
                if !smtputf8 && !addr.is_ascii() {
                    return self.error(reply::needs_smtputf8());
                }
                if let Some(user) = &self.user
                    && !sender_allowed(&user.allowed_from, &addr)
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
                self.mail_from = Some(addr);
                self.junk = 0;
                Action::Reply(reply::sender_ok())
            }
            Request::Rcpt { to } => {
                if self.mail_from.is_none() {
                    return self.error(reply::bad_sequence("need MAIL before RCPT"));
                }
                let given = to.address.trim();
                let given = if given.eq_ignore_ascii_case("postmaster") {
                    self.limits.postmaster.as_str()
                } else {
                    given
                };
                let Some(addr) = valid_mailbox(given) else {
                    return self.error(reply::bad_recipient());
                };
                if !self.smtputf8 && !addr.is_ascii() {
                    return self.error(reply::needs_smtputf8());
                }
                let addr = addr.as_str();
                if self.rcpts.len() >= self.limits.max_recipients {
                    // Not an error at first: the client sends the rest in the
                    // next transaction. Endless ones count as junk.
                    return self.junk(reply::too_many_recipients(self.limits.max_recipients));
                }
                if self.rcpt_keys.insert(address::key(addr)) {
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

/// The RFC 5321 form of a `MAIL`/`RCPT` address, or `None` when it is not
/// a mailbox. smtp-proto hands over a quoted local part without its quotes
/// (`"john doe"@x` arrives as `john doe@x`); the local part is quoted again
/// when it needs quotes, so the envelope keeps a valid, equivalent address.
/// No control characters anywhere, no blanks or angle brackets in the
/// domain. SMTPUTF8 addresses are allowed.
fn valid_mailbox(addr: &str) -> Option<String> {
    let (local, domain) = addr.rsplit_once('@')?;
    let valid = !local.is_empty()
        && !domain.is_empty()
        && !addr.chars().any(char::is_control)
        && !domain
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>');
    valid.then(|| crate::message::address::rfc5322(addr))
}

#[cfg(test)]
mod tests;
