//! `probe --crawl`: the network beyond the probe's registry. Starting from seed addresses
//! and the registry's nodes, the crawler asks each node it knows for its status and a
//! sample of its address book (`status`, then `get_addr`, on one short connection), adds
//! the addresses it learns, and keeps each node's last answer for `GET /nodes`, the
//! history and the dashboard, as network crawlers of Bitcoin do.
//!
//! Bounded everywhere: at most [`MAX_NODES`] addresses are known, at most [`RATE`] visits
//! start per second and [`MAX_CALLS`] run at once, a node is visited again only after
//! [`revisit`] (longer the more nodes are known), a node that stops answering is dropped
//! after [`AGE_OUT`] (a seed is kept and shown down), and an address that never answered is
//! dropped after [`MAX_FAILURES`] tries. Addresses from nodes are IP literals only (the
//! crawler resolves no name a peer sends); a loopback address is taken only from a node
//! reached on loopback itself (another host's `127.0.0.1` is that host's, not ours).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::message::Status;

/// Most addresses the crawler knows at once (seeds included).
pub(crate) const MAX_NODES: usize = 4096;
/// Most visits started per second.
pub(crate) const RATE: usize = 200;
/// Most visits in progress at once.
pub(crate) const MAX_CALLS: usize = 64;
/// Shortest time between two visits of one node.
pub(crate) const MIN_REVISIT: Duration = Duration::from_secs(2);
/// A node that has not answered for this long is dropped (a seed stays, down).
pub(crate) const AGE_OUT: Duration = Duration::from_secs(60);
/// An address that never answered is dropped after this many failed visits.
pub(crate) const MAX_FAILURES: u32 = 3;
/// Time limit of one visit's calls.
const VISIT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often seeds are resolved and the registry re-read.
const SEED_REFRESH: Duration = Duration::from_secs(2);
/// The crawl loop's tick: each one starts at most `RATE / TICKS_PER_SECOND` visits.
const TICK: Duration = Duration::from_millis(100);
const TICKS_PER_SECOND: usize = 10;
/// Addresses taken from one visit (a node sends at most its status lists and one sample).
const MAX_LEARNED_PER_VISIT: usize = 1024;
/// Largest reply read from a crawled node: a status of a node with a thousand peers and an
/// address sample are a few tens of KiB.
pub(crate) const MAX_REPLY: usize = 256 * 1024;
/// Entries kept of each list of a crawled node's status (`peers`, `outbound`, `inbound`).
pub(crate) const MAX_LISTED: usize = 256;
/// Longest `listen` or `work` text kept from a crawled node (an address, a decimal number).
const MAX_FIELD: usize = 128;

/// Time between two visits of one node when `known` nodes are known: [`MIN_REVISIT`], or
/// longer so that visiting all of them stays within [`RATE`].
pub(crate) fn revisit(known: usize) -> Duration {
    MIN_REVISIT.max(Duration::from_secs_f64(known as f64 / RATE as f64))
}

/// What a visit found: the status and the addresses the node named.
pub(crate) type Visit = Result<(Status, Vec<String>), String>;

/// One known address.
#[derive(Debug, Clone)]
struct Entry {
    /// The last answer, or the last error.
    last: Result<Status, String>,
    /// When the node last answered.
    last_ok: Option<Instant>,
    /// When the address was learned.
    added: Instant,
    /// When it is to be visited next.
    next_visit: Instant,
    /// Failed visits since the last answer.
    failures: u32,
    /// A seed (given by the user or a registry node): never aged out.
    seed: bool,
    /// A node of the probe's registry (listed by `GET /nodes` from the registry itself).
    local: bool,
    /// A visit is in progress.
    busy: bool,
}

/// The crawler's table of known addresses.
#[derive(Debug, Default)]
pub struct Crawl {
    /// Seeds as the user gave them (`host:port`, names allowed), resolved every
    /// [`SEED_REFRESH`].
    seeds: Vec<String>,
    table: Mutex<HashMap<SocketAddr, Entry>>,
}

/// Whether `addr`, named by the node reached at `reporter`, is one the crawler may visit.
pub(crate) fn admissible(addr: &str, reporter: SocketAddr) -> Option<SocketAddr> {
    let addr: SocketAddr = addr.parse().ok()?;
    let ip = addr.ip();
    let unusable = match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
    };
    if addr.port() == 0 || unusable || (ip.is_loopback() && !reporter.ip().is_loopback()) {
        return None;
    }
    Some(addr)
}

impl Crawl {
    /// A crawler starting from `seeds` (`host:port`; names are resolved by the system's
    /// resolver, they come from the user).
    pub fn new(seeds: Vec<String>) -> Self {
        Crawl {
            seeds,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `addr` if it is new and the table has room; a known address becomes a seed (or
    /// local) if asked. Returns whether the table holds it.
    pub fn add(&self, addr: SocketAddr, seed: bool, local: bool, now: Instant) -> bool {
        let mut table = self.table();
        if let Some(e) = table.get_mut(&addr) {
            e.seed |= seed;
            e.local |= local;
            return true;
        }
        if table.len() >= MAX_NODES {
            return false;
        }
        table.insert(
            addr,
            Entry {
                last: Err("not visited yet".into()),
                last_ok: None,
                added: now,
                next_visit: now,
                failures: 0,
                seed,
                local,
                busy: false,
            },
        );
        true
    }

    /// Takes at most `budget` addresses due for a visit at `now`, marking them busy.
    pub fn due(&self, now: Instant, budget: usize) -> Vec<SocketAddr> {
        let mut table = self.table();
        let mut due: Vec<(Instant, SocketAddr)> = table
            .iter()
            .filter(|(_, e)| !e.busy && e.next_visit <= now)
            .map(|(a, e)| (e.next_visit, *a))
            .collect();
        // The longest waiting first, so that a full table is visited round-robin.
        due.sort_unstable();
        due.truncate(budget);
        for (_, addr) in &due {
            if let Some(e) = table.get_mut(addr) {
                e.busy = true;
            }
        }
        due.into_iter().map(|(_, a)| a).collect()
    }

    /// Records the visit of `addr` that ended at `now`, and learns the addresses it named.
    pub fn record(&self, addr: SocketAddr, visit: Visit, now: Instant) {
        let learned: Vec<SocketAddr> = match &visit {
            Ok((status, addrs)) => status
                .outbound
                .iter()
                .chain(&status.inbound)
                .chain(addrs)
                .take(MAX_LEARNED_PER_VISIT)
                .filter_map(|a| admissible(a, addr))
                .collect(),
            Err(_) => Vec::new(),
        };
        {
            let mut table = self.table();
            let known = table.len();
            let Some(e) = table.get_mut(&addr) else {
                return;
            };
            e.busy = false;
            match visit {
                Ok((status, _)) => {
                    e.last = Ok(status);
                    e.last_ok = Some(now);
                    e.failures = 0;
                    e.next_visit = now + revisit(known);
                }
                Err(error) => {
                    e.last = Err(error);
                    e.failures = e.failures.saturating_add(1);
                    // Backs off a node that does not answer: 2, 4, 8 revisits at most.
                    e.next_visit = now + revisit(known) * (1 << e.failures.min(3));
                }
            }
        }
        for a in learned {
            if a != addr {
                self.add(a, false, false, now);
            }
        }
    }

    /// Drops what aged out at `now`: nodes silent for [`AGE_OUT`], addresses that failed
    /// [`MAX_FAILURES`] times without ever answering. Seeds stay.
    pub(crate) fn expire(&self, now: Instant) {
        self.table().retain(|_, e| {
            e.seed
                || e.busy
                || match e.last_ok {
                    Some(t) => now.saturating_duration_since(t) < AGE_OUT,
                    None => {
                        e.failures < MAX_FAILURES
                            && now.saturating_duration_since(e.added) < AGE_OUT
                    }
                }
        })
    }

    /// Whether `addr` is a node the crawl found and that answered at least once (what the
    /// probe forwards requests to besides its own host's nodes).
    pub fn knows(&self, addr: &SocketAddr) -> bool {
        self.table().get(addr).is_some_and(|e| e.last_ok.is_some())
    }

    /// The nodes found beyond the registry, each with its last answer (or error), by
    /// address; those never reached are left out unless they are seeds.
    pub(crate) fn views(&self) -> Vec<(SocketAddr, Result<Status, String>)> {
        let mut views: Vec<_> = self
            .table()
            .iter()
            .filter(|(_, e)| !e.local && (e.last_ok.is_some() || e.seed))
            .map(|(a, e)| (*a, e.last.clone()))
            .collect();
        views.sort_by_key(|(a, _)| *a);
        views
    }

    /// Addresses known, reached or not.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Whether no address is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Resolves the user's seeds and reads the registry, adding both as seeds.
async fn refresh_seeds(state: &super::ProbeState, crawl: &Crawl) {
    let now = Instant::now();
    for seed in &crawl.seeds {
        match tokio::time::timeout(VISIT_TIMEOUT, tokio::net::lookup_host(seed.as_str())).await {
            Ok(Ok(addrs)) => {
                for a in addrs {
                    crawl.add(a, true, false, now);
                }
            }
            Ok(Err(e)) => tracing::debug!("crawl seed {seed}: {e}"),
            Err(_) => tracing::debug!("crawl seed {seed}: no answer from the resolver"),
        }
    }
    let registry = crate::registry::Registry::in_home(&state.home);
    if let Ok(Ok(entries)) = tokio::task::spawn_blocking(move || registry.entries()).await {
        for (port, _) in entries {
            crawl.add(SocketAddr::new(state.node_host, port), true, true, now);
        }
    }
}

/// One visit: `status`, then `get_addr`, on one connection, each reply at most
/// [`MAX_REPLY`] bytes; a node that does not answer `get_addr` is still up.
async fn visit(addr: SocketAddr) -> Visit {
    let client = crate::client::NodeClient::new(addr.to_string())
        .with_timeout(VISIT_TIMEOUT)
        .with_max_frame(MAX_REPLY);
    let status = bounded(client.status().await.map_err(|e| e.to_string())?)?;
    let addrs = client.get_addr().await.unwrap_or_default();
    Ok((status, addrs))
}

/// What is kept of a crawled node's status, so that 4,096 of them stay small whatever the
/// nodes send: each list cut to [`MAX_LISTED`], and a status whose `listen` or `work` is no
/// short text refused.
pub fn bounded(mut status: Status) -> Result<Status, String> {
    if status.listen.len() > MAX_FIELD || status.work.len() > MAX_FIELD {
        return Err(format!(
            "status refused: listen or work over {MAX_FIELD} bytes"
        ));
    }
    for list in [&mut status.peers, &mut status.outbound, &mut status.inbound] {
        list.truncate(MAX_LISTED);
        list.shrink_to_fit();
    }
    Ok(status)
}

/// Crawls until `shutdown` is cancelled.
pub(crate) async fn crawl_forever(
    state: Arc<super::ProbeState>,
    crawl: Arc<Crawl>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let calls = Arc::new(tokio::sync::Semaphore::new(MAX_CALLS));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seeded: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if seeded.is_none_or(|t| t.elapsed() >= SEED_REFRESH) {
            refresh_seeds(&state, &crawl).await;
            seeded = Some(Instant::now());
        }
        let now = Instant::now();
        crawl.expire(now);
        metrics::gauge!(crate::metrics::PROBE_CRAWL_ADDRESSES).set(crawl.len() as f64);
        let budget = (RATE / TICKS_PER_SECOND).min(calls.available_permits());
        for addr in crawl.due(now, budget) {
            let Ok(permit) = calls.clone().acquire_owned().await else {
                return;
            };
            let crawl = crawl.clone();
            tokio::spawn(async move {
                let found = visit(addr).await;
                let result = if found.is_ok() { "ok" } else { "failed" };
                metrics::counter!(crate::metrics::PROBE_CRAWL_VISITS, "result" => result)
                    .increment(1);
                crawl.record(addr, found, Instant::now());
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockHash;

    fn status(outbound: &[&str]) -> Status {
        Status {
            listen: "0.0.0.0:5001".into(),
            height: 1,
            tip: BlockHash([0; 32]),
            work: "2".into(),
            difficulty: 8,
            peers: outbound.iter().map(|s| s.to_string()).collect(),
            outbound: outbound.iter().map(|s| s.to_string()).collect(),
            inbound: vec![],
            mining: false,
            hash_rate: 0.0,
            genesis: None,
            reorgs: 0,
            withheld: None,
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Only IP literals a probe can dial are taken; another host's loopback is not ours.
    #[test]
    fn learned_addresses_are_checked() {
        let remote = sa("10.0.0.1:5001");
        let local = sa("127.0.0.1:5001");
        assert_eq!(
            admissible("10.0.0.2:5001", remote),
            Some(sa("10.0.0.2:5001"))
        );
        assert_eq!(
            admissible("[fd00::2]:5001", remote),
            Some(sa("[fd00::2]:5001"))
        );
        for bad in [
            "127.0.0.1:5002",
            "[::1]:5002",
            "0.0.0.0:5001",
            "10.0.0.2:0",
            "224.0.0.1:5001",
            "255.255.255.255:5001",
            "localhost:5001",
            "127.1:5001",
            "10.0.0.2",
            "",
        ] {
            assert_eq!(admissible(bad, remote), None, "{bad}");
        }
        assert_eq!(
            admissible("127.0.0.1:5002", local),
            Some(sa("127.0.0.1:5002"))
        );
    }

    /// A visit's addresses are learned and visited in turn; the table never grows past
    /// MAX_NODES however many a node names.
    #[test]
    fn the_table_learns_and_is_capped() {
        let crawl = Crawl::new(vec![]);
        let t0 = Instant::now();
        let seed = sa("10.0.0.1:5001");
        crawl.add(seed, true, false, t0);
        assert_eq!(crawl.due(t0, 10), [seed]);
        assert!(
            crawl.due(t0, 10).is_empty(),
            "a busy address is not due twice"
        );
        let named: Vec<String> = (0..5000u32)
            .map(|i| format!("10.1.{}.{}:5001", i / 250, i % 250 + 1))
            .collect();
        crawl.record(seed, Ok((status(&["10.0.0.2:5001"]), named)), t0);
        // The visit's MAX_LEARNED_PER_VISIT addresses were taken, no more.
        assert_eq!(crawl.len(), 1 + MAX_LEARNED_PER_VISIT);
        assert!(crawl.knows(&seed));
        assert!(
            !crawl.knows(&sa("10.0.0.2:5001")),
            "learned, never answered"
        );
        for i in 0..10u32 {
            let flood: Vec<String> = (0..1000u32)
                .map(|j| format!("10.{}.{}.{}:5001", 2 + i, j / 250, j % 250 + 1))
                .collect();
            crawl.record(seed, Ok((status(&[]), flood)), t0);
        }
        assert_eq!(crawl.len(), MAX_NODES);
        // The seed is next due after its revisit time, which grows with the table.
        let later = t0 + revisit(MAX_NODES);
        assert!(revisit(MAX_NODES) > MIN_REVISIT);
        assert!(crawl.due(t0, MAX_NODES).iter().all(|a| *a != seed));
        assert!(crawl.due(later, MAX_NODES).contains(&seed));
    }

    /// A node that stops answering ages out; a seed stays, shown with its error; an address
    /// that never answered goes after MAX_FAILURES tries.
    #[test]
    fn silent_nodes_age_out_and_seeds_stay() {
        let crawl = Crawl::new(vec![]);
        let t0 = Instant::now();
        let (seed, peer, ghost) = (
            sa("10.0.0.1:5001"),
            sa("10.0.0.2:5001"),
            sa("10.0.0.9:5001"),
        );
        crawl.add(seed, true, false, t0);
        crawl.due(t0, 1);
        crawl.record(
            seed,
            Ok((status(&["10.0.0.2:5001"]), vec!["10.0.0.9:5001".into()])),
            t0,
        );
        crawl.due(t0, 2);
        crawl.record(peer, Ok((status(&[]), vec![])), t0);
        for _ in 0..MAX_FAILURES {
            crawl.record(ghost, Err("refused".into()), t0);
        }
        crawl.expire(t0);
        assert_eq!(crawl.len(), 2, "the ghost is gone");
        let views = crawl.views();
        assert_eq!(views.len(), 2);
        let late = t0 + AGE_OUT + Duration::from_secs(1);
        crawl.record(seed, Err("refused".into()), late);
        crawl.expire(late);
        let views = crawl.views();
        assert_eq!(views.len(), 1, "the silent peer aged out: {views:?}");
        assert_eq!(views[0].0, seed);
        assert_eq!(views[0].1.as_ref().unwrap_err(), "refused");
    }

    /// A status is kept small whatever a node sends.
    #[test]
    fn kept_statuses_are_bounded() {
        let many: Vec<String> = (0..5000)
            .map(|i| format!("10.0.{}.{}:1", i / 250, i % 250))
            .collect();
        let mut st = status(&[]);
        st.peers = many.clone();
        st.inbound = many;
        let kept = bounded(st.clone()).unwrap();
        assert_eq!(
            (kept.peers.len(), kept.inbound.len()),
            (MAX_LISTED, MAX_LISTED)
        );
        st.listen = "1".repeat(MAX_FIELD + 1);
        assert!(bounded(st.clone()).unwrap_err().contains("listen"));
        st.listen = "10.0.0.1:5001".into();
        st.work = "9".repeat(10_000);
        assert!(bounded(st).is_err());
    }

    /// Registry nodes are crawled (their peers lead elsewhere) but not listed twice.
    #[test]
    fn local_nodes_are_crawled_not_listed() {
        let crawl = Crawl::new(vec![]);
        let t0 = Instant::now();
        let local = sa("127.0.0.1:5001");
        crawl.add(local, true, true, t0);
        assert_eq!(crawl.due(t0, 5), [local]);
        crawl.record(local, Ok((status(&["127.0.0.1:5002"]), vec![])), t0);
        let views = crawl.views();
        assert!(views.is_empty(), "nothing answered beyond the registry yet");
        assert!(crawl.knows(&local));
        assert_eq!(crawl.due(t0, 5), [sa("127.0.0.1:5002")]);
    }
}
