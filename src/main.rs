//! The `postrelay` binary: CLI → config → logging → `app::run`. Exit codes:
//! 0 ok, 78 (EX_CONFIG) bad configuration, 1 anything else; `sendmail`
//! follows sysexits(3). Invoked as `sendmail` (a symlink), it is
//! `postrelay sendmail`; as `mailq`, `sendmail -bp`; as `newaliases`, a
//! successful no-op, as on Postfix. `serve` and `check-config` load the
//! full configuration; `queue` and `sendmail` leave the secrets unread.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use postrelay::cli::sendmail::args::{self, Mode};
use postrelay::cli::sendmail::headers::Local;
use postrelay::cli::{Cli, Command, QueueCommand, Target, hash_password, queue, sendmail};
use postrelay::{app, config, observability, shutdown};
use tokio_util::sync::CancellationToken;

const EX_CONFIG: u8 = 78;

/// The configuration the Debian package installs. `sendmail`, `mailq` and
/// `postrelay sendmail` read it when neither `--config` nor
/// `POSTRELAY_CONFIG` names one (as Postfix's sendmail reads `main.cf`), so
/// that cron's mail follows the operator's `smtp.listen`, `[local]` and
/// `sendmail.maildrop`. The file holds no secrets; the tools never read them.
const SYSTEM_CONFIG: &str = "/etc/postrelay/postrelay.toml";

fn main() -> ExitCode {
    let env_config = std::env::var_os("POSTRELAY_CONFIG");
    let env_config = env_config.as_deref().map(Path::new);
    let rest = || -> Vec<String> {
        std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    };
    match invoked_as().as_deref() {
        Some("sendmail") => return ExitCode::from(run_sendmail(&rest(), env_config)),
        Some("mailq") => return ExitCode::from(run_sendmail(&["-bp".into()], env_config)),
        Some("newaliases") => return ExitCode::SUCCESS,
        _ => {}
    }
    let cli = Cli::parse();
    if let Some(Command::Sendmail(a)) = &cli.command {
        return ExitCode::from(run_sendmail(&a.args, cli.config.as_deref()));
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

/// The program name when it is one of the sendmail-compatible links.
fn invoked_as() -> Option<String> {
    let argv0 = std::env::args_os().next()?;
    let name = Path::new(&argv0)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    ["sendmail", "mailq", "newaliases"]
        .contains(&name.as_str())
        .then_some(name)
}

/// sendmail(8): parse the flags, load the configuration without secrets
/// (PHP running as `www-data` needs no token), then submit or act on the queue.
fn run_sendmail(argv: &[String], config_path: Option<&Path>) -> u8 {
    let opts = match args::parse(argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return sendmail::EX_USAGE;
        }
    };
    if opts.mode == Mode::NewAliases {
        return 0;
    }
    let system = Path::new(SYSTEM_CONFIG);
    let config_path = config_path.or_else(|| system.is_file().then_some(system));
    let loaded = match config::load_for_tools(config_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sendmail: configuration error: {e}");
            return EX_CONFIG;
        }
    };
    let cfg = &loaded.config;
    let queue_command = match opts.mode {
        Mode::ListQueue => Some(QueueCommand::List { json: false }),
        Mode::RunQueue => Some(QueueCommand::Retry(Target {
            id: None,
            all: true,
        })),
        _ => None,
    };
    if let Some(cmd) = queue_command {
        return match queue::run(&cmd, cfg) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("sendmail: {e:#}");
                sendmail::EX_TEMPFAIL
            }
        };
    }
    let server = opts.server.clone().unwrap_or_else(|| {
        let mut addr = cfg.smtp.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        addr.to_string()
    });
    let ctx = sendmail::Context {
        server,
        maildrop: cfg.sendmail.maildrop.clone(),
        max_message_size: cfg.smtp.max_message_size as u64,
        max_header_size: cfg.smtp.max_header_size,
        max_recipients: cfg.smtp.max_recipients,
        local: Local {
            login: sendmail::real_login(),
            domain: cfg.local.effective_domain(),
            admin: cfg.local.admin().map(str::to_string),
        },
    };
    sendmail::run(&opts, &ctx)
}

fn serve(loaded: config::Loaded) -> ExitCode {
    observability::alloc::limit_arenas();
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
