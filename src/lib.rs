//! postrelay: a local SMTP-to-API relay.
//!
//! Mail flows one way through these modules:
//!
//! - [`smtp`]: the listener; sockets, limits, replies.
//! - [`spool`]: the durable queue; `250` only after fsync.
//! - [`message`] / [`mapping`]: pure functions from envelope + MIME to API requests.
//! - [`delivery`]: workers, rate limit, backoff; records outcomes in the spool.
//! - [`backends`]: Postmark, Postal, dry-run; classify every API answer.
//! - [`maildrop`]: local submission while the daemon is down; imported through the spool.
//! - ops: [`config`], [`cli`], [`observability`], [`shutdown`], wired by [`app`].

pub mod app;
pub mod backends;
pub mod cli;
pub mod config;
pub mod control;
pub mod delivery;
pub mod maildrop;
pub mod mapping;
pub mod message;
pub mod observability;
pub mod shutdown;
pub mod smtp;
pub mod spool;
