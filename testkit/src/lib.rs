//! A harness for integration tests against real nodes: starts node processes on free ports
//! in a temporary home, waits until they listen and are peered, hands out clients, waits
//! for agreement under a deadline, stops, kills and restarts nodes, and cleans up on drop.
//!
//! ```no_run
//! # async fn demo(node_binary: &str) -> Result<(), powchain_testkit::Error> {
//! use std::time::Duration;
//! use powchain_testkit::{Options, TestNetwork};
//!
//! // In an integration test, node_binary is env!("CARGO_BIN_EXE_node").
//! let mut net = TestNetwork::start(node_binary, Options::new(3)).await?;
//! net.wait_peered(Duration::from_secs(20)).await?;
//! let block = net.client(0).mine(serde_json::json!({"hello": "world"})).await?;
//! let tip = net.wait_agree(Duration::from_secs(20)).await?;
//! assert_eq!(tip, block.hash);
//! net.restart(1).await?;                       // same port, same data directory
//! # Ok(()) }
//! ```

pub mod browser;
pub mod fake;
pub mod report;
pub mod scenario;
pub mod sim;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use powchain::block::BlockHash;
use powchain::client::{NodeClient, read_cookie};
use powchain::message::Status;
use powchain::process::{Signal, spawn_announced};

/// How the nodes of a test network find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Through the shared registry of the temporary home (no flags), as `node 5001` users do.
    Registry,
    /// Each node gets `--peer` of the one before it, and no registry.
    Line,
    /// No links at all (add them with `add_peer`).
    Isolated,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of nodes.
    pub nodes: usize,
    /// Network difficulty (low by default so tests mine fast).
    pub difficulty: u32,
    /// How the nodes find each other.
    pub topology: Topology,
    /// Mining threads per node.
    pub threads: usize,
    /// Extra flags for every node.
    pub args: Vec<String>,
    /// `RUST_LOG` of the nodes (default: the test's own, else `info`).
    pub log_filter: Option<String>,
}

impl Options {
    /// `n` nodes at difficulty 8, found through the registry, one mining thread each.
    pub fn new(n: usize) -> Self {
        Options {
            nodes: n,
            difficulty: 8,
            topology: Topology::Registry,
            threads: 1,
            args: Vec::new(),
            log_filter: None,
        }
    }

    /// `n` nodes with no links at all (see [`Topology::Isolated`]).
    pub fn isolated(n: usize) -> Self {
        Options::new(n).topology(Topology::Isolated)
    }

    /// Sets the topology.
    pub fn topology(mut self, t: Topology) -> Self {
        self.topology = t;
        self
    }

    /// Sets the difficulty.
    pub fn difficulty(mut self, d: u32) -> Self {
        self.difficulty = d;
        self
    }

    /// Sets the nodes' `RUST_LOG`.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_owned());
        self
    }

    /// Adds flags for every node.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// One node process.
#[derive(Debug)]
pub struct TestNode {
    /// Address it listens on.
    pub addr: String,
    /// Its data directory (`$POWCHAIN_HOME/nodes/<port>`, or `networks/<name>/nodes/<port>`
    /// for a network other than the default one: see `powchain::home`).
    pub data_dir: PathBuf,
    /// Its log file (stderr).
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl TestNode {
    /// Returns the port it listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Returns the process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Tells whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Boxed error of the harness.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A network of real node processes in a temporary home.
#[derive(Debug)]
pub struct TestNetwork {
    home: tempfile::TempDir,
    bin: PathBuf,
    options: Options,
    nodes: Vec<TestNode>,
}

/// Most nodes [`TestNetwork::start`] launches at the same moment.
pub const START_AT_ONCE: usize = 32;

/// Tells whether the nodes at `addrs`, whose statuses list their peers, form one connected
/// graph (links count in both directions).
pub fn is_connected(addrs: &[String], statuses: &[Status]) -> bool {
    let index = |a: &str| addrs.iter().position(|x| x == a);
    let mut reached = vec![false; addrs.len()];
    let mut stack = vec![0];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut reached[i], true) {
            continue;
        }
        let out = statuses[i].peers.iter().filter_map(|p| index(p));
        let back = (0..addrs.len()).filter(|&j| statuses[j].peers.contains(&addrs[i]));
        stack.extend(out.chain(back).filter(|&j| !reached[j]));
    }
    addrs.is_empty() || reached.iter().all(|&r| r)
}

/// Resident memory in KiB of process `pid` (`"self"` for this one), from Linux's
/// `/proc/PID/status`; 0 where that cannot be read.
pub fn rss_kib(pid: impl std::fmt::Display) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The `p`-th percentile (0..=1) of `sorted`, nearest rank; `None` when it is empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let i = (last as f64 * p.clamp(0.0, 1.0)).round() as usize;
    sorted.get(i.min(last)).copied()
}

/// CPU time (user + system) process `pid` has used, from Linux's `/proc/PID/stat`; zero
/// where that cannot be read.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Reseals `block` after a change to it: its proof of work found again from nonce 0, so that it meets its own
/// difficulty and carries its true hash: a test's broken block then breaks only the rule
/// under test.
pub fn reseal(block: &mut powchain::Block) {
    block.nonce = 0;
    loop {
        let h = block.compute_hash();
        if h.leading_zero_bits() >= block.difficulty {
            block.hash = h;
            return;
        }
        block.nonce += 1;
    }
}

/// Polls `check` every 25 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl TestNetwork {
    /// Starts `options.nodes` nodes of the binary `bin` and waits until each listens. Nodes
    /// found through the registry (or isolated) are started together, at most
    /// [`START_AT_ONCE`] at a time, not one after the other; a line is started in order.
    pub async fn start(bin: impl AsRef<Path>, options: Options) -> Result<Self, Error> {
        let home = tempfile::Builder::new()
            .prefix("powchain-test-")
            .tempdir()?;
        let mut net = TestNetwork {
            home,
            bin: bin.as_ref().to_path_buf(),
            options: options.clone(),
            nodes: Vec::new(),
        };
        if options.topology == Topology::Line {
            for _ in 0..options.nodes {
                net.add_node(&[]).await?;
            }
            return Ok(net);
        }
        let mut pending: Vec<TestNode> = (0..options.nodes).map(|i| net.new_node(i, &[])).collect();
        for chunk in pending.chunks_mut(START_AT_ONCE) {
            let launched =
                futures::future::join_all(chunk.iter_mut().map(|n| net.launch(n, 0))).await;
            launched.into_iter().collect::<Result<Vec<()>, Error>>()?;
        }
        net.nodes = pending;
        Ok(net)
    }

    /// Starts one more node with `extra` flags; returns its index.
    pub async fn add_node(&mut self, extra: &[&str]) -> Result<usize, Error> {
        let i = self.nodes.len();
        let mut node = self.new_node(i, extra);
        self.launch(&mut node, 0).await?;
        self.nodes.push(node);
        Ok(i)
    }

    /// Describes node `i` (not started yet), with its flags.
    fn new_node(&self, i: usize, extra: &[&str]) -> TestNode {
        // The default data directory ($POWCHAIN_HOME/nodes/<port>), as users get it; known
        // once the node has bound its port.
        let data_dir = PathBuf::new();
        let mut args = vec![
            "--difficulty".to_owned(),
            self.options.difficulty.to_string(),
            "--threads".to_owned(),
            self.options.threads.to_string(),
        ];
        match self.options.topology {
            Topology::Registry => {}
            Topology::Line => {
                args.push("--no-registry".into());
                if let Some(prev) = self.nodes.last() {
                    args.push("--peer".into());
                    args.push(prev.addr.clone());
                }
            }
            Topology::Isolated => args.push("--no-registry".into()),
        }
        args.extend(self.options.args.iter().cloned());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let log = self.home.path().join(format!("node{i}.log"));
        TestNode {
            addr: String::new(),
            data_dir,
            log,
            args,
            child: None,
        }
    }

    async fn launch(&self, node: &mut TestNode, port: u16) -> Result<(), Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut command = Command::new(&self.bin);
        command
            .arg(port.to_string())
            .args(&node.args)
            .env("POWCHAIN_HOME", self.home.path())
            .env("RUST_LOG", self.log_filter())
            .stdin(Stdio::null())
            .stderr(log);
        let started = spawn_announced(&mut command, Duration::from_secs(60))
            .await
            .map_err(|e| {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                format!("{e}; its log ({}):\n{log}", node.log.display())
            })?;
        let child = started.child;
        node.addr = started.addr;
        // Each network has its own directory (powchain::home); the node wrote its cookie
        // into its own before it announced itself.
        let dirs = powchain::home::node_dirs(self.home.path(), node.port());
        node.data_dir = dirs
            .iter()
            .find(|d| d.join(powchain::client::COOKIE_FILE).is_file())
            .or(dirs.first())
            .cloned()
            .unwrap_or_else(|| powchain::home::node_dir_in(self.home.path(), node.port()));
        node.child = Some(child);
        Ok(())
    }

    fn log_filter(&self) -> String {
        self.options
            .log_filter
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".into())
    }

    /// Returns the temporary home (`POWCHAIN_HOME` of every node).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Returns the number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Tells whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Returns node `i`.
    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    /// Returns node `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        self.nodes[i].addr.clone()
    }

    /// Returns a client of node `i`, holding its cookie.
    pub fn client(&self, i: usize) -> NodeClient {
        let n = &self.nodes[i];
        NodeClient::new(n.addr.clone())
            .with_cookie(read_cookie(&n.data_dir))
            .with_mine_timeout(Duration::from_secs(120))
    }

    /// Returns the indices of running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// Waits until the running nodes form one connected graph in which every node has at
    /// least 2 peers (with the registry; 1 in a line; fewer when there are fewer nodes).
    /// Isolated nodes are not linked: this only checks that they answer.
    pub async fn wait_peered(&self, timeout: Duration) -> Result<(), Error> {
        let running = self.running();
        let want = match self.options.topology {
            Topology::Registry => running.len().saturating_sub(1).min(2),
            Topology::Line => usize::from(running.len() > 1),
            Topology::Isolated => 0,
        };
        let connected = self.options.topology != Topology::Isolated;
        wait_for(timeout, "nodes to be peered", || async {
            let statuses = self.statuses(&running).await?;
            let addrs: Vec<String> = running.iter().map(|&i| self.addr(i)).collect();
            // Links to stopped nodes that a node has not noticed yet do not count.
            let live = |s: &Status| s.peers.iter().filter(|p| addrs.contains(p)).count();
            if statuses.iter().any(|s| live(s) < want) {
                return None;
            }
            (!connected || is_connected(&addrs, &statuses)).then_some(())
        })
        .await
    }

    /// Returns the status of each of `nodes`, asked concurrently; `None` if one fails.
    pub async fn statuses(&self, nodes: &[usize]) -> Option<Vec<Status>> {
        let asked = nodes
            .iter()
            .map(|&i| async move { self.client(i).status().await.ok() });
        futures::future::join_all(asked).await.into_iter().collect()
    }

    /// Waits until every running node has the same tip; returns it.
    pub async fn wait_agree(&self, timeout: Duration) -> Result<BlockHash, Error> {
        let running = self.running();
        wait_for(timeout, "all nodes to agree on the tip", || async {
            let statuses = self.statuses(&running).await?;
            let tip = statuses.first()?.tip;
            statuses.iter().all(|s| s.tip == tip).then_some(tip)
        })
        .await
    }

    fn signal(&mut self, i: usize, sig: Signal) -> Result<Child, Error> {
        let child = self.nodes[i]
            .child
            .take()
            .ok_or(format!("node {i} is not running"))?;
        let pid = child.id().ok_or(format!("node {i} already exited"))?;
        powchain::process::signal(&child, sig)
            .map_err(|e| format!("kill({pid}, {sig:?}) failed: {e}"))?;
        Ok(child)
    }

    /// Stops node `i` with SIGTERM and waits for it to exit; returns its exit code.
    pub async fn stop(&mut self, i: usize) -> Result<Option<i32>, Error> {
        let mut child = self.signal(i, Signal::TERM)?;
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .map_err(|_| format!("node {i} did not exit within 30 s of SIGTERM"))??;
        Ok(status.code())
    }

    /// Kills node `i` with SIGKILL (a crash) and reaps it.
    pub async fn kill(&mut self, i: usize) -> Result<(), Error> {
        let mut child = self.signal(i, Signal::KILL)?;
        child.wait().await?;
        Ok(())
    }

    /// Starts node `i` again on the same port and data directory.
    pub async fn restart(&mut self, i: usize) -> Result<(), Error> {
        if self.nodes[i].is_running() {
            self.stop(i).await?;
        }
        let port = self.nodes[i].port();
        let mut node = std::mem::replace(
            &mut self.nodes[i],
            TestNode {
                addr: String::new(),
                data_dir: PathBuf::new(),
                log: PathBuf::new(),
                args: Vec::new(),
                child: None,
            },
        );
        let result = self.launch(&mut node, port).await;
        self.nodes[i] = node;
        result
    }

    /// Returns how node `i` exited, if it exited on its own (a crash or a clean stop).
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.nodes[i].child.as_mut()?.try_wait().ok().flatten()
    }

    /// Returns node `i`'s log so far (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}
