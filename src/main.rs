//! The `postrelay` binary: CLI → config → logging → `app::run`. Exit codes:
//! 0 ok, 78 (EX_CONFIG) bad configuration, 1 anything else.

use std::process::ExitCode;

use clap::Parser;
use postrelay::cli::{Cli, Command};
use postrelay::{app, config, observability, shutdown};
use tokio_util::sync::CancellationToken;

const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match config::load(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("postrelay: configuration error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            for w in &loaded.warnings {
                eprintln!("postrelay: warning: {w}");
            }
            print!("{}", loaded.config.to_toml());
            eprintln!("postrelay: configuration ok");
            ExitCode::SUCCESS
        }
        Command::Serve => serve(loaded),
    }
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
