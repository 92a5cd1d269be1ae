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

mod invariants;
mod liars;
mod network;
mod parse;
mod solver;
mod stats;

pub use parse::{
    BlockSize, Crash, Crashes, MAX_SIM_BLOCK, Partition, parse_bandwidth, parse_block_size,
    parse_duration, parse_latency, parse_rate, parse_size,
};
pub use stats::selfish_revenue;

use network::{Lossy, Pipes, SimListener, SimNet, Traffic};
use solver::{PoissonSolver, now, sim_clock};
use stats::{Stats, peak_rss_mib, round3, summarize};

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
/// redb's page cache of each simulated node's store.
const SIM_STORE_CACHE: usize = 1 << 20;

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
    /// Crashes at given times (`--crash 3@60s+20s`); churn leaves these nodes alone.
    pub crashes: Vec<Crash>,
    /// Nodes that mine (the first ones), sharing the hash power equally; `None`: all.
    pub miners: Option<usize>,
    /// A selfish miner: node 0 mines with this share of the hash power and the node's
    /// `selfish` strategy; the other miners share the rest equally.
    pub selfish: Option<f64>,
    /// Shares of the hash power of the first nodes (pools), e.g. `[0.3, 0.2]`: node 0
    /// mines with 0.3, node 1 with 0.2, and the other miners share the rest equally.
    /// Empty: equal shares (or `selfish`).
    pub shares: Vec<f64>,
    /// Fraction of the hosts that are liars (the last ones; see `sim::liars`): they run no
    /// node, mine nothing and lie to the honest nodes, each in one way.
    pub byzantine: f64,
    /// An eclipse attack on node 0: an attacker with this many addresses per honest node
    /// (on hosts of its own, `liars::ATTACKER_PORTS` addresses each) fills node 0's address
    /// book and inbound slots; node 0 restarts halfway through the run and mines nothing.
    pub eclipse: Option<f64>,
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
            crashes: Vec::new(),
            miners: None,
            selfish: None,
            shares: Vec::new(),
            byzantine: 0.0,
            eclipse: None,
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
        if self.byzantine > 0.0 {
            options["byzantine"] = json!(self.byzantine);
        }
        if !self.crashes.is_empty() {
            options["crash"] = self
                .crashes
                .iter()
                .map(|c| json!({"node": c.node, "at_s": c.at.as_secs_f64(), "down_s": c.down.as_secs_f64()}))
                .collect();
        }
        if let Some(ratio) = self.eclipse {
            options["eclipse"] = json!(ratio);
        }
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

/// What the hosts share with the driver.
struct Shared {
    stats: Mutex<Stats>,
    /// What the liars saw.
    liars: Mutex<liars::LiarStats>,
    /// The node running on each host, while it runs.
    nodes: Mutex<Vec<Weak<Node>>>,
    traffic: Vec<Arc<Traffic>>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn liars(&self) -> std::sync::MutexGuard<'_, liars::LiarStats> {
        self.liars.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn host_name(i: usize) -> String {
    format!("n{i}")
}

/// Simulated time since the run began, when called from a simulated host (a node's code,
/// its logs); `None` elsewhere. The simulator's log lines are stamped with it.
pub fn simulated_elapsed() -> Option<Duration> {
    turmoil::sim_elapsed()
}

/// Runs a simulation; `Err` when an invariant breaks.
pub fn run(options: &Options) -> Result<Report, Failure> {
    let started = Instant::now();
    // Every node holds every block: one copy of each big block's data in the process.
    powchain::block::shared_data::enable();
    let n = options.nodes.max(2);
    let fail = |reason: String, summary: Value| Failure {
        seed: options.seed,
        reason,
        summary,
    };
    let base = match &options.data_dir {
        // A scenario's runs each get a directory of their own under the one given.
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| tempfile::tempdir_in(dir)),
        None if std::path::Path::new("/dev/shm").is_dir() => tempfile::tempdir_in("/dev/shm"),
        None => tempfile::tempdir(),
    }
    .map_err(|e| fail(format!("cannot make a data directory: {e}"), Value::Null))?;

    let mut rng = StdRng::seed_from_u64(options.seed);
    // The liars are the last hosts; at least two honest nodes stay.
    let liars = ((n as f64) * options.byzantine.clamp(0.0, 1.0)).round() as usize;
    let liars = liars.min(n - 2);
    let honest = n - liars;
    let is_liar = |i: usize| i >= honest;
    let miners = options.miners.unwrap_or(honest).clamp(1, honest);
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
    // The eclipse's victim mines nothing (its blocks could not reach anyone once eclipsed).
    let victim = options.eclipse.map(|_| 0usize);
    let rates: Vec<f64> = rates
        .into_iter()
        .enumerate()
        .map(|(i, r)| if Some(i) == victim { 0.0 } else { r })
        .collect();
    let attacker_hosts = options.eclipse.map_or(0, |ratio| {
        ((ratio.max(0.0) * honest as f64) / f64::from(liars::ATTACKER_PORTS)).ceil() as usize
    });
    let rto = Duration::from_millis(200) + options.latency.1 * 2;
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats {
            tips: vec![(0, BlockHash::default()); n],
            starts: vec![0; n],
            ..Stats::default()
        }),
        liars: Mutex::new(liars::LiarStats::default()),
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
        if is_liar(i) {
            let lie = liars::LIES[(i - honest) % liars::LIES.len()];
            sim.host(name.as_str(), move || {
                liars::liar(liars::LiarSetup {
                    index: i,
                    lie,
                    shared: shared.clone(),
                    seeds: my_seeds.clone(),
                    params: params.clone(),
                    hosts: n,
                })
            });
            ips.push(sim.lookup(name.as_str()));
            continue;
        }
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
    let attackers = n..n + attacker_hosts;
    let mut attacker_ips = BTreeSet::new();
    for a in attackers.clone() {
        let name = host_name(a);
        let (params, hosts) = (params.clone(), attackers.clone());
        sim.host(name.as_str(), move || {
            liars::attacker(liars::AttackerSetup {
                index: a,
                victim: 0,
                params: params.clone(),
                hosts: hosts.clone(),
            })
        });
        attacker_ips.insert(sim.lookup(name.as_str()));
    }

    // The faults, as steps of the driver.
    let mut crashes: Vec<(Duration, Duration, usize)> = Vec::new();
    for c in &options.crashes {
        if c.node >= honest {
            return Err(fail(
                format!(
                    "--crash names node {}, but the honest nodes are 0..{}",
                    c.node,
                    honest - 1
                ),
                Value::Null,
            ));
        }
        crashes.push((c.at, c.at + c.down, c.node));
    }
    let timed: BTreeSet<usize> = options.crashes.iter().map(|c| c.node).collect();
    let eligible: Vec<usize> = (0..honest).filter(|i| !timed.contains(i)).collect();
    let churned = ((eligible.len() as f64) * options.churn.clamp(0.0, 1.0)).round() as usize;
    if churned > 0 {
        let honest = eligible.len();
        let mut pool = eligible;
        let span = options.duration.as_secs_f64();
        for k in 0..churned {
            let j = rng.random_range(k..honest);
            pool.swap(k, j);
            let at = Duration::from_secs_f64(rng.random_range(span * 0.1..span * 0.7));
            let down =
                Duration::from_secs_f64(rng.random_range(5.0..30.0f64.min(span * 0.25).max(6.0)));
            crashes.push((at, at + down, pool[k]));
        }
    }
    // The eclipse's victim restarts halfway, as the attack waits for it to.
    let restart = victim.map(|v| {
        let at = options.duration / 2;
        crashes.retain(|c| c.2 != v);
        crashes.push((at, at + Duration::from_secs(5), v));
        at + Duration::from_secs(5)
    });
    let halves = (&ips[..n / 2], &ips[n / 2..]);

    let mut agreed_after: Vec<Value> = Vec::new();
    let mut pending_heals: Vec<(String, Duration)> = Vec::new();
    // Nodes down now, each with the time its crash ends.
    let mut down: BTreeMap<usize, Duration> = BTreeMap::new();
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
    // (seconds, attacker's outbound links of the victim, its outbound links, attacker's
    // inbound, inbound), after the victim's restart.
    let mut eclipse_samples: Vec<(f64, usize, usize, usize, usize)> = Vec::new();

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
            if !down.contains_key(&node) && elapsed >= at && elapsed < at + options.tick {
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
                down.insert(node, back);
            } else if down.get(&node) == Some(&back) && elapsed >= back {
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
                let mut live = (0..honest)
                    .filter(|i| !down.contains_key(i) && Some(*i) != victim)
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
            if let (Some(v), Some(back)) = (victim, restart)
                && elapsed >= back
                && let Some(node) = nodes[v].upgrade()
            {
                let (outbound, inbound) = node.links();
                let held = |links: &[String]| {
                    links
                        .iter()
                        .filter(|a| {
                            a.parse::<SocketAddr>()
                                .is_ok_and(|a| attacker_ips.contains(&a.ip()))
                        })
                        .count()
                };
                eclipse_samples.push((
                    round3(elapsed.as_secs_f64()),
                    held(&outbound),
                    outbound.len(),
                    held(&inbound),
                    inbound.len(),
                ));
            }
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
    let (mut summary, series) = summarize(
        options,
        honest,
        &stats,
        (&chains, races),
        &shared.traffic[..honest],
        &agreed_after,
        final_agreement,
    );
    let lies: Vec<(usize, liars::Lie)> = (honest..n)
        .map(|i| (i, liars::LIES[(i - honest) % liars::LIES.len()]))
        .collect();
    if !lies.is_empty() {
        summary["byzantine"] = liars::summary(&shared.liars(), &lies);
    }
    if let Some(v) = victim {
        let share = |held: usize, of: usize| round3(held as f64 / of.max(1) as f64);
        let last = eclipse_samples.last().copied().unwrap_or_default();
        let max_out = eclipse_samples
            .iter()
            .map(|e| share(e.1, e.2))
            .fold(0.0, f64::max);
        let victim_height = stats.tips[v].0;
        let top = (0..honest).map(|i| stats.tips[i].0).max().unwrap_or(0);
        summary["eclipse"] = json!({
            "victim": host_name(v),
            "attacker_addresses": attacker_hosts * usize::from(liars::ATTACKER_PORTS),
            "honest_nodes": honest,
            "restarted_at_s": round3((options.duration / 2).as_secs_f64()),
            "final_outbound": {"attacker": last.1, "all": last.2, "share": share(last.1, last.2)},
            "final_inbound": {"attacker": last.3, "all": last.4, "share": share(last.3, last.4)},
            "max_outbound_share_after_restart": max_out,
            "victim_blocks_behind": top.saturating_sub(victim_height),
        });
    }
    let speed = json!({
        "wall_s": round3(wall.as_secs_f64()),
        "simulated_s": round3(elapsed.as_secs_f64()),
        "sim_s_per_wall_s": round3(elapsed.as_secs_f64() / wall.as_secs_f64().max(1e-9)),
        "peak_rss_mib": peak_rss_mib(),
    });
    // The eclipse's victim is what the run measures, not held to the invariants.
    let live: Vec<Arc<Node>> = match victim {
        Some(v) => {
            let victim_node = shared.nodes.lock().unwrap_or_else(|e| e.into_inner())[v].upgrade();
            live.into_iter()
                .filter(|node| victim_node.as_ref().is_none_or(|vn| !Arc::ptr_eq(vn, node)))
                .collect()
        }
        None => live,
    };
    let expected = honest - usize::from(victim.is_some());
    let checked = invariants::check(options, expected, &params, final_agreement, &live, &stats)
        .and_then(|()| invariants::check_liars(&shared.liars(), elapsed));
    if let Err(reason) = checked {
        return Err(fail(reason, summary));
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
    // Thousands of stores in one process: a node's own chain in memory is all it reads, so
    // redb's cache only held written pages (16 MiB each, 400 MiB of 50 nodes' 1 MB blocks).
    config.store_cache = SIM_STORE_CACHE;
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
