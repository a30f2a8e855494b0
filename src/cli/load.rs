//! `pglogsink load` (being written).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    pub(crate) db: super::DatabaseArgs,
}

pub(crate) async fn run(args: LoadArgs) -> Result<ExitCode, super::Failure> {
    let _ = args;
    Ok(ExitCode::SUCCESS)
}
