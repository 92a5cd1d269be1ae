//! `PeerSet`: the links a node keeps (outbound ones it dialled, inbound ones that dialled it,
//! manual ones a user added), their clients, what each peer is known to hold, relay
//! accounting, strikes and bans, and the [`AddrBook`] of candidates. It knows nothing of the
//! node; `links.rs` keeps the links.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::Notify;
// tokio's clock: the real one in the binary, the simulated one under simulation.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::addrbook::{AddrBook, Source};
use super::limits::{
    BAN, DEFAULT_MAX_INBOUND, DEFAULT_MAX_OUTBOUND, KNOWN_PER_LINK, MAX_MANUAL,
    MAX_RELAYS_IN_FLIGHT, MAX_SHARED, MAX_STRIKES, MAX_SYNC_MEMORY, PEER_TIMEOUT,
    UNLINKED_SYNC_INTERVAL,
};
use crate::block::BlockHash;
use crate::client::{Greeting, NodeClient};
use crate::env::{Net, TcpNet};

/// Counts one relay in flight until dropped.
#[derive(Debug)]
pub(crate) struct RelayGuard(Arc<AtomicUsize>);

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A peer to send a block to, counted as one relay in flight until dropped.
#[derive(Debug)]
pub(crate) struct RelayTarget {
    /// Its address.
    pub addr: String,
    /// Its link's client.
    pub client: Arc<NodeClient>,
    /// The protocol version it said in its last `hello`.
    pub version: u32,
    /// Counts the relay in flight.
    pub guard: RelayGuard,
}

/// Who opened a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// We dialled a candidate from the address book (counts against `--max-outbound`).
    Outbound,
    /// It dialled us (counts against `--max-inbound`).
    Inbound,
    /// A user asked for it (`add_peer`): kept and re-dialled until removed.
    Manual,
}

#[derive(Debug)]
struct Link {
    direction: Direction,
    client: Arc<NodeClient>,
    /// Relays sent to this peer and not yet answered.
    relays: Arc<AtomicUsize>,
    connected: bool,
    strikes: u32,
    stop: CancellationToken,
    /// Recent blocks the peer is known to hold (sent by it, or to it).
    known: VecDeque<BlockHash>,
    /// For an inbound link, the connection whose `hello` opened it.
    conn: Option<u64>,
    /// Wakes the link's task to check the link now (a relay to it failed).
    alarm: Arc<Notify>,
    /// The protocol version its last `hello` said (1 until one did).
    version: u32,
}

impl Link {
    fn knows(&self, hash: &BlockHash) -> bool {
        self.known.contains(hash)
    }

    fn remember(&mut self, hash: BlockHash) {
        if self.knows(&hash) {
            return;
        }
        if self.known.len() >= KNOWN_PER_LINK {
            self.known.pop_front();
        }
        self.known.push_back(hash);
    }
}

/// How many links of each kind a node keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Links it dials itself.
    pub max_outbound: usize,
    /// Links others dial to it.
    pub max_inbound: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_outbound: DEFAULT_MAX_OUTBOUND,
            max_inbound: DEFAULT_MAX_INBOUND,
        }
    }
}

/// What a `hello` on an accepted connection means for the links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// A new inbound link.
    New,
    /// A link we already have (ours to it, or its to us on another connection).
    Known,
    /// Every inbound slot is taken.
    Full,
    /// The address is banned.
    Banned,
}

/// The peers a node keeps links to, and the addresses it could dial.
pub(crate) struct PeerSet {
    links: Mutex<BTreeMap<String, Link>>,
    book: Mutex<AddrBook>,
    limits: Limits,
    greeting: Option<Greeting>,
    /// Wakes the peer manager: a link ended or an address was learned.
    changed: Notify,
    /// How links' clients dial.
    net: Arc<dyn Net>,
    /// The random choices of peers to dial and to share.
    rng: Mutex<StdRng>,
}

impl std::fmt::Debug for PeerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSet")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for PeerSet {
    fn default() -> Self {
        PeerSet::new(Limits::default(), Vec::new(), None)
    }
}

impl PeerSet {
    /// Returns an empty set keeping `limits`, never dialling `own` addresses; every new
    /// connection of a link's client opens with `greeting` (the node's `hello`), so the peer
    /// knows who speaks whichever connection carries it.
    pub fn new(limits: Limits, own: Vec<String>, greeting: Option<Greeting>) -> Self {
        PeerSet {
            links: Mutex::new(BTreeMap::new()),
            book: Mutex::new(AddrBook::new(own)),
            limits,
            greeting,
            changed: Notify::new(),
            net: Arc::new(TcpNet),
            rng: Mutex::new(StdRng::from_os_rng()),
        }
    }

    /// Dials through `net`, and makes its random choices from `seed` (the OS's when `None`).
    pub(crate) fn with_env(mut self, net: Arc<dyn Net>, seed: Option<u64>) -> Self {
        self.net = net;
        if let Some(seed) = seed {
            self.rng = Mutex::new(StdRng::seed_from_u64(seed));
        }
        self
    }

    fn rng(&self) -> MutexGuard<'_, StdRng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn book(&self) -> MutexGuard<'_, AddrBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the limits kept.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Waits until a link ends or an address is learned.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn new_client(&self, addr: &str) -> Arc<NodeClient> {
        let client = NodeClient::new(addr)
            .with_timeout(PEER_TIMEOUT)
            .with_net(self.net.clone());
        Arc::new(match &self.greeting {
            Some(g) => client.with_greeting(g.clone()),
            None => client,
        })
    }

    fn sorted(&self, keep: impl Fn(&Link) -> bool) -> Vec<String> {
        let mut v: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, l)| keep(l))
            .map(|(a, _)| a.clone())
            .collect();
        v.sort();
        v
    }

    /// Returns every link, connected or being dialled, sorted (what `get_peers` lists).
    pub fn known(&self) -> Vec<String> {
        self.sorted(|_| true)
    }

    /// Returns the peers currently connected, sorted.
    pub fn connected(&self) -> Vec<String> {
        self.sorted(|l| l.connected)
    }

    /// Returns the connected peers we dialled (outbound and manual links), sorted.
    pub fn outbound(&self) -> Vec<String> {
        self.sorted(|l| l.connected && l.direction != Direction::Inbound)
    }

    /// Returns the connected peers that dialled us, sorted.
    pub fn inbound(&self) -> Vec<String> {
        self.sorted(|l| l.connected && l.direction == Direction::Inbound)
    }

    /// Returns how many more outbound links the node should dial.
    pub(crate) fn outbound_wanted(&self) -> usize {
        let have = self
            .lock()
            .values()
            .filter(|l| l.direction == Direction::Outbound)
            .count();
        self.limits.max_outbound.saturating_sub(have)
    }

    /// Returns the client of a link.
    pub fn client(&self, addr: &str) -> Option<Arc<NodeClient>> {
        self.lock().get(addr).map(|l| l.client.clone())
    }

    /// Returns who opened the link to `addr`, if it is one.
    pub fn direction(&self, addr: &str) -> Option<Direction> {
        self.lock().get(addr).map(|l| l.direction)
    }

    /// Tells whether `addr` is a link (connected or being dialled).
    pub(crate) fn is_link(&self, addr: &str) -> bool {
        self.lock().contains_key(addr)
    }

    /// Returns the connected peers other than `except` that are not known to hold `hash`
    /// and can take one more relay, each with its client and a guard that counts the relay
    /// until dropped; each is then taken to hold it. A peer with [`MAX_RELAYS_IN_FLIGHT`]
    /// unanswered relays is skipped: a slow or stalled peer costs bounded memory, and
    /// catches up through a locator sync once it answers again.
    pub(crate) fn relay_targets(&self, hash: BlockHash, except: Option<&str>) -> Vec<RelayTarget> {
        self.lock()
            .iter_mut()
            .filter(|(a, l)| l.connected && Some(a.as_str()) != except && !l.knows(&hash))
            .filter_map(|(a, l)| {
                if l.relays.fetch_add(1, Ordering::AcqRel) >= MAX_RELAYS_IN_FLIGHT {
                    l.relays.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                l.remember(hash);
                Some(RelayTarget {
                    addr: a.clone(),
                    client: l.client.clone(),
                    version: l.version,
                    guard: RelayGuard(l.relays.clone()),
                })
            })
            .collect()
    }

    /// Records that the peer at `addr` holds `hash` (it sent it, or it is its tip).
    pub(crate) fn mark_known(&self, addr: &str, hash: BlockHash) {
        if let Some(l) = self.lock().get_mut(addr) {
            l.remember(hash);
        }
    }

    /// Adds `addr`, heard of from `source`, to the address book; true when it is new.
    pub fn learn(&self, addr: &str, source: Source) -> bool {
        let new = self.book().add(addr, source, Instant::now());
        if new {
            self.changed.notify_one();
        }
        new
    }

    /// Returns up to `n` addresses of the book to dial now (not linked, not waiting out a
    /// failure), and when to look again if there are none.
    pub(crate) fn candidates(&self, n: usize) -> (Vec<String>, Option<Instant>) {
        let links = self.lock();
        let book = self.book();
        let now = Instant::now();
        let picked = book.candidates(n, now, |a| links.contains_key(a), &mut *self.rng());
        (picked, book.next_retry(now))
    }

    /// Returns a sample of good addresses to share with the peer at `to` (its address as
    /// the connection shows it) whose listen address is `exclude`.
    pub fn sample(&self, to: Option<IpAddr>, exclude: Option<&str>) -> Vec<String> {
        self.book()
            .sample(MAX_SHARED, to, exclude, &mut *self.rng())
    }

    /// Returns the number of addresses in the book.
    pub(crate) fn book_len(&self) -> usize {
        self.book().len()
    }

    /// Starts an outbound or manual link to `addr` unless it is known already, our own or
    /// banned (a manual link lifts a ban: a user asked for it); returns the stop token of
    /// its task (a child of `parent`), for the caller to start keeping the link.
    pub fn dial(
        &self,
        addr: &str,
        direction: Direction,
        parent: &CancellationToken,
    ) -> Option<CancellationToken> {
        if parent.is_cancelled() {
            return None;
        }
        let mut links = self.lock();
        {
            let mut book = self.book();
            if direction == Direction::Manual {
                book.unban(addr);
            }
            if book.is_own(addr) || book.is_banned(addr, Instant::now()) {
                return None;
            }
        }
        if let Some(l) = links.get_mut(addr) {
            // A user asking for a link we keep makes it manual: kept until removed. An
            // inbound one gets a task of its own to keep it.
            if direction != Direction::Manual || l.direction == Direction::Manual {
                return None;
            }
            let was = std::mem::replace(&mut l.direction, Direction::Manual);
            l.conn = None;
            if was == Direction::Outbound {
                return None;
            }
            l.stop = parent.child_token();
            return Some(l.stop.clone());
        }
        let manual = links
            .values()
            .filter(|l| l.direction == Direction::Manual)
            .count();
        if direction == Direction::Manual && manual >= MAX_MANUAL {
            return None;
        }
        let stop = parent.child_token();
        links.insert(
            addr.to_owned(),
            Link {
                direction,
                client: self.new_client(addr),
                relays: Arc::new(AtomicUsize::new(0)),
                connected: false,
                strikes: 0,
                stop: stop.clone(),
                known: VecDeque::new(),
                conn: None,
                alarm: Arc::new(Notify::new()),
                version: 1,
            },
        );
        Some(stop)
    }

    /// Takes a `hello` from `addr` on accepted connection `conn`: a new inbound link if a
    /// slot is free, nothing new if it is a link already.
    pub(crate) fn accept_inbound(
        &self,
        addr: &str,
        conn: u64,
        parent: &CancellationToken,
    ) -> Accepted {
        if self.book().is_banned(addr, Instant::now()) {
            return Accepted::Banned;
        }
        let mut links = self.lock();
        if let Some(l) = links.get_mut(addr) {
            if l.direction == Direction::Inbound {
                l.conn = Some(conn);
                l.connected = true;
            }
            return Accepted::Known;
        }
        let inbound = links
            .values()
            .filter(|l| l.direction == Direction::Inbound)
            .count();
        if inbound >= self.limits.max_inbound {
            return Accepted::Full;
        }
        links.insert(
            addr.to_owned(),
            Link {
                direction: Direction::Inbound,
                client: self.new_client(addr),
                relays: Arc::new(AtomicUsize::new(0)),
                connected: true,
                strikes: 0,
                stop: parent.child_token(),
                known: VecDeque::new(),
                conn: Some(conn),
                alarm: Arc::new(Notify::new()),
                version: 1,
            },
        );
        Accepted::New
    }

    /// Ends the inbound link of `addr` if connection `conn` opened it (the connection closed).
    pub(crate) fn inbound_closed(&self, addr: &str, conn: u64) -> bool {
        let mut links = self.lock();
        let ours = links
            .get(addr)
            .is_some_and(|l| l.direction == Direction::Inbound && l.conn == Some(conn));
        if ours && let Some(l) = links.remove(addr) {
            l.stop.cancel();
        }
        ours
    }

    /// Tells whether `addr` ever answered this node as a node (a handshake we made, or a
    /// sync it answered).
    pub(crate) fn verified(&self, addr: &str) -> bool {
        self.book().has_succeeded(addr)
    }

    /// Records that `addr` answered a sync as a node does: good in the book.
    pub fn served(&self, addr: &str) {
        self.book().succeeded(addr, Instant::now());
    }

    /// Records a successful handshake with `addr`: connected, and good in the book.
    pub(crate) fn connected_to(&self, addr: &str) {
        if let Some(l) = self.lock().get_mut(addr) {
            l.connected = true;
        }
        self.book().succeeded(addr, Instant::now());
    }

    /// Records the protocol version `addr` said in a `hello` (either way round).
    pub(crate) fn set_version(&self, addr: &str, version: u32) {
        if let Some(l) = self.lock().get_mut(addr) {
            l.version = version;
            l.client
                .set_binary_blocks(version >= crate::message::BINARY_VERSION);
        }
    }

    /// Records that `addr` could not be reached (or its link was lost); true when it aged
    /// out of the book.
    pub fn unreachable(&self, addr: &str) -> bool {
        if let Some(l) = self.lock().get_mut(addr) {
            l.connected = false;
        }
        self.book().failed(addr, Instant::now())
    }

    /// Ends the link of a task that stopped keeping it, and wakes the manager to replace it.
    pub(crate) fn link_ended(&self, addr: &str) {
        self.lock().remove(addr);
        self.changed.notify_one();
    }

    /// Records that `addr` leads back to this node; it is never dialled again.
    pub(crate) fn found_own(&self, addr: &str) {
        self.book().add_own(addr);
    }

    /// Tells whether `addr` is one of this node's own addresses.
    pub(crate) fn is_own(&self, addr: &str) -> bool {
        self.book().is_own(addr)
    }

    /// Forgets a peer: its link ends and its address leaves the book; false if it was
    /// neither linked nor in the book.
    pub fn remove(&self, addr: &str) -> bool {
        let link = self.lock().remove(addr);
        let booked = self.book().remove(addr);
        if let Some(l) = &link {
            l.stop.cancel();
            self.changed.notify_one();
        }
        link.is_some() || booked
    }

    /// Tells the task of the link to `addr` to check it now: a relay to it failed.
    pub(crate) fn mark_lost(&self, addr: &str) {
        if let Some(l) = self.lock().get(addr) {
            l.alarm.notify_one();
        }
    }

    /// Returns what wakes the task of the link to `addr` to check it at once.
    pub(crate) fn alarm(&self, addr: &str) -> Option<Arc<Notify>> {
        self.lock().get(addr).map(|l| l.alarm.clone())
    }

    /// Counts an invalid block against a peer; drops and bans it after too many.
    pub fn strike(&self, addr: &str, reason: &str) {
        let dropped = {
            let mut links = self.lock();
            let Some(l) = links.get_mut(addr) else {
                return;
            };
            l.strikes += 1;
            tracing::warn!(peer = %addr, strikes = l.strikes, "peer sent an invalid block: {reason}");
            l.strikes >= MAX_STRIKES
        };
        if dropped {
            self.ban(addr, "too many invalid blocks");
        }
    }

    /// Drops `addr` and refuses it for a while.
    pub fn ban(&self, addr: &str, why: &str) {
        tracing::warn!(peer = %addr, "dropping peer for {} s: {why}", BAN.as_secs());
        metrics::counter!(crate::metrics::BANS).increment(1);
        self.remove(addr);
        let now = Instant::now();
        self.book().ban(addr, now + BAN, now);
    }
}

/// When each peer last made us sync by sending a block that did not link, or a `hello`
/// claiming more work, and how long that sync holds the next one off.
#[derive(Debug, Default)]
pub(crate) struct SyncLimiter(Mutex<BTreeMap<String, (Instant, Duration)>>);

impl SyncLimiter {
    /// Tells whether a sync with `peer` may start now (at most every
    /// [`UNLINKED_SYNC_INTERVAL`]), and if so records it.
    pub fn allow(&self, peer: &str, now: Instant) -> bool {
        self.allow_every(peer, now, UNLINKED_SYNC_INTERVAL)
    }

    /// Tells whether a sync with `peer` may start now, at most every `interval`, and if so
    /// records it. When the memory is full, syncs older than the interval they were
    /// recorded with are forgotten first.
    pub(crate) fn allow_every(&self, peer: &str, now: Instant, interval: Duration) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .get(peer)
            .is_some_and(|(t, _)| now.duration_since(*t) < interval)
        {
            return false;
        }
        if last.len() >= MAX_SYNC_MEMORY {
            last.retain(|_, (t, held)| now.duration_since(*t) < *held);
            if last.len() >= MAX_SYNC_MEMORY {
                // Every slot synced within the interval: wait rather than grow.
                return false;
            }
        }
        last.insert(peer.to_owned(), (now, interval));
        true
    }
}

/// Checks and normalizes a peer address: `host:port`, an `http://` prefix and a trailing
/// slash tolerated.
pub(crate) fn normalize_addr(addr: &str) -> Result<String, String> {
    let a = addr.trim();
    let a = a.strip_prefix("http://").unwrap_or(a).trim_end_matches('/');
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(format!("peer address {addr:?} is not host:port"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("peer address {addr:?} has a bad port"))?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '@']) {
        return Err(format!("peer address {addr:?} is not host:port"));
    }
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::limits::UNVERIFIED_SYNC_INTERVAL;

    fn hash(n: u8) -> BlockHash {
        format!("{n:02x}").repeat(32).parse().unwrap()
    }

    /// A block goes to each peer at most once, and never back to a peer that has it.
    #[test]
    fn relays_reach_each_peer_once_and_never_echo() {
        let set = PeerSet::default();
        let root = CancellationToken::new();
        assert!(set.dial("10.0.0.1:1", Direction::Outbound, &root).is_some());
        assert_eq!(set.accept_inbound("10.0.0.2:1", 7, &root), Accepted::New);
        set.connected_to("10.0.0.1:1");
        set.mark_known("10.0.0.2:1", hash(1));
        let first: Vec<String> = set
            .relay_targets(hash(1), None)
            .into_iter()
            .map(|t| t.addr)
            .collect();
        assert_eq!(
            first,
            vec!["10.0.0.1:1".to_owned()],
            "not back to the peer that sent it"
        );
        assert!(
            set.relay_targets(hash(1), None).is_empty(),
            "each peer once"
        );
        assert_eq!(set.relay_targets(hash(2), Some("10.0.0.1:1")).len(), 1);
    }

    /// Inbound links are capped, end with the connection that opened them, and a hello
    /// from a peer we dialled opens nothing new.
    #[test]
    fn inbound_links_are_capped_and_end_with_their_connection() {
        let limits = Limits {
            max_outbound: 1,
            max_inbound: 2,
        };
        let set = PeerSet::new(limits, vec!["127.0.0.1:9".into()], None);
        let root = CancellationToken::new();
        assert_eq!(set.accept_inbound("10.0.0.1:1", 1, &root), Accepted::New);
        assert_eq!(set.accept_inbound("10.0.0.2:1", 2, &root), Accepted::New);
        assert_eq!(set.accept_inbound("10.0.0.3:1", 3, &root), Accepted::Full);
        assert_eq!(set.accept_inbound("10.0.0.1:1", 4, &root), Accepted::Known);
        assert!(
            !set.inbound_closed("10.0.0.1:1", 1),
            "a newer connection holds it"
        );
        assert!(set.inbound_closed("10.0.0.1:1", 4));
        assert_eq!(set.inbound(), vec!["10.0.0.2:1".to_owned()]);
        assert_eq!(set.outbound_wanted(), 1);
        assert!(set.dial("10.0.0.5:1", Direction::Outbound, &root).is_some());
        assert_eq!(set.outbound_wanted(), 0);
        assert_eq!(set.accept_inbound("10.0.0.5:1", 5, &root), Accepted::Known);
        assert!(
            set.dial("127.0.0.1:9", Direction::Manual, &root).is_none(),
            "never ourselves"
        );
        // Candidates skip what is linked already.
        set.learn("10.0.0.5:1", Source::Registry);
        set.learn("10.0.0.6:1", Source::Registry);
        assert_eq!(set.candidates(8).0, vec!["10.0.0.6:1".to_owned()]);
    }

    /// A peer's unlinked block makes us sync with it at most once per interval.
    #[test]
    fn unlinked_syncs_are_rate_limited_per_peer() {
        let limiter = SyncLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.allow("a:1", t0));
        assert!(!limiter.allow("a:1", t0 + Duration::from_millis(500)));
        assert!(limiter.allow("b:1", t0 + Duration::from_millis(500)));
        assert!(limiter.allow("a:1", t0 + UNLINKED_SYNC_INTERVAL));
    }

    /// A sync on the word of an address never verified holds the next one off for
    /// [`UNVERIFIED_SYNC_INTERVAL`], and a 1 s check does not undo that.
    #[test]
    fn unverified_addresses_are_synced_with_rarely() {
        let limiter = SyncLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.allow_every("a:1", t0, UNVERIFIED_SYNC_INTERVAL));
        for later in [1, 5, 29] {
            let t = t0 + Duration::from_secs(later);
            assert!(
                !limiter.allow_every("a:1", t, UNVERIFIED_SYNC_INTERVAL),
                "{later} s"
            );
        }
        assert!(limiter.allow_every(
            "a:1",
            t0 + UNVERIFIED_SYNC_INTERVAL,
            UNVERIFIED_SYNC_INTERVAL
        ));
    }

    /// The limiter never holds more than its cap: when every slot synced within the
    /// interval a new peer waits, and once they age out it gets its turn.
    #[test]
    fn unlinked_sync_memory_is_capped() {
        let limiter = SyncLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_SYNC_MEMORY {
            assert!(limiter.allow(&format!("p:{i}"), t0));
        }
        assert!(!limiter.allow("late:1", t0));
        assert_eq!(limiter.0.lock().unwrap().len(), MAX_SYNC_MEMORY);
        assert!(limiter.allow("late:1", t0 + UNLINKED_SYNC_INTERVAL));
        assert_eq!(limiter.0.lock().unwrap().len(), 1);
    }
}
