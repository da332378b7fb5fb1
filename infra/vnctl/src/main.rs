use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    vnctl::main_with(vnctl::Cli::parse()).await
}
