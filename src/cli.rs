//! The command line: `serve` (the default), `check-config`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
}
