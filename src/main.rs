//! The `postrelay` binary: CLI → config → logging → `app::run`. Exit codes:
//! 0 ok, 78 (EX_CONFIG) bad configuration, 1 anything else; `sendmail`
//! follows sysexits(3). Invoked as `sendmail` (a symlink), it is
//! `postrelay sendmail`. `serve` and `check-config` load the full
//! configuration; `queue` and `sendmail` leave the secrets unread.

use std::path::Path;
use std::process::ExitCode;

use clap::{FromArgMatches, Parser};
use postrelay::cli::{Cli, Command, SendmailArgs, hash_password, queue, sendmail};
use postrelay::{app, config, observability, shutdown};
use tokio_util::sync::CancellationToken;

const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    if invoked_as_sendmail() {
        return sendmail_main();
    }
    let cli = Cli::parse();
    if let Some(Command::Sendmail(args)) = &cli.command {
        return ExitCode::from(run_sendmail(args, cli.config.as_deref()));
    }
    if let Some(Command::HashPassword) = &cli.command {
        return match hash_password::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("postrelay: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let command = cli.command.unwrap_or(Command::Serve);
    // The queue tools need no credentials; the operator running them may not
    // be allowed to read the token.
    let loaded = match &command {
        Command::Queue(_) => config::load_for_tools(cli.config.as_deref()),
        _ => config::load(cli.config.as_deref()),
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("postrelay: configuration error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match command {
        Command::CheckConfig => {
            for w in &loaded.warnings {
                eprintln!("postrelay: warning: {w}");
            }
            print!("{}", loaded.config.to_toml());
            eprintln!("postrelay: configuration ok");
            ExitCode::SUCCESS
        }
        Command::Queue(cmd) => match queue::run(&cmd, &loaded.config) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("postrelay: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Sendmail(_) | Command::HashPassword => unreachable!("handled above"),
        Command::Serve => serve(loaded),
    }
}

fn invoked_as_sendmail() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n == "sendmail"))
        .unwrap_or(false)
}

/// `sendmail -t -i ...` through a symlink: the arguments are sendmail's own.
fn sendmail_main() -> ExitCode {
    let cmd = clap::Command::new("sendmail").no_binary_name(false);
    let cmd = <SendmailArgs as clap::Args>::augment_args(cmd);
    let matches = cmd.get_matches();
    match SendmailArgs::from_arg_matches(&matches) {
        Ok(args) => ExitCode::from(run_sendmail(
            &args,
            std::env::var_os("POSTRELAY_CONFIG")
                .as_deref()
                .map(Path::new),
        )),
        Err(e) => e.exit(),
    }
}

/// The SMTP address: `--server`, else `smtp.listen` from the config, else the
/// default. Secrets are not read: PHP running as `www-data` needs no token.
fn run_sendmail(args: &SendmailArgs, config_path: Option<&Path>) -> u8 {
    let server = match &args.server {
        Some(s) => s.clone(),
        None => match config::load_for_tools(config_path) {
            Ok(l) => {
                let mut addr = l.config.smtp.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip([127, 0, 0, 1].into());
                }
                addr.to_string()
            }
            Err(e) => {
                eprintln!("sendmail: configuration error: {e}");
                return EX_CONFIG;
            }
        },
    };
    sendmail::run(args, &server)
}

fn serve(loaded: config::Loaded) -> ExitCode {
    observability::init_logging(&loaded.config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postrelay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let token = CancellationToken::new();
        shutdown::install(token.clone())?;
        app::run(loaded, token).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("postrelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
