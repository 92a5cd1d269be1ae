//! `AddrBook`: every peer address a node has heard of, bounded in size and per source, with
//! how dialling it went; the candidates for outbound links and the sample shared in gossip.
//! Pure bookkeeping: no sockets, no clock of its own (callers pass `now`), no node.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rand::Rng;
use rand::seq::IteratorRandom;
// tokio's clock: the real one in the binary, the simulated one under simulation.
use super::limits::{
    FIRST_BACKOFF, MAX_ADDRS, MAX_BACKOFF, MAX_BANNED, MAX_FAILURES, MAX_PER_SOURCE,
};
use tokio::time::Instant;

/// Where an address came from: what it may be trusted for and whether it ages out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// `--peer` on the command line: kept however often it fails.
    Seed,
    /// The shared registry (`nodes.json`) of this machine.
    Registry,
    /// A node that dialled us, announcing its own listen address in `hello`.
    Hello,
    /// A sample of addresses gossiped by this peer.
    Gossip(String),
}

#[derive(Debug, Clone)]
struct Entry {
    source: Source,
    /// When a handshake with it last succeeded.
    last_success: Option<Instant>,
    /// Dialling it again waits until then.
    retry_at: Option<Instant>,
    /// Failures since the last success.
    failures: u32,
}

/// The addresses a node knows, bounded: [`MAX_ADDRS`] in all, [`MAX_PER_SOURCE`] from the
/// gossip of any one peer, and failing addresses age out.
#[derive(Debug, Default)]
pub(crate) struct AddrBook {
    entries: BTreeMap<String, Entry>,
    per_source: BTreeMap<String, usize>,
    banned: BTreeMap<String, Instant>,
    /// This node's own addresses (listen, advertised, and any found to lead back to us).
    own: Vec<String>,
}

impl AddrBook {
    /// Returns an empty book that never takes the addresses in `own`.
    pub fn new(own: impl IntoIterator<Item = String>) -> Self {
        AddrBook {
            own: own.into_iter().collect(),
            ..AddrBook::default()
        }
    }

    /// Returns the number of addresses held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Tells whether `addr` is held.
    #[cfg(test)]
    fn contains(&self, addr: &str) -> bool {
        self.entries.contains_key(addr)
    }

    /// Tells whether `addr` is one of this node's own.
    pub(crate) fn is_own(&self, addr: &str) -> bool {
        self.own.iter().any(|o| o == addr)
    }

    /// Records that `addr` leads back to this node (found when dialling it); forgets it.
    pub(crate) fn add_own(&mut self, addr: &str) {
        self.remove(addr);
        if self.own.len() < 16 && !self.is_own(addr) {
            self.own.push(addr.to_owned());
        }
    }

    /// Adds `addr`, learned from `source`; false when it was refused or known already. A
    /// better source (seed, registry, the node itself) replaces a gossiped one. When the
    /// book is full a failing address makes room; gossip never pushes out a working one.
    pub fn add(&mut self, addr: &str, source: Source, now: Instant) -> bool {
        if self.is_own(addr) || self.is_banned(addr, now) || !dialable(addr) {
            return false;
        }
        if let Some(e) = self.entries.get_mut(addr) {
            if matches!(e.source, Source::Gossip(_)) && !matches!(source, Source::Gossip(_)) {
                let old = std::mem::replace(&mut e.source, source);
                self.uncount(&old);
            }
            return false;
        }
        if let Source::Gossip(from) = &source
            && self.per_source.get(from).copied().unwrap_or(0) >= MAX_PER_SOURCE
        {
            return false;
        }
        if self.entries.len() >= MAX_ADDRS && !self.make_room(&source) {
            return false;
        }
        if let Source::Gossip(from) = &source {
            *self.per_source.entry(from.clone()).or_default() += 1;
        }
        self.entries.insert(
            addr.to_owned(),
            Entry {
                source,
                last_success: None,
                retry_at: None,
                failures: 0,
            },
        );
        true
    }

    /// Frees one slot for an address from `source`: the entry with the most failures, or,
    /// for a source better than gossip, a gossiped address never reached.
    fn make_room(&mut self, source: &Source) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.source != Source::Seed && e.failures > 0)
            .max_by_key(|(_, e)| e.failures)
            .map(|(a, _)| a.clone())
            .or_else(|| {
                if matches!(source, Source::Gossip(_)) {
                    return None;
                }
                self.entries
                    .iter()
                    .find(|(_, e)| {
                        matches!(e.source, Source::Gossip(_)) && e.last_success.is_none()
                    })
                    .map(|(a, _)| a.clone())
            });
        match victim {
            Some(a) => {
                self.remove(&a);
                true
            }
            None => false,
        }
    }

    fn uncount(&mut self, source: &Source) {
        if let Source::Gossip(from) = source
            && let Some(n) = self.per_source.get_mut(from)
        {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(from);
            }
        }
    }

    /// Forgets `addr`; false when it was not held.
    pub fn remove(&mut self, addr: &str) -> bool {
        match self.entries.remove(addr) {
            Some(e) => {
                self.uncount(&e.source);
                true
            }
            None => false,
        }
    }

    /// Returns up to `n` addresses to dial now, in random order, skipping those `busy`
    /// says are linked or being dialled, banned ones and those waiting out a failure.
    /// Addresses that worked before come first.
    pub(crate) fn candidates(
        &self,
        n: usize,
        now: Instant,
        busy: impl Fn(&str) -> bool,
        rng: &mut impl Rng,
    ) -> Vec<String> {
        let ready = |(a, e): &(&String, &Entry)| {
            e.retry_at.is_none_or(|t| now >= t) && !busy(a) && !self.is_banned(a, now)
        };
        let mut picked: Vec<String> = self
            .entries
            .iter()
            .filter(|p| ready(p) && p.1.last_success.is_some())
            .map(|(a, _)| a.clone())
            .choose_multiple(rng, n);
        if picked.len() < n {
            let more = self
                .entries
                .iter()
                .filter(|p| ready(p) && p.1.last_success.is_none())
                .map(|(a, _)| a.clone())
                .choose_multiple(rng, n - picked.len());
            picked.extend(more);
        }
        picked
    }

    /// Returns when the next address waiting out a failure may be dialled, if any.
    pub(crate) fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| e.retry_at)
            .filter(|t| *t > now)
            .min()
    }

    /// Tells whether a handshake with `addr` ever succeeded (since it was last added).
    pub(crate) fn has_succeeded(&self, addr: &str) -> bool {
        self.entries
            .get(addr)
            .is_some_and(|e| e.last_success.is_some())
    }

    /// Records a successful handshake with `addr`.
    pub(crate) fn succeeded(&mut self, addr: &str, now: Instant) {
        if let Some(e) = self.entries.get_mut(addr) {
            e.last_success = Some(now);
            e.failures = 0;
            e.retry_at = None;
        }
    }

    /// Records a failure to reach `addr` (or a link to it lost); returns true when the
    /// address aged out and was forgotten. Seeds are kept, waiting longer each time.
    pub fn failed(&mut self, addr: &str, now: Instant) -> bool {
        let Some(e) = self.entries.get_mut(addr) else {
            return false;
        };
        e.failures = e.failures.saturating_add(1);
        let wait = FIRST_BACKOFF
            .saturating_mul(1 << e.failures.min(16).saturating_sub(1))
            .min(MAX_BACKOFF);
        e.retry_at = Some(now + wait);
        // A node that dialled us and announced an address we never reached is taken at its
        // word once: a peer must not make us dial whatever address it names again and again.
        let limit = if e.source == Source::Hello && e.last_success.is_none() {
            1
        } else {
            MAX_FAILURES
        };
        if e.failures >= limit && e.source != Source::Seed {
            self.remove(addr);
            return true;
        }
        false
    }

    /// Refuses `addr` until `until`, and forgets it.
    pub fn ban(&mut self, addr: &str, until: Instant, now: Instant) {
        self.remove(addr);
        if self.banned.len() >= MAX_BANNED {
            self.banned.retain(|_, t| *t > now);
            if self.banned.len() >= MAX_BANNED {
                // Every slot holds a live ban: the one ending first gives way.
                if let Some(first) = self
                    .banned
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(a, _)| a.clone())
                {
                    self.banned.remove(&first);
                }
            }
        }
        self.banned.insert(addr.to_owned(), until);
    }

    /// Lifts a ban on `addr`.
    pub(crate) fn unban(&mut self, addr: &str) {
        self.banned.remove(addr);
    }

    /// Tells whether `addr` is banned at `now`.
    pub(crate) fn is_banned(&self, addr: &str, now: Instant) -> bool {
        self.banned.get(addr).is_some_and(|t| now < *t)
    }

    /// Returns up to `n` addresses worth sharing with a peer at `to` (its IP), at random:
    /// those that are not failing, never a loopback address to a peer on another host, and
    /// never the peer's own `exclude` address.
    pub fn sample(
        &self,
        n: usize,
        to: Option<IpAddr>,
        exclude: Option<&str>,
        rng: &mut impl Rng,
    ) -> Vec<String> {
        let remote_is_local = to.is_none_or(|ip| ip.is_loopback());
        self.entries
            .iter()
            .filter(|(a, e)| {
                e.failures == 0
                    && Some(a.as_str()) != exclude
                    && (remote_is_local || !is_loopback(a))
            })
            .map(|(a, _)| a.clone())
            .choose_multiple(rng, n)
    }
}

/// Tells whether `addr` (`host:port`) names a loopback host.
pub fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Tells whether `addr` could be dialled at all: `host:port` with a port and a host that is
/// not the unspecified address (`0.0.0.0`, `::`).
fn dialable(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty()
        && port.parse::<u16>().is_ok_and(|p| p != 0)
        && !host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::limits::MAX_SHARED;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::time::Duration;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// The book never holds more than its cap, and one peer's gossip fills only its share.
    #[test]
    fn book_is_capped_in_all_and_per_source() {
        let now = Instant::now();
        let mut book = AddrBook::new([]);
        let mut taken = 0;
        for i in 0..1000 {
            taken += book.add(
                &format!("10.0.{}.{}:5001", i / 250, i % 250),
                Source::Gossip("a:1".into()),
                now,
            ) as usize;
        }
        assert_eq!(taken, MAX_PER_SOURCE);
        for s in 0..100 {
            for i in 0..MAX_PER_SOURCE {
                book.add(
                    &format!("10.{s}.1.{i}:5001"),
                    Source::Gossip(format!("p{s}:1")),
                    now,
                );
            }
        }
        assert_eq!(book.len(), MAX_ADDRS);
        // A registry entry still finds room by pushing out an address nobody reached.
        assert!(book.add("127.0.0.1:6000", Source::Registry, now));
        assert_eq!(book.len(), MAX_ADDRS);
        assert!(book.contains("127.0.0.1:6000"));
    }

    /// Own, unspecified and malformed addresses are never taken; banned ones wait.
    #[test]
    fn own_unspecified_and_banned_addresses_are_refused() {
        let now = Instant::now();
        let mut book = AddrBook::new(["127.0.0.1:5001".to_owned()]);
        assert!(!book.add("127.0.0.1:5001", Source::Hello, now));
        assert!(!book.add("0.0.0.0:5002", Source::Hello, now));
        assert!(!book.add("[::]:5002", Source::Hello, now));
        assert!(!book.add("nohost", Source::Hello, now));
        assert!(!book.add("10.0.0.1:0", Source::Hello, now));
        book.ban("10.0.0.2:5001", now + Duration::from_secs(60), now);
        assert!(!book.add("10.0.0.2:5001", Source::Seed, now));
        assert!(book.add("10.0.0.2:5001", Source::Seed, now + Duration::from_secs(61)));
        book.add_own("10.0.0.2:5001");
        assert!(!book.contains("10.0.0.2:5001"));
        assert!(!book.add("10.0.0.2:5001", Source::Seed, now + Duration::from_secs(61)));
    }

    /// A failing address waits longer each time and, unless it is a seed, ages out.
    #[test]
    fn failing_addresses_back_off_and_age_out() {
        let now = Instant::now();
        let mut book = AddrBook::new([]);
        book.add("10.0.0.1:1", Source::Gossip("x:1".into()), now);
        book.add("10.0.0.2:1", Source::Seed, now);
        let busy = |_: &str| false;
        assert_eq!(book.candidates(8, now, busy, &mut rng()).len(), 2);
        assert!(!book.failed("10.0.0.1:1", now));
        assert!(!book.failed("10.0.0.2:1", now));
        assert!(book.candidates(8, now, busy, &mut rng()).is_empty());
        assert_eq!(book.next_retry(now), Some(now + FIRST_BACKOFF));
        let later = now + FIRST_BACKOFF;
        assert_eq!(book.candidates(8, later, busy, &mut rng()).len(), 2);
        for _ in 1..MAX_FAILURES - 1 {
            assert!(!book.failed("10.0.0.1:1", later));
        }
        assert!(book.failed("10.0.0.1:1", later), "aged out");
        assert!(!book.contains("10.0.0.1:1"));
        for _ in 0..20 {
            assert!(!book.failed("10.0.0.2:1", later));
        }
        assert!(book.contains("10.0.0.2:1"), "seeds stay");
        assert_eq!(book.next_retry(later), Some(later + MAX_BACKOFF));
        // A source's share is given back when its addresses go.
        assert!(!book.per_source.contains_key("x:1"));
    }

    /// An address a node announced in its `hello` and that we never reached is forgotten
    /// at its first failure; once reached, it ages out as any other.
    #[test]
    fn an_unreached_hello_address_is_dialled_once() {
        let now = Instant::now();
        let mut book = AddrBook::new([]);
        book.add("10.0.0.1:1", Source::Hello, now);
        book.add("10.0.0.2:1", Source::Hello, now);
        book.succeeded("10.0.0.2:1", now);
        assert!(book.failed("10.0.0.1:1", now), "forgotten at once");
        assert!(!book.contains("10.0.0.1:1"));
        assert!(!book.failed("10.0.0.2:1", now), "reached before: kept");
        assert!(book.contains("10.0.0.2:1"));
    }

    /// Candidates skip busy addresses and prefer those that worked.
    #[test]
    fn candidates_prefer_addresses_that_worked() {
        let now = Instant::now();
        let mut book = AddrBook::new([]);
        for i in 0..20 {
            book.add(&format!("10.0.0.{i}:1"), Source::Registry, now);
        }
        book.succeeded("10.0.0.3:1", now);
        book.succeeded("10.0.0.4:1", now);
        let busy = |a: &str| a == "10.0.0.4:1";
        let picked = book.candidates(3, now, busy, &mut rng());
        assert_eq!(picked.len(), 3);
        assert_eq!(picked[0], "10.0.0.3:1");
        assert!(!picked.contains(&"10.0.0.4:1".to_owned()));
    }

    /// Loopback addresses are shared only with peers on this host; failing ones never.
    #[test]
    fn samples_keep_loopback_addresses_on_this_host() {
        let now = Instant::now();
        let mut book = AddrBook::new([]);
        book.add("127.0.0.1:5002", Source::Registry, now);
        book.add("10.0.0.9:5001", Source::Hello, now);
        book.add("10.0.0.8:5001", Source::Hello, now);
        book.failed("10.0.0.8:5001", now);
        let remote: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(
            book.sample(32, Some(remote), None, &mut rng()),
            vec!["10.0.0.9:5001".to_owned()]
        );
        let mut local = book.sample(32, Some("127.0.0.1".parse().unwrap()), None, &mut rng());
        local.sort();
        assert_eq!(
            local,
            vec!["10.0.0.9:5001".to_owned(), "127.0.0.1:5002".to_owned()]
        );
        assert_eq!(
            book.sample(32, Some(remote), Some("10.0.0.9:5001"), &mut rng()),
            Vec::<String>::new()
        );
        for i in 0..100 {
            book.add(&format!("10.1.0.{i}:1"), Source::Registry, now);
        }
        assert_eq!(
            book.sample(MAX_SHARED, Some(remote), None, &mut rng())
                .len(),
            MAX_SHARED
        );
    }

    /// The ban list is capped like the book.
    #[test]
    fn ban_list_is_capped() {
        let now = Instant::now();
        let mut book = AddrBook::new([]);
        for i in 0..(MAX_BANNED + 10) {
            book.ban(
                &format!("10.2.{}.{}:1", i / 250, i % 250),
                now + Duration::from_secs(600 + i as u64),
                now,
            );
        }
        assert_eq!(book.banned.len(), MAX_BANNED);
        assert!(book.is_banned(
            &format!(
                "10.2.{}.{}:1",
                (MAX_BANNED + 9) / 250,
                (MAX_BANNED + 9) % 250
            ),
            now
        ));
    }
}
