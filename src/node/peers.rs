//! `PeerSet`: the peers a node knows, their clients, relay accounting, strikes and
//! temporary bans. It knows nothing of the node; `links.rs` keeps the links.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::client::NodeClient;

/// Unanswered relays to one peer beyond which new blocks are not sent to it.
pub const MAX_RELAYS_IN_FLIGHT: usize = 4;

/// Counts one relay in flight until dropped.
#[derive(Debug)]
pub struct RelayGuard(Arc<AtomicUsize>);

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Invalid blocks from one peer before it is dropped.
const MAX_STRIKES: u32 = 5;
/// How long a dropped peer stays banned.
const BAN: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Entry {
    client: Arc<NodeClient>,
    /// Relays sent to this peer and not yet answered.
    relays: Arc<AtomicUsize>,
    connected: bool,
    strikes: u32,
    stop: CancellationToken,
}

/// The peers a node knows.
#[derive(Debug, Default)]
pub struct PeerSet {
    entries: Mutex<HashMap<String, Entry>>,
    banned: Mutex<HashMap<String, Instant>>,
}

impl PeerSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns every known peer, connected or being retried, sorted.
    pub fn known(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Returns the peers currently connected, sorted.
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.connected)
            .map(|(a, _)| a.clone())
            .collect();
        v.sort();
        v
    }

    /// Returns the client of a known peer.
    pub fn client(&self, addr: &str) -> Option<Arc<NodeClient>> {
        self.lock().get(addr).map(|e| e.client.clone())
    }

    /// Returns the connected peers other than `except` that can take one more relay, each
    /// with its client and a guard that counts the relay until dropped. A peer with
    /// [`MAX_RELAYS_IN_FLIGHT`] unanswered relays is skipped: a slow or stalled peer costs
    /// bounded memory, and catches up through a locator sync once it answers again.
    pub fn relay_targets(
        &self,
        except: Option<&str>,
    ) -> Vec<(String, Arc<NodeClient>, RelayGuard)> {
        self.lock()
            .iter()
            .filter(|(a, e)| e.connected && Some(a.as_str()) != except)
            .filter_map(|(a, e)| {
                if e.relays.fetch_add(1, Ordering::AcqRel) >= MAX_RELAYS_IN_FLIGHT {
                    e.relays.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                Some((a.clone(), e.client.clone(), RelayGuard(e.relays.clone())))
            })
            .collect()
    }

    /// Adds `addr` unless it is `own` (ourselves), known already or banned; returns the
    /// stop token of its link (a child of `parent`) when it is new, for the caller to start
    /// keeping the link.
    pub fn learn(
        &self,
        addr: &str,
        own: &str,
        parent: &CancellationToken,
    ) -> Option<CancellationToken> {
        if addr == own || parent.is_cancelled() {
            return None;
        }
        {
            let mut banned = self.banned.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = banned.get(addr) {
                if Instant::now() < *until {
                    return None;
                }
                banned.remove(addr);
            }
        }
        let stop = parent.child_token();
        let mut entries = self.lock();
        if entries.contains_key(addr) {
            return None;
        }
        let client = Arc::new(NodeClient::new(addr).with_timeout(Duration::from_secs(10)));
        entries.insert(
            addr.to_owned(),
            Entry {
                client,
                relays: Arc::new(AtomicUsize::new(0)),
                connected: false,
                strikes: 0,
                stop: stop.clone(),
            },
        );
        Some(stop)
    }

    /// Lifts a ban on `addr` (a user asked for it as a peer).
    pub fn unban(&self, addr: &str) {
        self.banned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
    }

    /// Forgets a peer; false if it was not known.
    pub fn remove(&self, addr: &str) -> bool {
        match self.lock().remove(addr) {
            Some(e) => {
                e.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Marks a peer as lost; its task reconnects with backoff.
    pub fn mark_lost(&self, addr: &str) {
        if let Some(e) = self.lock().get_mut(addr) {
            e.connected = false;
        }
    }

    /// Records whether the link to `addr` is up.
    pub fn set_connected(&self, addr: &str, connected: bool) {
        if let Some(e) = self.lock().get_mut(addr) {
            e.connected = connected;
        }
    }

    /// Counts an invalid block against a peer; drops and bans it after too many.
    pub fn strike(&self, addr: &str, reason: &str) {
        let dropped = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(addr) else {
                return;
            };
            e.strikes += 1;
            tracing::warn!(peer = %addr, strikes = e.strikes, "peer sent an invalid block: {reason}");
            e.strikes >= MAX_STRIKES
        };
        if dropped {
            self.ban(addr, "too many invalid blocks");
        }
    }

    /// Drops `addr` and refuses it for a while.
    pub fn ban(&self, addr: &str, why: &str) {
        tracing::warn!(peer = %addr, "dropping peer for {} s: {why}", BAN.as_secs());
        self.remove(addr);
        self.banned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr.to_owned(), Instant::now() + BAN);
    }
}

/// A peer's block that does not link makes us sync with that peer at most this often.
pub const UNLINKED_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Most peers whose last unlinked-block sync is remembered.
const MAX_SYNC_MEMORY: usize = 1024;

/// When each peer last made us sync by sending a block that did not link.
#[derive(Debug, Default)]
pub struct SyncLimiter(Mutex<HashMap<String, Instant>>);

impl SyncLimiter {
    /// Tells whether a sync with `peer` may start now, and if so records it.
    pub fn allow(&self, peer: &str, now: Instant) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .get(peer)
            .is_some_and(|t| now.duration_since(*t) < UNLINKED_SYNC_INTERVAL)
        {
            return false;
        }
        if last.len() >= MAX_SYNC_MEMORY {
            last.retain(|_, t| now.duration_since(*t) < UNLINKED_SYNC_INTERVAL);
            if last.len() >= MAX_SYNC_MEMORY {
                // Every slot synced within the interval: wait rather than grow.
                return false;
            }
        }
        last.insert(peer.to_owned(), now);
        true
    }
}

/// Checks and normalizes a peer address: `host:port`, an `http://` prefix and a trailing
/// slash tolerated.
pub fn normalize_addr(addr: &str) -> Result<String, String> {
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
