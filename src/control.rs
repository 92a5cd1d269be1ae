//! `powchain-cli`: one command to one node over [`NodeClient`], printed as JSON. What the
//! binary runs; it parses nothing itself.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::{ClientError, NodeClient, read_cookies, with_cookies};
use crate::message::MAX_BLOCKS_PER_REPLY;

/// Talks to a powchain node: one command, its answer as JSON on stdout (indented on a
/// terminal, one line when piped). Exit status: 0 done, 1 refused or unreachable (the
/// node's error code and message on stderr), 2 usage.
#[derive(Debug, Parser)]
#[command(name = "powchain-cli", version, about)]
pub struct CliArgs {
    /// Host the node listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The node's port.
    pub port: u16,
    /// The node's data directory, where its admin cookie is [default: <home>/nodes/<port>].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The powchain home [default: ~/.powchain].
    #[arg(long, env = "POWCHAIN_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Seconds to wait for an answer (mining waits as long as it takes).
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// What to ask.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// One request to the node.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Height, tip, work, difficulty, peers (outbound and inbound), mining state.
    Status,
    /// The whole chain, genesis first.
    Chain,
    /// The block at height N (default: the tip).
    Block {
        /// Height.
        n: Option<u64>,
    },
    /// Mines a block with DATA (JSON if it parses as JSON, else the text); prints it once stored.
    Mine {
        /// The block's data.
        data: String,
    },
    /// Re-checks the whole stored chain.
    Validate,
    /// Syncs with every peer now.
    Sync,
    /// The links the node keeps.
    Peers,
    /// Adds a peer, HOST:PORT (needs the cookie).
    AddPeer {
        /// HOST:PORT.
        addr: String,
    },
    /// Removes a peer, HOST:PORT (needs the cookie).
    RemovePeer {
        /// HOST:PORT.
        addr: String,
    },
    /// Stops the node (needs the cookie).
    Shutdown,
}

/// Runs `powchain-cli` with `args`: the whole of the binary.
pub async fn cli_main(args: CliArgs) -> ExitCode {
    // The node's network is not known here: every data directory of its port is tried,
    // the default network's first, until the node takes a cookie.
    let home = args.home.clone().unwrap_or_else(crate::home::home);
    let (port, data_dir) = (args.port, args.data_dir.clone());
    let dirs = move || data_dir.map_or_else(|| crate::home::node_dirs(&home, port), |d| vec![d]);
    let client = |cookie| {
        NodeClient::new(format!("{}:{}", args.host, args.port))
            .with_cookie(cookie)
            .with_timeout(Duration::from_secs(args.timeout.max(1)))
    };
    let command = &args.command;
    let result = with_cookies(read_cookies(dirs).await, client, |c| async move {
        run(&c, command).await
    })
    .await;
    match result {
        Ok(value) => {
            let text = if std::io::stdout().is_terminal() {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            println!("{}", text.unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(ClientError::Node { code, message, .. }) => {
            eprintln!("error: {code}: {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

async fn run(client: &NodeClient, command: &CliCommand) -> Result<Value, ClientError> {
    Ok(match command {
        CliCommand::Status => to_json(client.status().await?),
        CliCommand::Chain => to_json(client.get_chain().await?),
        CliCommand::Block { n } => {
            let height = client.status().await?.height;
            let n = n.unwrap_or(height);
            if n > height {
                return Err(ClientError::Node {
                    addr: client.addr().to_owned(),
                    code: crate::message::ErrorCode::BadRequest,
                    message: format!("no block {n}: the chain's height is {height}"),
                });
            }
            let back = (height - n + 1) as usize;
            let block = if back <= MAX_BLOCKS_PER_REPLY {
                client.get_tail(back).await?.into_iter().next()
            } else {
                client.get_chain().await?.into_iter().nth(n as usize)
            };
            to_json(block)
        }
        CliCommand::Mine { data } => {
            let data = serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.clone()));
            to_json(client.mine(data).await?)
        }
        CliCommand::Validate => {
            let error = client.validate().await?;
            json!({ "valid": error.is_none(), "error": error })
        }
        CliCommand::Sync => {
            let (height, tip, replaced) = client.sync().await?;
            json!({ "height": height, "tip": tip, "replaced": replaced })
        }
        CliCommand::Peers => to_json(client.get_peers().await?),
        CliCommand::AddPeer { addr } => {
            client.add_peer(addr).await?;
            json!({ "added": addr })
        }
        CliCommand::RemovePeer { addr } => {
            client.remove_peer(addr).await?;
            json!({ "removed": addr })
        }
        CliCommand::Shutdown => {
            client.shutdown().await?;
            json!({ "shutdown": true })
        }
    })
}
