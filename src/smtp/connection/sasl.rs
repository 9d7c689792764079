//! The AUTH exchange of one connection (RFC 4954): the `334` challenges,
//! the base64 responses read in raw mode, the verification off the async
//! threads, and the verdict: `235`, `535 5.7.8` after
//! `smtp.auth_failure_delay`, or `421 4.7.0` once the client's address has
//! used up `smtp.max_auth_failures`. No password reaches a log line.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use super::{Conn, Stop};
use crate::observability::escape::escape;
use crate::smtp::auth::{self, Mechanism, SaslError};
use crate::smtp::codec::Frame;
use crate::smtp::reply::{self, Reply};
use crate::smtp::session::Action;

/// How a SASL exchange ended short of a verdict.
enum Exchange {
    Stop(Stop),
    Answer(Reply),
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Runs one AUTH exchange to its verdict: `235`, or `535` after the
    /// failure delay, or `421` once the address has used up its failures.
    pub(super) async fn auth(
        &mut self,
        mechanism: Mechanism,
        initial: Option<String>,
    ) -> Result<(), Stop> {
        let ip = self.peer.ip();
        if self.shared.auth.throttle.blocked(ip, Instant::now()) {
            metrics::counter!("postrelay_smtp_auth_total", "result" => "throttled").increment(1);
            return Err(Stop::Say(reply::too_many_auth_failures()));
        }
        let creds = match self.sasl(mechanism, initial).await {
            Ok(c) => c,
            Err(Exchange::Stop(stop)) => return Err(stop),
            Err(Exchange::Answer(r)) => {
                return match self.session.error(r) {
                    Action::Reply(r) => {
                        r.write_to(&mut self.out);
                        Ok(())
                    }
                    Action::Close(r) => Err(Stop::Say(r)),
                    _ => Ok(()),
                };
            }
        };
        let accounts = self.shared.auth.accounts.clone();
        let name = creds.user.clone();
        let verdict = tokio::task::spawn_blocking(move || accounts.verify(&creds))
            .await
            .ok()
            .flatten();
        let auth = &self.shared.auth;
        match verdict {
            Some(user) => {
                metrics::counter!("postrelay_smtp_auth_total", "result" => "success").increment(1);
                tracing::info!(peer = %self.peer, user = %escape(&user.name), "authenticated");
                self.session.authenticated(user);
                reply::auth_ok().write_to(&mut self.out);
                Ok(())
            }
            None => {
                metrics::counter!("postrelay_smtp_auth_total", "result" => "failure").increment(1);
                tracing::warn!(peer = %self.peer, user = %escape(&name), "authentication failed");
                let exhausted = auth.throttle.fail(ip, Instant::now());
                tokio::time::sleep(auth.failure_delay).await;
                if exhausted {
                    return Err(Stop::Say(reply::too_many_auth_failures()));
                }
                match self.session.error(reply::auth_failed()) {
                    Action::Close(r) => Err(Stop::Say(r)),
                    Action::Reply(r) => {
                        r.write_to(&mut self.out);
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Collects the user name and password (PLAIN or LOGIN).
    async fn sasl(
        &mut self,
        mechanism: Mechanism,
        initial: Option<String>,
    ) -> Result<auth::Credentials, Exchange> {
        let undecodable = |e: SaslError| {
            Exchange::Answer(match e {
                SaslError::Cancelled => reply::auth_cancelled(),
                _ => reply::auth_undecodable(),
            })
        };
        match mechanism {
            Mechanism::Plain => {
                let message = match initial {
                    Some(text) => auth::decode(text.as_bytes()),
                    None => auth::decode(&self.sasl_line("").await?),
                };
                message
                    .and_then(|m| auth::parse_plain(&m))
                    .map_err(undecodable)
            }
            Mechanism::Login => {
                let user = match initial {
                    Some(text) => auth::decode(text.as_bytes()),
                    None => auth::decode(&self.sasl_line(&auth::login_prompt(false)).await?),
                }
                .and_then(|u| auth::text(&u))
                .map_err(undecodable)?;
                let password = auth::decode(&self.sasl_line(&auth::login_prompt(true)).await?)
                    .and_then(|p| auth::text(&p))
                    .map_err(undecodable)?;
                Ok(auth::Credentials {
                    user,
                    password: password.into(),
                })
            }
        }
    }

    /// Sends a `334` challenge and reads one response line.
    async fn sasl_line(&mut self, challenge: &str) -> Result<Vec<u8>, Exchange> {
        reply::auth_challenge(challenge).write_to(&mut self.out);
        self.framer.set_raw(true);
        let line = self.raw_line().await;
        self.framer.set_raw(false);
        line
    }

    async fn raw_line(&mut self) -> Result<Vec<u8>, Exchange> {
        let deadline = Instant::now() + self.shared.command_timeout;
        loop {
            match self.framer.next_frame() {
                Some(Frame::Raw(line)) => return Ok(line),
                Some(_) => return Err(Exchange::Answer(reply::line_too_long())),
                None => {}
            }
            if self.flush().await.is_err() {
                return Err(Exchange::Stop(Stop::Gone));
            }
            self.readbuf.clear();
            let read = tokio::time::timeout_at(
                deadline.min(self.ends),
                self.stream.read_buf(&mut self.readbuf),
            )
            .await;
            match read {
                Err(_) => return Err(Exchange::Stop(self.expired())),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Exchange::Stop(Stop::Gone)),
                Ok(Ok(n)) => self.framer.push(&self.readbuf[..n]),
            }
        }
    }
}
