//! The command line: `serve` (the default), `check-config`, `queue ...`
//! (operator view and actions on the spool), and `sendmail` (the
//! `/usr/sbin/sendmail` entry point for cron, PHP `mail()` and friends),
//! and `hash-password` (a PHC string for `[[users]]`).

pub mod hash_password;
pub mod queue;
pub mod sendmail;
mod submit;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "postrelay",
    version,
    about = "SMTP-to-API relay for Postmark and Postal"
)]
pub struct Cli {
    /// TOML configuration file (without one, the embedded dry-run default is used).
    #[arg(long, short = 'c', global = true, env = "POSTRELAY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Load and validate the configuration, print it with secrets redacted.
    CheckConfig,
    /// Inspect and steer the spool (safe beside a running daemon).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Submit a message from stdin to the local daemon, like sendmail(8).
    #[command(disable_help_flag = true)]
    Sendmail(SendmailArgs),
    /// Print an argon2id hash for a [[users]] password_hash; the password
    /// is read from stdin, or asked for on a terminal.
    HashPassword,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Queued messages: id, age, sender, recipients, attempts, next attempt, last error.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Dead letters, with the reason they failed.
    Failed {
        #[arg(long)]
        json: bool,
    },
    /// One message: envelope, headers, and the API request it maps to.
    Show { id: String },
    /// Make queued messages due now.
    Retry(Target),
    /// Remove a queued message for good.
    Delete { id: String },
    /// Move dead letters back into the queue.
    Requeue(Target),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A spool id.
    pub id: Option<String>,
    /// Every message the command applies to.
    #[arg(long)]
    pub all: bool,
}

/// sendmail(8)'s arguments, parsed by [`sendmail::args::parse`] (getopt
/// rules: `-FCronDaemon`, `-oem`, `-bs`, clustered flags).
#[derive(Debug, Args, Default)]
pub struct SendmailArgs {
    /// Flags and recipients as sendmail(8) takes them (see `man sendmail`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}
