//! postrelay: a local SMTP-to-API relay.
//!
//! Mail flows one way through these modules, and imports follow the same
//! arrows (no module imports one that depends on it):
//!
//! ```text
//! smtp ──► mapping ◄── delivery ──► backends
//!   │                     │
//!   └──────► spool ◄──────┘
//! ```
//!
//! - [`smtp`]: the listener; sockets, limits, replies. Holds an
//!   `Arc<mapping::Mapper>` to refuse at `DATA` what the API would refuse.
//! - [`spool`]: the durable queue; `250` only after fsync.
//! - [`message`] / [`mapping`]: pure functions from envelope + MIME to API
//!   calls; [`mapping::Mapper`] is built once from the config and shared by
//!   the listener, the engine and the CLI.
//! - [`delivery`]: claims, pacing, backoff; decides purely what becomes of a
//!   message, then records it in the spool. The only module that uses both
//!   `backends` and `spool`.
//! - [`backends`]: Postmark, Postal, dry-run: one API call in, one
//!   [`backends::Outcome`] out. Never imports `delivery`, `spool` or `smtp`.
//! - [`maildrop`]: local submission while the daemon is down; imported
//!   through the spool's commit path.
//! - ops: [`config`], [`cli`], [`observability`], [`shutdown`], wired by [`app`].
//!   `message` and `config` sit below everything above; the ops modules may
//!   use any module, and none of the mail path imports `cli`, `control` or `app`.

pub mod app;
pub mod backends;
pub mod cli;
pub mod config;
pub mod control;
pub mod delivery;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod maildrop;
pub mod mapping;
pub mod message;
pub mod observability;
pub mod shutdown;
pub mod smtp;
pub mod spool;
