//! `powchain-cli PORT COMMAND`: one command to a node, its answer as JSON.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    powchain::control::cli_main(powchain::control::CliArgs::parse()).await
}
