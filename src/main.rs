//! The `pglogsink` binary: the demo web service, the load client, the log
//! reader and the migration command. The library does the logging; this only
//! parses arguments and wires things together.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli::diagnostics::init() {
        eprintln!("pglogsink: error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pglogsink: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cli::serve::run(*args).await,
            Command::Load(args) => cli::load::run(args).await,
            Command::Logs(args) => cli::logs::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Migrate(args) => cli::migrate(args).await.map(|()| ExitCode::SUCCESS),
            Command::Maintain(args) => cli::maintain::run(args).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pglogsink: error: {e}");
            ExitCode::FAILURE
        }
    }
}
