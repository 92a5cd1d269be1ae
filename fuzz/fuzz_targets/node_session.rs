//! Fuzzes a live node in-process, statefully: each input is a session of up to 16 request
//! payloads (split at 0xFF bytes, each sent as one frame on one connection) to the same
//! node, whose chain, store, peer set and mining queue carry over from input to input (a
//! fresh node every 2,000 inputs or once its chain is 256 blocks high, so replies that carry
//! the whole chain stay cheap). Every request must be answered within 5 s or end the
//! connection; after every session the node's chain must validate and its address book
//! stay within its cap. The chain is checked against a copy validated before: blocks that
//! extend it go through every rule on top of it, anything else (a reorg, a shorter chain)
//! is validated from genesis, so a session costs its own requests, not the chain's length.
//! The node dials nothing (its network refuses every connection) and takes no admin
//! request without its cookie (`strict_admin`). It runs on one thread, its store work in
//! place, so an input replays the same way.
#![no_main]

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use powchain::env::Listener;
use powchain::env::{Blocking, Conn, Net, Solve};
use powchain::frame::FrameCodec;
use powchain::node::{Config, Node};
use powchain::pow::{MineControl, Template};
use powchain::{Block, Blockchain, ChainParams};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Inputs one node lives for.
const SESSIONS_PER_NODE: u64 = 2_000;
/// The height past which a node is replaced by a fresh one.
const MAX_HEIGHT: u64 = 256;
/// How the node directories of this target's processes are named: the prefix, then the
/// process id and a dash.
const DIR_PREFIX: &str = "powchain-fuzz-";
/// Requests of one input.
const MAX_REQUESTS: usize = 16;
/// The longest a request may go unanswered.
const REPLY_WITHIN: Duration = Duration::from_secs(5);

/// Connections handed to the node in memory.
struct MemListener(mpsc::Receiver<DuplexStream>);

impl Listener for MemListener {
    type Stream = DuplexStream;

    async fn accept(&mut self) -> io::Result<(DuplexStream, SocketAddr)> {
        match self.0.recv().await {
            // A client on another host: no loopback privilege.
            Some(stream) => Ok((stream, SocketAddr::from(([10, 255, 0, 2], 40_000)))),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([10, 255, 0, 1], 5001)))
    }
}

/// A network where every dial is refused.
#[derive(Debug)]
struct NoNet;

impl Net for NoNet {
    fn connect(&self, _addr: &str) -> futures::future::BoxFuture<'static, io::Result<Conn>> {
        Box::pin(async {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the fuzzer's node dials nothing",
            ))
        })
    }

    fn is_local_ip(&self, _ip: std::net::IpAddr) -> bool {
        false
    }
}

/// Mining in place on the runtime: at difficulty 1 a block takes a few attempts, and a
/// session's `mine` then costs what the node's own work does, not a thread's start.
#[derive(Debug)]
struct InlineSolver;

impl Solve for InlineSolver {
    fn solve(
        &self,
        template: Template,
        _threads: usize,
        control: Arc<MineControl>,
        wall_clock: fn() -> i64,
    ) -> futures::future::BoxFuture<'static, Option<Block>> {
        Box::pin(async move { powchain::pow::mine_with_clock(&template, 1, &control, wall_clock) })
    }
}

/// The node under test and what keeps it running.
struct Live {
    runtime: tokio::runtime::Runtime,
    connections: mpsc::Sender<DuplexStream>,
    node: Arc<Node>,
    params: ChainParams,
    /// The node's chain as last validated.
    checked: Blockchain,
    shutdown: CancellationToken,
    sessions: u64,
    _dir: tempfile::TempDir,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn open() -> Live {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // In memory where there is a tmpfs: a store's fsync per block would set the pace.
    let parent = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    remove_dead_dirs(&parent);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(&parent)
        .expect("a temporary directory");
    let params = ChainParams::with_difficulty(1);
    let mut config = Config::new(dir.path().join("node"));
    config.params = params.clone();
    config.threads = 1;
    config.strict_admin = true;
    config.idle_timeout = REPLY_WITHIN;
    config.env.net = Arc::new(NoNet);
    config.env.solver = Arc::new(InlineSolver);
    config.env.blocking = Blocking::Inline;
    let (connections, accepted) = mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let listen = SocketAddr::from(([10, 255, 0, 1], 5001));
    let node = runtime
        .block_on(Node::open(config, listen, shutdown.clone()))
        .expect("the node opens");
    runtime.spawn(powchain::node::serve(node.clone(), MemListener(accepted)));
    let checked = Blockchain::new(params.clone());
    Live {
        runtime,
        connections,
        node,
        params,
        checked,
        shutdown,
        sessions: 0,
        _dir: dir,
    }
}

static LIVE: Mutex<Option<Live>> = Mutex::new(None);

/// Removes the node directories in `parent` left by this target's processes that have
/// ended: libFuzzer ends a process without running destructors (at the end of a run, and
/// of every job in fork mode), so a node's `TempDir` is never dropped. Linux only (a
/// process is alive while `/proc/<pid>` exists); elsewhere the directories stay.
fn remove_dead_dirs(parent: &std::path::Path) {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if guard
        .as_ref()
        .is_none_or(|l| l.sessions >= SESSIONS_PER_NODE || l.node.tip().0 >= MAX_HEIGHT)
    {
        *guard = None;
        *guard = Some(open());
    }
    let live = guard.as_mut().expect("opened");
    live.sessions += 1;
    let requests: Vec<&[u8]> = data.split(|b| *b == 0xFF).take(MAX_REQUESTS).collect();
    let connections = live.connections.clone();
    live.runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(1 << 20);
        if connections.send(server).await.is_err() {
            panic!("the node stopped accepting connections");
        }
        let mut conn = Framed::new(client, FrameCodec::default());
        for request in requests {
            if conn.send(request).await.is_err() {
                break;
            }
            match tokio::time::timeout(REPLY_WITHIN, conn.next()).await {
                Err(_) => panic!(
                    "no reply within {REPLY_WITHIN:?} to {:?}",
                    String::from_utf8_lossy(request)
                ),
                // The node ended the connection (after a request it refuses to go on from).
                Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(_))) => {}
            }
        }
    });
    let blocks = live.node.chain_blocks();
    check_chain(&mut live.checked, &live.params, blocks);
    assert!(live.node.address_book_len() <= powchain::node::MAX_ADDRS);
});

/// Checks the node's chain `blocks` against `checked`, the chain as validated after the
/// session before, and makes `checked` the node's chain. Every block's link to its parent
/// is compared; the blocks `checked` holds are compared by hash; newer ones are pushed
/// through every rule. A chain that does not extend `checked` is validated from genesis.
fn check_chain(checked: &mut Blockchain, params: &ChainParams, blocks: Vec<Block>) {
    for pair in blocks.windows(2) {
        assert!(
            pair[1].prev_hash.is(&pair[0].hash) && pair[1].index == pair[0].index + 1,
            "the node holds block {} that does not follow its parent",
            pair[1].index
        );
    }
    let held = checked.len();
    let extends =
        blocks.len() >= held && checked.iter().zip(&blocks).all(|(a, b)| a.hash == b.hash);
    if extends {
        for block in blocks.into_iter().skip(held) {
            let index = block.index;
            if let Err(e) = checked.push(block) {
                panic!("the node holds block {index} that breaks a rule: {e}");
            }
        }
    } else {
        // Far in the future: the node judged its blocks' times by the clock of their day.
        let far = i64::MAX / 2;
        match Blockchain::from_blocks_at(params.clone(), blocks, far) {
            Ok(chain) => *checked = chain,
            Err(e) => panic!("the node holds a chain that does not validate: {e}"),
        }
    }
}
