//! `node PORT`: a powchain peer. Parses flags, sets up logging, then hands off to
//! `powchain::cli::node_main` (bind, announce, run).

use clap::Parser;
use powchain::cli::{NodeArgs, init_logging, node_main};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = NodeArgs::parse();
    init_logging(args.log_format);
    node_main(args).await
}
