//! The maildrop: where `postrelay sendmail` leaves mail while the daemon
//! cannot take it, and from where the daemon imports it into the spool.
//!
//! Layout and permissions (see docs/maildrop.md), as Postfix's maildrop and
//! nullmailer's queue, without a setgid helper:
//!
//! ```text
//! maildrop/              owner: the daemon's user and group, mode 3733
//!                        (setgid: new files get the daemon's group;
//!                        sticky: only a file's owner or the daemon may
//!                        rename or delete it; others may create files but
//!                        not list the directory)
//!   .<stem>.tmp          being written by sendmail (mode 0640)
//!   <stem>               complete, fsynced, waiting for import
//!   bad/                 mode 0700: files the daemon refused, each with
//!                        <name>.reason saying why
//! ```
//!
//! Invariant: a drop file is removed only after the spool commit of its
//! message returned; a crash between the two leaves a duplicate at worst,
//! never a loss. The importer never follows a symlink, never touches
//! anything outside the maildrop, and trusts no byte of a file: the
//! envelope is validated ([`format`]), the size bounded, and the submitting
//! uid taken from the file's owner.

pub mod format;
pub mod import;
pub mod writer;

pub use import::Importer;
pub use writer::DropFile;

/// Mode of the maildrop directory: setgid, sticky, `rwx-wx-wx`.
pub const DIR_MODE: u32 = 0o3733;
