//! A deterministic simulation of a powchain network: the real node code (handler, peer
//! manager, sync, relay, chain, store) on turmoil's simulated hosts and TCP, one thread,
//! seeded. Only what [`powchain::env`] names differs: the network is turmoil's, time
//! is turmoil's, blocking work runs in place, and mining is a Poisson process of each
//! node's hash power that then finds a real block at a low difficulty.
//!
//! ```no_run
//! use powchain_testkit::sim::{Options, run};
//! let report = run(&Options { nodes: 32, ..Options::default() }).expect("invariants hold");
//! println!("{}", report.summary);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use powchain::block::{Block, BlockHash};
use powchain::chain::Blockchain;
use powchain::env::{Blocking, Conn, Env, Event, Listener, Net, Solve};
use powchain::frame::{HEADER_LEN, parse_header};
use powchain::node::{Config, Limits, Node};
use powchain::params::ChainParams;
use powchain::pow::{MineControl, Template};

/// The port every simulated node listens on (each host has an address of its own).
pub const PORT: u16 = 5001;
/// The simulated wall clock starts at 2026-01-01T00:00:00Z by default
/// ([`Options::epoch_secs`]), whatever the real date.
pub const EPOCH_SECS: u64 = 1_767_225_600;
/// How often the driver looks at the nodes' tips for agreement.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How often each host samples its address book.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Peers each node is given at start (as from DNS seeds); the rest it learns by gossip.
const SEEDS: usize = 4;

/// A partition of the network into two halves, from `at` for `lasting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// When it starts (simulated time since the start).
    pub at: Duration,
    /// How long it lasts.
    pub lasting: Duration,
}

impl FromStr for Partition {
    type Err = String;

    /// Parses `halves@120s+60s`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad partition {s:?}: want halves@START+LENGTH, e.g. halves@120s+60s");
        let rest = s.strip_prefix("halves@").ok_or_else(bad)?;
        let (at, lasting) = rest.split_once('+').ok_or_else(bad)?;
        Ok(Partition {
            at: parse_duration(at).map_err(|_| bad())?,
            lasting: parse_duration(lasting).map_err(|_| bad())?,
        })
    }
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {s:?}: want e.g. 250ms, 10s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("bad duration {s:?}: the unit is ms, s or m")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a latency range `20ms..300ms` (or one value).
pub fn parse_latency(s: &str) -> Result<(Duration, Duration), String> {
    parse_range(s, "latency", parse_duration)
}

/// Parses `LOW..HIGH` (or one value for both) with `parse`.
fn parse_range<T: PartialOrd>(
    s: &str,
    what: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<(T, T), String> {
    let (lo, hi) = s.split_once("..").unwrap_or((s, s));
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo > hi {
        return Err(format!(
            "bad {what} {s:?}: the low end is above the high end"
        ));
    }
    Ok((lo, hi))
}

/// Reads a data rate such as `10Mbit`, `1.5Gbit`, `800kbit` or `100000bit` (bits per
/// second); returns bytes per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, unit) = lower.split_at(
        lower
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(lower.len()),
    );
    let scale = match unit {
        "bit" | "bps" => 1.0,
        "kbit" | "kbps" => 1e3,
        "mbit" | "mbps" => 1e6,
        "gbit" | "gbps" => 1e9,
        _ => {
            return Err(format!(
                "bad rate {s:?}: want a number and bit, kbit, Mbit or Gbit (e.g. 10Mbit)"
            ));
        }
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("bad rate {s:?}"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(format!("bad rate {s:?}: it must be above zero"));
    }
    Ok(n * scale / 8.0)
}

/// Reads a range of per-node capacities, `LOW..HIGH` or one value for every node
/// (`10Mbit..100Mbit`, `50Mbit`); returns bytes per second.
pub fn parse_bandwidth(s: &str) -> Result<(f64, f64), String> {
    parse_range(s, "bandwidth", parse_rate)
}

/// Reads a size in bytes: `250`, `100KB`, `1MB`, `4MB` (decimal units, as block sizes are
/// quoted), or `1MiB` (binary).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "bad size {s:?}: want bytes, KB, MB, KiB or MiB (e.g. 1MB)"
            ));
        }
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("bad size {s:?}"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("bad size {s:?}"));
    }
    Ok((n * scale).round() as usize)
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes in the network.
    pub nodes: usize,
    /// Seed of every random choice: the same seed gives the same run.
    pub seed: u64,
    /// How long the nodes mine (simulated).
    pub duration: Duration,
    /// Mean time between blocks of the whole network.
    pub block_interval: Duration,
    /// One-way message latency range; each message draws from it (turmoil's exponential
    /// curve: most messages near the low end, a tail up to the high end).
    pub latency: (Duration, Duration),
    /// Per-node upload and download capacity in bytes per second, drawn uniformly from
    /// this range for each node (both directions the same); `None`: unlimited, latency
    /// only. A write waits for its sender's uplink and its receiver's downlink, queueing
    /// behind the writes before it on each, as on a NIC.
    pub bandwidth: Option<(f64, f64)>,
    /// Bytes of data in each mined block (padding added to the miner's record); 0: the
    /// record alone (about 40 bytes).
    pub block_size: usize,
    /// Blocks with less data than this are pushed whole, bigger ones announced (the
    /// node's `--push-below`); `None`: the node's default. `Some(usize::MAX)` pushes every
    /// block whole to every peer, as nodes of protocol version 1 do.
    pub push_below: Option<usize>,
    /// Fraction of TCP writes lost; TCP retransmits them, so each is delayed by a
    /// retransmission timeout (200 ms plus twice the highest latency).
    pub loss: f64,
    /// A partition into two halves.
    pub partition: Option<Partition>,
    /// Fraction of nodes that crash once and restart (with their store) at random times.
    pub churn: f64,
    /// Nodes that mine (the first ones), sharing the hash power equally; `None`: all.
    pub miners: Option<usize>,
    /// A selfish miner: node 0 mines with this share of the hash power and the node's
    /// `selfish` strategy; the other miners share the rest equally.
    pub selfish: Option<f64>,
    /// Shares of the hash power of the first nodes (pools), e.g. `[0.3, 0.2]`: node 0
    /// mines with 0.3, node 1 with 0.2, and the other miners share the rest equally.
    /// Empty: equal shares (or `selfish`).
    pub shares: Vec<f64>,
    /// Links each node dials.
    pub max_outbound: usize,
    /// Simulation step: message delivery and timers have this resolution.
    pub tick: Duration,
    /// Proof-of-work difficulty of the blocks (leading zero bits).
    pub difficulty: u32,
    /// After the run's duration and the last fault's healing, every live node must agree
    /// (hold one tip) within this; mining goes on meanwhile.
    pub settle: Duration,
    /// Where the nodes' stores go (a temporary directory, on /dev/shm when there is one).
    pub data_dir: Option<PathBuf>,
    /// The simulated wall clock's start, in Unix seconds: every clock a node reads (block
    /// timestamps, the two-hour rule, its store's check at a restart) is this plus
    /// simulated time, whatever the real date.
    pub epoch_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 32,
            seed: 1,
            duration: Duration::from_secs(120),
            block_interval: Duration::from_secs(10),
            latency: (Duration::from_millis(20), Duration::from_millis(300)),
            bandwidth: None,
            block_size: 0,
            push_below: None,
            loss: 0.0,
            partition: None,
            churn: 0.0,
            miners: None,
            selfish: None,
            shares: Vec::new(),
            max_outbound: 8,
            tick: Duration::from_millis(10),
            difficulty: 4,
            settle: Duration::from_secs(120),
            data_dir: None,
            epoch_secs: EPOCH_SECS,
        }
    }
}

impl Options {
    /// Returns the options as the summary echoes them.
    fn to_json(&self) -> Value {
        let mut options = json!({
            "nodes": self.nodes,
            "seed": self.seed,
            "minutes": self.duration.as_secs_f64() / 60.0,
            "block_interval_s": self.block_interval.as_secs_f64(),
            "latency_ms": [self.latency.0.as_millis() as u64, self.latency.1.as_millis() as u64],
            "loss": self.loss,
            "partition": self.partition.map(|p| json!({
                "at_s": p.at.as_secs_f64(), "lasting_s": p.lasting.as_secs_f64()
            })),
            "churn": self.churn,
            "miners": self.miners.unwrap_or(self.nodes),
            "max_outbound": self.max_outbound,
            "tick_ms": self.tick.as_millis() as u64,
            "difficulty": self.difficulty,
        });
        // Only when set: without them a run and its summary are as they always were.
        if let Some((lo, hi)) = self.bandwidth {
            options["bandwidth_mbit"] = json!([round3(lo * 8e-6), round3(hi * 8e-6)]);
        }
        if self.block_size > 0 {
            options["block_size"] = json!(self.block_size);
        }
        if let Some(push_below) = self.push_below {
            options["push_below"] = json!(push_below);
        }
        if !self.shares.is_empty() {
            options["shares"] = json!(self.shares);
        }
        if let Some(alpha) = self.selfish {
            options["selfish"] = json!(alpha);
        }
        options
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Report {
    /// The summary: the same for the same options and seed, byte for byte.
    pub summary: Value,
    /// Wall-clock figures of the run (these vary from run to run).
    pub speed: Value,
    /// Curves of the run, for plots.
    pub series: Series,
}

/// Curves of a run, for plots (`powchain_testkit::report`).
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// For k = 1..=nodes, the median over the final chain's blocks of the seconds from a
    /// block's miner committing it to its k-th node committing it (shorter when some
    /// block reached fewer nodes).
    pub propagation: Vec<f64>,
    /// Every 5 simulated seconds: (seconds, highest height in the first half of the
    /// nodes, highest in the second half), the halves of `--partition`.
    pub heights: Vec<(f64, u64, u64)>,
}

/// An invariant that broke, with the seed to replay it.
#[derive(Debug)]
pub struct Failure {
    /// The run's seed.
    pub seed: u64,
    /// What broke.
    pub reason: String,
    /// The summary so far.
    pub summary: Value,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation failed with seed {} (replay: --seed {}): {}",
            self.seed, self.seed, self.reason
        )
    }
}

impl std::error::Error for Failure {}

// ---------------------------------------------------------------------------------------
// The environment of a simulated node.

/// Counts what a node sends: bytes and frames.
#[derive(Debug, Default)]
struct Traffic {
    bytes: AtomicU64,
    frames: AtomicU64,
}

/// Every host's upload and download capacity, and when each is next free.
///
/// A write of `n` bytes from A to B starts when A's uplink is free and takes `n / up(A)`
/// on it; it reaches B when B's downlink, free from that start on, has taken it at
/// `down(B)` too, and no sooner than the last byte left A. The writer waits for that, then
/// turmoil adds the message's latency. So a node sending one block to eight peers sends
/// them one after another, and a node that many send to at once receives them one after
/// another. TCP's slow start, its fair sharing of a link between flows and congestion in
/// the network's core are not modelled: a link is a FIFO at its full rate.
#[derive(Debug)]
struct Pipes {
    state: Mutex<PipeState>,
    /// Waits shorter than half a tick are not slept (they would round up to a whole
    /// tick); they are still booked, so many of them add up to a wait.
    min_wait: Duration,
}

#[derive(Debug, Default)]
struct PipeState {
    index: std::collections::HashMap<IpAddr, usize>,
    /// Bytes per second of each node.
    rate: Vec<f64>,
    up_free: Vec<Duration>,
    down_free: Vec<Duration>,
}

impl Pipes {
    fn new(rate: Vec<f64>, tick: Duration) -> Self {
        let n = rate.len();
        Pipes {
            state: Mutex::new(PipeState {
                index: Default::default(),
                rate,
                up_free: vec![Duration::ZERO; n],
                down_free: vec![Duration::ZERO; n],
            }),
            min_wait: tick / 2,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that node `i` is at `ip`.
    fn place(&self, i: usize, ip: IpAddr) {
        self.lock().index.insert(ip, i);
    }

    /// Books `bytes` from `from` to `to`; returns how long the writer waits, if worth a
    /// sleep.
    fn book(&self, from: IpAddr, to: IpAddr, bytes: usize) -> Option<Duration> {
        let now = now();
        let mut s = self.lock();
        let (&a, &b) = (s.index.get(&from)?, s.index.get(&to)?);
        if a == b {
            return None;
        }
        let n = bytes as f64;
        let start = now.max(s.up_free[a]);
        let sent = start + Duration::from_secs_f64(n / s.rate[a]);
        s.up_free[a] = sent;
        let taken = start.max(s.down_free[b]) + Duration::from_secs_f64(n / s.rate[b]);
        let done = sent.max(taken);
        s.down_free[b] = done;
        let wait = done.saturating_sub(now);
        (wait >= self.min_wait).then_some(wait)
    }
}

/// Where a simulated stream's bytes go, for the bandwidth model.
#[derive(Debug, Clone)]
struct Route {
    pipes: Arc<Pipes>,
    from: IpAddr,
    to: IpAddr,
}

/// turmoil's TCP as a [`Net`], for the host at `ip`.
#[derive(Debug)]
struct SimNet {
    ip: IpAddr,
    traffic: Arc<Traffic>,
    lossy: Lossy,
    pipes: Option<Arc<Pipes>>,
}

/// How writes are lost (and retransmitted later).
#[derive(Debug, Clone)]
struct Lossy {
    rate: f64,
    rto: Duration,
    rng: Arc<Mutex<StdRng>>,
}

impl Net for SimNet {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<Conn>> {
        let addr = addr.to_owned();
        let (traffic, lossy) = (self.traffic.clone(), self.lossy.clone());
        let (pipes, from) = (self.pipes.clone(), self.ip);
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            let route = match (pipes, stream.peer_addr()) {
                (Some(pipes), Ok(to)) => Some(Route {
                    pipes,
                    from,
                    to: to.ip(),
                }),
                _ => None,
            };
            Ok(Conn::Other(Box::new(Counted::new(
                stream, traffic, lossy, route,
            ))))
        })
    }

    fn is_local_ip(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || ip == self.ip
    }
}

/// turmoil's listener as a [`Listener`].
struct SimListener {
    inner: turmoil::net::TcpListener,
    traffic: Arc<Traffic>,
    lossy: Lossy,
    /// The bandwidth model and this host's address in it.
    pipes: Option<(Arc<Pipes>, IpAddr)>,
}

impl Listener for SimListener {
    type Stream = Counted<turmoil::net::TcpStream>;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, addr) = self.inner.accept().await?;
        let route = self.pipes.as_ref().map(|(pipes, from)| Route {
            pipes: pipes.clone(),
            from: *from,
            to: addr.ip(),
        });
        Ok((
            Counted::new(stream, self.traffic.clone(), self.lossy.clone(), route),
            addr,
        ))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A stream that counts the frames and bytes written, delays lost writes by a
/// retransmission timeout, and writes at the rate its route's links allow.
struct Counted<S> {
    inner: S,
    traffic: Arc<Traffic>,
    lossy: Lossy,
    route: Option<Route>,
    /// A write waiting for its links, and whether the write pending now has been booked.
    transmit: Option<Pin<Box<tokio::time::Sleep>>>,
    booked: bool,
    /// Header bytes of the frame being written, or the payload bytes still to come.
    header: Vec<u8>,
    payload_left: u64,
    /// A lost write waiting for its retransmission.
    retransmit: Option<Pin<Box<tokio::time::Sleep>>>,
    retransmitted: bool,
}

impl<S> Counted<S> {
    fn new(inner: S, traffic: Arc<Traffic>, lossy: Lossy, route: Option<Route>) -> Self {
        Counted {
            inner,
            traffic,
            lossy,
            route,
            transmit: None,
            booked: false,
            header: Vec::with_capacity(HEADER_LEN),
            payload_left: 0,
            retransmit: None,
            retransmitted: false,
        }
    }

    /// Follows the framing of written bytes to count frames.
    fn count(&mut self, mut buf: &[u8]) {
        self.traffic
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        while !buf.is_empty() {
            if self.payload_left > 0 {
                let n = (self.payload_left as usize).min(buf.len());
                self.payload_left -= n as u64;
                buf = &buf[n..];
                continue;
            }
            let n = (HEADER_LEN - self.header.len()).min(buf.len());
            self.header.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.header.len() == HEADER_LEN {
                self.traffic.frames.fetch_add(1, Ordering::Relaxed);
                self.payload_left = parse_header(&self.header).unwrap_or(0);
                self.header.clear();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.retransmit.is_none() && !this.retransmitted && this.lossy.rate > 0.0 {
            let lost = this
                .lossy
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .random_bool(this.lossy.rate.min(1.0));
            if lost {
                this.retransmit = Some(Box::pin(tokio::time::sleep(this.lossy.rto)));
            }
        }
        if let Some(timer) = &mut this.retransmit {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.retransmit = None;
            this.retransmitted = true;
        }
        if !this.booked
            && let Some(route) = &this.route
        {
            this.booked = true;
            if let Some(wait) = route.pipes.book(route.from, route.to, buf.len()) {
                this.transmit = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        if let Some(timer) = &mut this.transmit {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.transmit = None;
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.retransmitted = false;
            this.booked = false;
            this.count(&buf[..n]);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Mining as a Poisson process: each attempt waits an exponential time of the node's
/// rate, then finds a real block at the chain's (low) difficulty, on this thread.
#[derive(Debug)]
struct PoissonSolver {
    /// Blocks per simulated second this node finds.
    rate: f64,
    rng: Mutex<StdRng>,
}

impl Solve for PoissonSolver {
    fn solve(
        &self,
        template: Template,
        _threads: usize,
        control: Arc<MineControl>,
        wall_clock: fn() -> i64,
    ) -> BoxFuture<'static, Option<Block>> {
        let u: f64 = self.rng.lock().unwrap_or_else(|e| e.into_inner()).random();
        let wait = if self.rate > 0.0 {
            Some(Duration::from_secs_f64(
                (-(1.0 - u).ln() / self.rate).min(1e9),
            ))
        } else {
            None
        };
        Box::pin(async move {
            // No hash power: nothing is ever found (data left behind waits for a miner).
            let Some(wait) = wait else {
                return futures::future::pending().await;
            };
            tokio::time::sleep(wait).await;
            if control.cancel.load(Ordering::Relaxed) {
                return None;
            }
            powchain::pow::mine_with_clock(&template, 1, &control, wall_clock)
        })
    }
}

/// The simulated wall clock: the epoch plus simulated time.
fn sim_clock() -> i64 {
    turmoil::since_epoch().map_or_else(powchain::block::unix_now, |d| d.as_secs() as i64)
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// What the run records.

#[derive(Debug)]
struct BlockRecord {
    height: u64,
    /// When the first node (its miner) committed it.
    first: Duration,
    /// When each node first committed it, in order.
    reached: Vec<Duration>,
    nodes: BTreeSet<usize>,
}

#[derive(Debug, Default)]
struct Stats {
    blocks: BTreeMap<BlockHash, BlockRecord>,
    /// (seconds, highest height of each half), sampled.
    heights: Vec<(f64, u64, u64)>,
    /// (node, hash, data) of every block a node mined and committed.
    mined: Vec<(usize, BlockHash, String)>,
    reorg_depths: BTreeMap<usize, u64>,
    /// Each node's tip (height, hash) as of its last commit or start.
    tips: Vec<(u64, BlockHash)>,
    peak_book: usize,
    peak_pending_blocks: usize,
    peak_pending_bytes: usize,
    /// Nodes each node has started (its restarts included).
    starts: Vec<u64>,
}

impl Stats {
    fn on_event(&mut self, node: usize, t: Duration, event: Event<'_>) {
        match event {
            Event::Committed { blocks, left, .. } => {
                for b in blocks {
                    let record = self.blocks.entry(b.hash).or_insert_with(|| BlockRecord {
                        height: b.index,
                        first: t,
                        reached: Vec::new(),
                        nodes: BTreeSet::new(),
                    });
                    if record.nodes.insert(node) {
                        record.reached.push(t);
                    }
                }
                if let Some(last) = blocks.last() {
                    self.tips[node] = (last.index, last.hash);
                }
                if left > 0 {
                    *self.reorg_depths.entry(left).or_default() += 1;
                }
            }
            Event::Mined { block } => {
                self.mined
                    .push((node, block.hash, block.data.as_str().to_owned()));
            }
            Event::Pending { blocks, bytes } => {
                self.peak_pending_blocks = self.peak_pending_blocks.max(blocks);
                self.peak_pending_bytes = self.peak_pending_bytes.max(bytes);
            }
        }
    }
}

/// What the hosts share with the driver.
struct Shared {
    stats: Mutex<Stats>,
    /// The node running on each host, while it runs.
    nodes: Mutex<Vec<Weak<Node>>>,
    traffic: Vec<Arc<Traffic>>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn host_name(i: usize) -> String {
    format!("n{i}")
}

/// Runs a simulation; `Err` when an invariant breaks.
pub fn run(options: &Options) -> Result<Report, Failure> {
    let started = Instant::now();
    let n = options.nodes.max(2);
    let fail = |reason: String, summary: Value| Failure {
        seed: options.seed,
        reason,
        summary,
    };
    let base = match &options.data_dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None if std::path::Path::new("/dev/shm").is_dir() => tempfile::tempdir_in("/dev/shm"),
        None => tempfile::tempdir(),
    }
    .map_err(|e| fail(format!("cannot make a data directory: {e}"), Value::Null))?;

    let mut rng = StdRng::seed_from_u64(options.seed);
    let miners = options.miners.unwrap_or(n).clamp(1, n);
    let interval = options.block_interval.as_secs_f64().max(1e-3);
    // Blocks per second each node finds: the given shares to the first nodes (the selfish
    // pool's to node 0), the rest split equally among the other miners.
    let given: Vec<f64> = match options.selfish {
        Some(alpha) => vec![alpha],
        None => options.shares.clone(),
    };
    let given_sum: f64 = given.iter().sum();
    let others = miners.saturating_sub(given.len()).max(1) as f64;
    let rates: Vec<f64> = (0..n)
        .map(|i| match given.get(i) {
            Some(share) => share / interval,
            None if i >= miners => 0.0,
            None => (1.0 - given_sum).max(0.0) / (interval * others),
        })
        .collect();
    let rto = Duration::from_millis(200) + options.latency.1 * 2;
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats {
            tips: vec![(0, BlockHash::default()); n],
            starts: vec![0; n],
            ..Stats::default()
        }),
        nodes: Mutex::new((0..n).map(|_| Weak::new()).collect()),
        traffic: (0..n).map(|_| Arc::new(Traffic::default())).collect(),
    });

    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(u64::MAX / 4))
        .tick_duration(options.tick)
        .min_message_latency(options.latency.0)
        .max_message_latency(options.latency.1)
        .epoch(UNIX_EPOCH + Duration::from_secs(options.epoch_secs))
        .tcp_capacity(4096)
        .rng_seed(rng.random())
        .build();

    // Each node is given a few random others, as a DNS seed would.
    let seeds: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut picked = BTreeSet::new();
            while picked.len() < SEEDS.min(n - 1) {
                let j = rng.random_range(0..n);
                if j != i {
                    picked.insert(j);
                }
            }
            picked.into_iter().collect()
        })
        .collect();
    let mut params = ChainParams::with_difficulty(options.difficulty);
    // A block carries its data and its fixed fields (under 400 bytes).
    params.max_block_size = params.max_block_size.max(options.block_size + 1024);
    // Drawn from a stream of its own, so that runs without it draw what they always drew.
    let pipes = options.bandwidth.map(|(lo, hi)| {
        let mut draw = StdRng::seed_from_u64(options.seed ^ 0xba4d_0000_0000_0001);
        let rates = (0..n)
            .map(|_| {
                if hi > lo {
                    draw.random_range(lo..=hi)
                } else {
                    lo
                }
            })
            .collect();
        Arc::new(Pipes::new(rates, options.tick))
    });
    let mut ips = Vec::with_capacity(n);
    for (i, my_seeds) in seeds.into_iter().enumerate() {
        let name = host_name(i);
        let host_seed: u64 = rng.random();
        let shared = shared.clone();
        let dir = base.path().join(&name);
        let params = params.clone();
        let rate = rates[i];
        let selfish = options.selfish.is_some() && i == 0;
        let max_outbound = options.max_outbound;
        let loss = options.loss;
        let (pipes, block_size, push_below) =
            (pipes.clone(), options.block_size, options.push_below);
        sim.host(name.as_str(), move || {
            let (shared, dir, params, my_seeds, pipes) = (
                shared.clone(),
                dir.clone(),
                params.clone(),
                my_seeds.clone(),
                pipes.clone(),
            );
            async move {
                host(HostSetup {
                    index: i,
                    seed: host_seed,
                    shared,
                    dir,
                    params,
                    seeds: my_seeds,
                    rate,
                    selfish,
                    max_outbound,
                    loss,
                    rto,
                    pipes,
                    block_size,
                    push_below,
                })
                .await
            }
        });
        ips.push(sim.lookup(name.as_str()));
    }

    // The faults, as steps of the driver.
    let mut crashes: Vec<(Duration, Duration, usize)> = Vec::new();
    let churned = ((n as f64) * options.churn.clamp(0.0, 1.0)).round() as usize;
    if churned > 0 {
        let mut pool: Vec<usize> = (0..n).collect();
        let span = options.duration.as_secs_f64();
        for k in 0..churned {
            let j = rng.random_range(k..n);
            pool.swap(k, j);
            let at = Duration::from_secs_f64(rng.random_range(span * 0.1..span * 0.7));
            let down =
                Duration::from_secs_f64(rng.random_range(5.0..30.0f64.min(span * 0.25).max(6.0)));
            crashes.push((at, at + down, pool[k]));
        }
    }
    let halves = (&ips[..n / 2], &ips[n / 2..]);

    let mut agreed_after: Vec<Value> = Vec::new();
    let mut pending_heals: Vec<(String, Duration)> = Vec::new();
    let mut down: BTreeSet<usize> = BTreeSet::new();
    let mut partitioned = false;
    let mut last_check = Duration::ZERO;
    let mut elapsed = Duration::ZERO;
    let mut final_agreement: Option<Duration> = None;
    let last_fault_end = crashes
        .iter()
        .map(|c| c.1)
        .chain(options.partition.map(|p| p.at + p.lasting))
        .max()
        .unwrap_or_default();
    let deadline = options.duration.max(last_fault_end) + options.settle;
    let mut book_samples_at = Duration::ZERO;

    while elapsed < deadline {
        // Faults and heals due now.
        if let Some(p) = options.partition {
            if !partitioned && elapsed >= p.at && elapsed < p.at + p.lasting {
                for a in halves.0 {
                    for b in halves.1 {
                        sim.partition(*a, *b);
                    }
                }
                partitioned = true;
            } else if partitioned && elapsed >= p.at + p.lasting {
                for a in halves.0 {
                    for b in halves.1 {
                        sim.repair(*a, *b);
                    }
                }
                partitioned = false;
                let what = format!("partition healed at {:.0}s", elapsed.as_secs_f64());
                pending_heals.push((what, elapsed));
            }
        }
        for &(at, back, node) in &crashes {
            // Each churned node crashes once, at the step that reaches `at`.
            if !down.contains(&node) && elapsed >= at && elapsed < at + options.tick {
                // The process dies without closing its connections: what it would
                // send as it goes is lost (and so draws nothing from the network's
                // random stream, whatever order its tasks are dropped in). Peers
                // learn of it when they next write (the host answers with a reset)
                // or by their timeouts.
                let ip = ips[node];
                let mut pairs = Vec::new();
                sim.links(|links| {
                    for link in links {
                        let (a, b) = link.pair();
                        if a == ip || b == ip {
                            pairs.push((a, b));
                        }
                    }
                });
                for (a, b) in &pairs {
                    sim.partition(*a, *b);
                }
                sim.crash(host_name(node).as_str());
                let split = |x: &IpAddr| halves.0.contains(x);
                for (a, b) in &pairs {
                    if !(partitioned && split(a) != split(b)) {
                        sim.repair(*a, *b);
                    }
                }
                down.insert(node);
            } else if down.contains(&node) && elapsed >= back {
                sim.bounce(host_name(node).as_str());
                down.remove(&node);
                let what = format!(
                    "{} restarted at {:.0}s",
                    host_name(node),
                    elapsed.as_secs_f64()
                );
                pending_heals.push((what, elapsed));
            }
        }

        if let Err(e) = sim.step() {
            return Err(fail(format!("a host failed: {e}"), Value::Null));
        }
        elapsed += options.tick;

        if elapsed - last_check >= CHECK_EVERY {
            last_check = elapsed;
            let agree = {
                let stats = shared.stats();
                let mut live = (0..n)
                    .filter(|i| !down.contains(i))
                    .map(|i| stats.tips[i].1);
                let first = live.next();
                first.is_some() && live.all(|t| Some(t) == first)
            };
            if agree && !partitioned {
                for (what, at) in pending_heals.drain(..) {
                    agreed_after.push(json!({
                        "fault": what,
                        "agreed_after_s": round3((elapsed - at).as_secs_f64()),
                    }));
                }
                if elapsed >= options.duration.max(last_fault_end) && down.is_empty() {
                    // Healed, restarted, agreed: the run is over. Mining goes on until
                    // then, as on a real network: a tie between two blocks of equal work
                    // is broken only by the next block.
                    final_agreement = Some(elapsed);
                    break;
                }
            }
        }
        if elapsed - book_samples_at >= SAMPLE_EVERY {
            book_samples_at = elapsed;
            let nodes = shared.nodes.lock().unwrap_or_else(|e| e.into_inner());
            let peak = nodes
                .iter()
                .filter_map(Weak::upgrade)
                .map(|node| node.address_book_len())
                .max()
                .unwrap_or(0);
            let mut stats = shared.stats();
            stats.peak_book = stats.peak_book.max(peak);
            let half =
                |r: std::ops::Range<usize>| stats.tips[r].iter().map(|t| t.0).max().unwrap_or(0);
            let sample = (
                round3(elapsed.as_secs_f64()),
                half(0..n / 2),
                half(n / 2..n),
            );
            stats.heights.push(sample);
        }
    }
    let wall = started.elapsed();

    // The summary, then the invariants.
    let live: Vec<Arc<Node>> = {
        let nodes = shared.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.iter().filter_map(Weak::upgrade).collect()
    };
    let stats = shared.stats();
    // The chain each distinct tip ends, read from a node that holds it.
    let mut chains: BTreeMap<BlockHash, BTreeSet<BlockHash>> = BTreeMap::new();
    for node in &live {
        let (_, tip) = node.tip();
        chains
            .entry(tip)
            .or_insert_with(|| node.chain_blocks().iter().map(|b| b.hash).collect());
    }
    let races = options.selfish.and_then(|_| {
        let nodes = shared.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes[0].upgrade()?.selfish_races()
    });
    let (summary, series) = summarize(
        options,
        n,
        &stats,
        (&chains, races),
        &shared.traffic,
        &agreed_after,
        final_agreement,
    );
    let speed = json!({
        "wall_s": round3(wall.as_secs_f64()),
        "simulated_s": round3(elapsed.as_secs_f64()),
        "sim_s_per_wall_s": round3(elapsed.as_secs_f64() / wall.as_secs_f64().max(1e-9)),
        "peak_rss_mib": peak_rss_mib(),
    });
    if final_agreement.is_none() {
        return Err(fail(
            format!(
                "live nodes did not agree within {:.0} s of the end of the run and the last \
                 fault healing ({} of {n} nodes running)",
                options.settle.as_secs_f64(),
                live.len()
            ),
            summary,
        ));
    }
    if live.len() != n {
        return Err(fail(
            format!("only {} of {n} nodes run at the end", live.len()),
            summary,
        ));
    }
    let reference = live[0].chain_blocks();
    let in_chain: BTreeSet<&str> = reference.iter().map(|b| b.data.as_str()).collect();
    for node in &live {
        let blocks = node.chain_blocks();
        // The run is over: "now" is the simulated clock's end, no real-clock read (the
        // newest block was stamped by it).
        let end = blocks
            .iter()
            .filter_map(|b| b.timestamp.unix())
            .max()
            .unwrap_or(0);
        if let Err(e) = Blockchain::from_blocks_at(params.clone(), blocks, end) {
            return Err(fail(
                format!("a node's chain does not validate: {e}"),
                summary,
            ));
        }
    }
    // Every block a node mined is in the chain, or its data is, or it is queued (durably)
    // to be mined again.
    let mut queued: BTreeSet<String> = BTreeSet::new();
    for node in &live {
        match node.queued_data() {
            Ok(data) => queued.extend(data.into_iter().map(|d| d.as_str().to_owned())),
            Err(e) => return Err(fail(format!("cannot read a queue: {e}"), summary)),
        }
    }
    for (miner, hash, data) in &stats.mined {
        if !in_chain.contains(data.as_str()) && !queued.contains(data) {
            return Err(fail(
                format!(
                    "block {} mined by {} is lost: neither it nor its data is in the final \
                     chain, and no node queued the data to be mined again",
                    hash.short(),
                    host_name(*miner)
                ),
                summary,
            ));
        }
    }
    if stats.peak_book > powchain::node::MAX_ADDRS {
        return Err(fail(
            format!("an address book grew to {}", stats.peak_book),
            summary,
        ));
    }
    if stats.peak_pending_blocks > powchain::node::MAX_PENDING_BLOCKS
        || stats.peak_pending_bytes > powchain::node::MAX_PENDING_BYTES
    {
        return Err(fail("a pending branch outgrew its caps".into(), summary));
    }
    drop(stats);
    drop(live);
    drop(sim);
    Ok(Report {
        summary,
        speed,
        series,
    })
}

struct HostSetup {
    index: usize,
    seed: u64,
    shared: Arc<Shared>,
    dir: PathBuf,
    params: ChainParams,
    seeds: Vec<usize>,
    rate: f64,
    selfish: bool,
    max_outbound: usize,
    loss: f64,
    rto: Duration,
    pipes: Option<Arc<Pipes>>,
    block_size: usize,
    push_below: Option<usize>,
}

/// One host's software: a node, and its miner's loop.
async fn host(setup: HostSetup) -> turmoil::Result {
    let i = setup.index;
    let ip = turmoil::lookup(host_name(i));
    if let Some(pipes) = &setup.pipes {
        pipes.place(i, ip);
    }
    let life = {
        let mut stats = setup.shared.stats();
        stats.starts[i] += 1;
        stats.starts[i]
    };
    let traffic = setup.shared.traffic[i].clone();
    // Each life of the host draws from its own stream, the same on every run.
    let rng_seed = setup.seed ^ life.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let lossy = Lossy {
        rate: setup.loss,
        rto: setup.rto,
        rng: Arc::new(Mutex::new(StdRng::seed_from_u64(rng_seed ^ 1))),
    };
    let observer = {
        let shared = setup.shared.clone();
        Arc::new(move |event: Event<'_>| shared.stats().on_event(i, now(), event))
    };
    let mut config = Config::new(setup.dir.clone());
    config.params = setup.params.clone();
    config.threads = 1;
    config.peers = setup
        .seeds
        .iter()
        .map(|j| format!("{}:{PORT}", turmoil::lookup(host_name(*j))))
        .collect();
    config.advertise = Some(format!("{ip}:{PORT}"));
    if let Some(push_below) = setup.push_below {
        config.push_below = push_below;
    }
    if setup.selfish {
        config.strategy = powchain::node::Strategy::Selfish;
    }
    config.limits = Limits {
        max_outbound: setup.max_outbound,
        ..Limits::default()
    };
    config.env = Env {
        net: Arc::new(SimNet {
            ip,
            traffic: traffic.clone(),
            lossy: lossy.clone(),
            pipes: setup.pipes.clone(),
        }),
        wall_clock: sim_clock,
        blocking: Blocking::Inline,
        solver: Arc::new(PoissonSolver {
            rate: setup.rate,
            rng: Mutex::new(StdRng::seed_from_u64(rng_seed ^ 2)),
        }),
        seed: Some(rng_seed ^ 3),
        observer: Some(observer),
    };
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let listen = listener.local_addr()?;
    let node = Node::open(config, listen, CancellationToken::new()).await?;
    setup.shared.stats().tips[i] = node.tip();
    setup.shared.nodes.lock().unwrap_or_else(|e| e.into_inner())[i] = Arc::downgrade(&node);
    if setup.rate > 0.0 {
        let miner = node.clone();
        let block_size = setup.block_size;
        tokio::spawn(async move {
            for k in 0u64.. {
                let mut data = json!({"miner": i, "life": life, "n": k});
                let record = data.to_string().len() + r#","pad":"""#.len();
                if block_size > record {
                    data["pad"] = json!("x".repeat(block_size - record));
                }
                if miner.mine(data).await.is_err() {
                    return;
                }
            }
        });
    }
    powchain::node::serve(
        node,
        SimListener {
            inner: listener,
            traffic,
            lossy,
            pipes: setup.pipes.map(|p| (p, ip)),
        },
    )
    .await;
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Returns the `p`-th percentile (0..=1) of sorted `v`.
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    Some(v[i.min(v.len() - 1)])
}

fn spread(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({
        "blocks": v.len(),
        "min": v.first().copied().map(round3),
        "p50": percentile(&v, 0.5).map(round3),
        "p90": percentile(&v, 0.9).map(round3),
        "max": v.last().copied().map(round3),
    })
}

fn summarize(
    options: &Options,
    n: usize,
    stats: &Stats,
    (chains, races): (
        &BTreeMap<BlockHash, BTreeSet<BlockHash>>,
        Option<powchain::node::Races>,
    ),
    traffic: &[Arc<Traffic>],
    agreed_after: &[Value],
    final_agreement: Option<Duration>,
) -> (Value, Series) {
    // The chain most nodes hold at the end decides which blocks are stale.
    let mut tip_count: BTreeMap<BlockHash, usize> = BTreeMap::new();
    for t in &stats.tips {
        *tip_count.entry(t.1).or_default() += 1;
    }
    let final_tip = tip_count
        .iter()
        .max_by_key(|(h, c)| (**c, std::cmp::Reverse(**h)))
        .map(|(h, _)| *h)
        .unwrap_or_default();
    let final_height = stats
        .tips
        .iter()
        .find(|t| t.1 == final_tip)
        .map_or(0, |t| t.0);
    // Blocks of the final chain, as a node at the final tip holds it; without one (a failed
    // run), the blocks every node that ends at the final tip once committed.
    let in_chain: BTreeSet<BlockHash> = match chains.get(&final_tip) {
        Some(chain) => stats
            .blocks
            .keys()
            .filter(|h| chain.contains(*h))
            .copied()
            .collect(),
        None => {
            let holders: BTreeSet<usize> =
                (0..n).filter(|i| stats.tips[*i].1 == final_tip).collect();
            stats
                .blocks
                .iter()
                .filter(|(_, r)| r.height <= final_height && holders.is_subset(&r.nodes))
                .map(|(h, _)| *h)
                .collect()
        }
    };
    let mined = stats.mined.len();
    let stale = stats
        .mined
        .iter()
        .filter(|(_, h, _)| !in_chain.contains(h))
        .count();
    let mut to = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    // The k-th node's delay of each block.
    let mut kth: Vec<Vec<f64>> = vec![Vec::new(); n];
    for hash in &in_chain {
        let r = &stats.blocks[hash];
        // Hosts step one after another, so a node's commit may be stamped a moment before
        // the miner's: in order of arrival, and never before it.
        let mut arrivals: Vec<f64> = r
            .reached
            .iter()
            .map(|t| t.saturating_sub(r.first).as_secs_f64())
            .collect();
        arrivals.sort_by(f64::total_cmp);
        for (k, d) in arrivals.into_iter().enumerate().take(n) {
            kth[k].push(d);
        }
        for (k, fraction) in [0.5, 0.9, 0.99, 1.0].iter().enumerate() {
            let need = ((n as f64) * fraction).ceil() as usize;
            if let Some(t) = r.reached.get(need.max(1) - 1) {
                to[k].push((*t - r.first).as_secs_f64());
            }
        }
    }
    let frames: u64 = traffic
        .iter()
        .map(|t| t.frames.load(Ordering::Relaxed))
        .sum();
    let bytes: u64 = traffic
        .iter()
        .map(|t| t.bytes.load(Ordering::Relaxed))
        .sum();
    let per = (n as f64) * (in_chain.len().max(1) as f64);
    let reorgs: u64 = stats.reorg_depths.values().sum();
    let [to50, to90, to99, to100] = to;
    let selfish = options.selfish.map(|alpha| {
        let (pool, honest): (Vec<_>, Vec<_>) = stats.mined.iter().partition(|(m, _, _)| *m == 0);
        let pool_in_chain = pool.iter().filter(|(_, h, _)| in_chain.contains(h)).count();
        let honest_stale = honest
            .iter()
            .filter(|(_, h, _)| !in_chain.contains(h))
            .count();
        let races = races.unwrap_or_default();
        let ended = races.honest_on_pool + races.honest_on_honest;
        let gamma = (ended > 0).then(|| races.honest_on_pool as f64 / ended as f64);
        json!({
            "alpha": alpha,
            "pool_mined": pool.len(),
            "pool_in_chain": pool_in_chain,
            "relative_revenue": round3(pool_in_chain as f64 / in_chain.len().max(1) as f64),
            "theory_gamma_0": round3(selfish_revenue(alpha, 0.0)),
            "races": {
                "pool_won": races.pool_won,
                "honest_on_pool": races.honest_on_pool,
                "honest_on_honest": races.honest_on_honest,
            },
            "gamma_measured": gamma.map(round3),
            "theory_at_measured_gamma": gamma.map(|g| round3(selfish_revenue(alpha, g))),
            "honest_stale_rate": round3(honest_stale as f64 / honest.len().max(1) as f64),
        })
    });
    let propagation: Vec<f64> = kth
        .into_iter()
        .take_while(|v| !v.is_empty())
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.5).map_or(0.0, round3)
        })
        .collect();
    // The mean over nodes of their typical delay: the area left of the curve above (the
    // median over blocks keeps out the blocks that reached a node late because it was on
    // another branch until a fork resolved).
    let mean_delay =
        (!propagation.is_empty()).then(|| round3(propagation.iter().sum::<f64>() / n as f64));
    let mut summary = json!({
        "options": options.to_json(),
        "blocks": {
            "mined": mined,
            "in_final_chain": in_chain.len(),
            "stale": stale,
            "stale_rate": round3(stale as f64 / mined.max(1) as f64),
        },
        "propagation_s": {
            "to_50pct": spread(to50),
            "to_90pct": spread(to90),
            "to_99pct": spread(to99),
            "to_100pct": spread(to100),
            "mean_delay": mean_delay,
        },
        "reorgs": {
            "count": reorgs,
            "max_depth": stats.reorg_depths.keys().max().copied().unwrap_or(0),
            "by_depth": stats.reorg_depths.iter().map(|(d, c)| (d.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
        },
        "agreement": agreed_after,
        "traffic_per_node_per_block": {
            "messages": round3(frames as f64 / per),
            "bytes": round3(bytes as f64 / per),
        },
        "traffic_per_node_per_mined_block": {
            "bytes": round3(bytes as f64 / ((n as f64) * (mined.max(1) as f64))),
        },
        "peak": {
            "address_book": stats.peak_book,
            "pending_blocks": stats.peak_pending_blocks,
            "pending_bytes": stats.peak_pending_bytes,
        },
        "final": {
            "height": final_height,
            "tip": final_tip.to_hex(),
            "agreed_at_s": final_agreement.map(|t| round3(t.as_secs_f64())),
            "restarts": stats.starts.iter().map(|s| s.saturating_sub(1)).sum::<u64>(),
        },
    });
    if let Some(selfish) = selfish {
        summary["selfish"] = selfish;
    }
    if !options.shares.is_empty() {
        // Each pool's blocks: a big miner never competes with itself, so it loses fewer.
        let pools: Vec<Value> = options
            .shares
            .iter()
            .enumerate()
            .map(|(node, share)| {
                let mined: Vec<_> = stats.mined.iter().filter(|m| m.0 == node).collect();
                let kept = mined.iter().filter(|m| in_chain.contains(&m.1)).count();
                json!({
                    "node": node,
                    "share": share,
                    "mined": mined.len(),
                    "in_final_chain": kept,
                    "stale_rate": round3(1.0 - kept as f64 / mined.len().max(1) as f64),
                    "relative_revenue": round3(kept as f64 / in_chain.len().max(1) as f64),
                })
            })
            .collect();
        summary["pools"] = json!(pools);
    }

    let series = Series {
        propagation,
        heights: stats.heights.clone(),
    };
    (summary, series)
}

/// A selfish pool's relative revenue (its share of the blocks of the final chain) with
/// hash power share `alpha`, when a share `gamma` of the honest miners mines on its block
/// in a race: Eyal and Sirer, "Majority is not Enough" (2014), equation (8).
pub fn selfish_revenue(alpha: f64, gamma: f64) -> f64 {
    let a = alpha;
    (a * (1.0 - a).powi(2) * (4.0 * a + gamma * (1.0 - 2.0 * a)) - a.powi(3))
        / (1.0 - a * (1.0 + (2.0 - a) * a))
}

/// Returns the process's peak resident memory in MiB (Linux), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round3(kb / 1024.0))
}
