//! `Links`: keeping links to peers. The peer manager keeps `--max-outbound` links dialled
//! from the address book and replaces those that are lost; one task per outbound or manual
//! link keeps it (handshake, address gossip, sync when the peer has more work, a small ping
//! every [`PING_INTERVAL`]). Inbound links are taken from `hello`s by the handler.
//!
//! It sees the [`PeerSet`] (and its address book), the [`Syncer`] it asks to catch up with a
//! peer of more work, the [`ChainState`] for the handshake's values, and the registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
// tokio's clock: the real one in the binary, the simulated one under simulation.
use tokio::time::Instant;

use super::addrbook::Source;
use super::limits::{
    BEHIND_INTERVAL, MANAGER_TICK, MAX_MANUAL_BACKOFF, MAX_SHARED, PING_INTERVAL, REGISTRY_REREAD,
};
use super::peers::{Direction, PeerSet, normalize_addr};
use super::state::ChainState;
use super::sync::Syncer;
use crate::block::BlockHash;
use crate::client::{ClientError, NodeClient};
use crate::env::Env;
use crate::message::{ErrorCode, Hello, PROTOCOL_VERSION};
use crate::registry::Registry;

/// The node's side of its links.
#[derive(Debug)]
pub(super) struct Links {
    pub(super) peers: Arc<PeerSet>,
    pub(super) sync: Arc<Syncer>,
    pub(super) state: Arc<ChainState>,
    pub(super) registry: Option<Registry>,
    pub(super) env: Env,
    /// `--peer` addresses, learnt at start.
    pub(super) seeds: Vec<String>,
    /// The bound address.
    pub(super) listen: SocketAddr,
    /// The address peers should dial: `--advertise`, else the bound one.
    pub(super) advertised: String,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
}

impl Links {
    /// Returns this node's handshake values.
    pub(super) fn hello(&self) -> Hello {
        hello(&self.state, &self.advertised)
    }

    fn genesis_hash(&self) -> BlockHash {
        self.state.chain().genesis().hash
    }
}

/// Returns the handshake values of a node with `state` that peers dial at `listen`.
pub(super) fn hello(state: &ChainState, listen: &str) -> Hello {
    let chain = state.chain();
    Hello {
        version: PROTOCOL_VERSION,
        genesis: chain.genesis().hash,
        listen: listen.to_owned(),
        height: chain.height(),
        tip: chain.tip().hash,
        work: chain.work().to_string(),
    }
}

/// Puts the configured peers and the registry's `entries` (read by the caller) into the
/// address book and starts the peer manager.
pub(super) fn start(links: &Arc<Links>, entries: Option<Result<Vec<(u16, String)>, String>>) {
    for addr in &links.seeds {
        match normalize_addr(addr) {
            Ok(a) => {
                links.peers.learn(&a, Source::Seed);
            }
            Err(e) => tracing::warn!("ignoring --peer: {e}"),
        }
    }
    learn_registry(links, entries);
    let manager = links.clone();
    links.tasks.spawn(async move { manage(manager).await });
}

fn learn_registry(links: &Links, entries: Option<Result<Vec<(u16, String)>, String>>) {
    match entries {
        Some(Ok(entries)) => {
            for (port, host) in entries {
                links
                    .peers
                    .learn(&format!("{host}:{port}"), Source::Registry);
            }
        }
        Some(Err(e)) => tracing::warn!("{e}"),
        None => {}
    }
}

/// Keeps the outbound links filled from the address book until shutdown; reads the
/// registry again (at most every few seconds) while the book has no candidate for a free
/// slot, so nodes started at the same moment still find each other.
async fn manage(links: Arc<Links>) {
    let mut registry_read = Instant::now();
    loop {
        let wanted = links.peers.outbound_wanted();
        let mut wait = MANAGER_TICK;
        if wanted > 0 {
            let (picked, retry) = links.peers.candidates(wanted);
            let short = picked.len() < wanted;
            for addr in picked {
                links.dial(&addr, Direction::Outbound);
            }
            if let Some(at) = retry {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            if short && registry_read.elapsed() >= REGISTRY_REREAD {
                registry_read = Instant::now();
                if let Some(registry) = links.registry.clone() {
                    let read = links
                        .env
                        .blocking
                        .run(move || {
                            registry.entries().map_err(|e| {
                                format!(
                                    "could not read the registry {}: {e}",
                                    registry.path().display()
                                )
                            })
                        })
                        .await
                        .and_then(|r| r);
                    learn_registry(&links, Some(read));
                }
            }
        }
        tokio::select! {
            biased;
            _ = links.shutdown.cancelled() => return,
            _ = links.peers.changed() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
        }
    }
}

/// Why a handshake did not open a link.
enum Refusal {
    /// The peer is of another network, or banned us: never again (for a while).
    Ban(String),
    /// Every inbound slot of the peer is taken.
    Full,
    /// Nothing answered, or the link broke.
    Down(ClientError),
}

async fn handshake(links: &Links, client: &NodeClient) -> Result<Hello, Refusal> {
    match client.hello(links.hello()).await {
        Ok(theirs) if theirs.genesis != links.genesis_hash() => Err(Refusal::Ban(format!(
            "another network: its genesis is {}, ours is {}",
            theirs.genesis,
            links.genesis_hash()
        ))),
        Ok(theirs) => Ok(theirs),
        Err(e) => match e.error_code() {
            Some(ErrorCode::WrongNetwork) => Err(Refusal::Ban(e.to_string())),
            Some(ErrorCode::TooManyPeers) => Err(Refusal::Full),
            _ => Err(Refusal::Down(e)),
        },
    }
}

/// Keeps the link to one peer: handshake, gossip, sync, then a ping every
/// [`PING_INTERVAL`]. An outbound link that fails or is lost ends, and the manager dials
/// the next candidate; a manual one is re-dialled with backoff until removed.
async fn keep_link(links: Arc<Links>, addr: String, stop: CancellationToken) {
    let Some(client) = links.peers.client(&addr) else {
        return;
    };
    if links.leads_to_self(&addr) {
        tracing::info!(peer = %addr, "address leads back to this node; not dialling it again");
        links.peers.found_own(&addr);
        links.peers.link_ended(&addr);
        return;
    }
    let mut backoff = Duration::from_millis(250);
    let mut failures = 0u32;
    loop {
        let down = match handshake(&links, &client).await {
            Ok(theirs) => {
                failures = 0;
                backoff = Duration::from_millis(250);
                links.peers.connected_to(&addr);
                links.peers.set_version(&addr, theirs.version);
                tracing::info!(peer = %addr, height = theirs.height, "peer connected (outbound)");
                links.peers.mark_known(&addr, theirs.tip);
                if let Ok(addrs) = client.get_addr().await {
                    for a in addrs.iter().take(MAX_SHARED) {
                        if let Ok(a) = normalize_addr(a) {
                            links.peers.learn(&a, Source::Gossip(addr.clone()));
                        }
                    }
                }
                if links.sync.has_less_work_than(&theirs.work) {
                    links.sync.sync_with(&addr).await;
                }
                let behind = links.sync.has_less_work_than(&theirs.work);
                match watch(&links, &client, &addr, &stop, behind).await {
                    None => return,
                    Some(e) => {
                        tracing::info!(peer = %addr, "peer lost: {e}");
                        Some(e)
                    }
                }
            }
            Err(Refusal::Ban(why)) => {
                links.peers.ban(&addr, &why);
                return;
            }
            Err(Refusal::Full) => {
                tracing::debug!(peer = %addr, "peer has no free inbound slot");
                links.peers.unreachable(&addr);
                if links.peers.direction(&addr) != Some(Direction::Manual) {
                    links.peers.link_ended(&addr);
                    return;
                }
                None
            }
            Err(Refusal::Down(e)) => Some(e),
        };
        if let Some(e) = down {
            failures += 1;
            let aged_out = links.peers.unreachable(&addr);
            if failures == 1 {
                tracing::info!(peer = %addr, "peer unreachable: {e}");
                prune_from_registry(&links, &addr).await;
            }
            if aged_out {
                tracing::debug!(peer = %addr, "address aged out of the book");
            }
        }
        if links.peers.direction(&addr) != Some(Direction::Manual) {
            links.peers.link_ended(&addr);
            return;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_MANUAL_BACKOFF);
    }
}

/// Pings a connected peer every [`PING_INTERVAL`] (every [`BEHIND_INTERVAL`] while it
/// claims more work than a sync with it brought us, and at once when a relay to it failed),
/// syncing when its pong shows more work;
/// returns why the link was lost, or `None` when told to stop.
async fn watch(
    links: &Arc<Links>,
    client: &NodeClient,
    addr: &str,
    stop: &CancellationToken,
    mut behind: bool,
) -> Option<ClientError> {
    let alarm = links.peers.alarm(addr)?;
    loop {
        let interval = if behind {
            BEHIND_INTERVAL
        } else {
            PING_INTERVAL
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = alarm.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        let work = match client.ping().await {
            Ok(Some(pong)) => {
                links.peers.mark_known(addr, pong.tip);
                pong.work
            }
            // An older node without `ping`: the handshake is the check.
            Ok(None) => match client.hello(links.hello()).await {
                Ok(h) => h.work,
                Err(e) => return Some(e),
            },
            Err(e) => return Some(e),
        };
        if links.sync.has_less_work_than(&work) {
            links.sync.sync_with(addr).await;
        }
        behind = links.sync.has_less_work_than(&work);
    }
}

/// Removes a registry entry whose node does not answer (off the runtime: a file lock).
async fn prune_from_registry(links: &Links, addr: &str) {
    let Some(registry) = links.registry.clone() else {
        return;
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return;
    };
    let Ok(port) = port.parse::<u16>() else {
        return;
    };
    let host = host.to_owned();
    match links
        .env
        .blocking
        .run(move || registry.remove_if(port, &host))
        .await
    {
        Ok(Ok(true)) => tracing::info!(peer = %addr, "pruned dead node from the registry"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::debug!("registry prune failed: {e}"),
        Err(e) => tracing::debug!("registry prune failed: {e}"),
    }
}

impl Links {
    /// Starts keeping a link to `addr` if it is not one already.
    pub(super) fn dial(self: &Arc<Self>, addr: &str, direction: Direction) {
        let Some(stop) = self.peers.dial(addr, direction, &self.shutdown) else {
            return;
        };
        tracing::debug!(peer = %addr, ?direction, "dialling");
        let (links, addr) = (self.clone(), addr.to_owned());
        self.tasks
            .spawn(async move { keep_link(links, addr, stop).await });
    }

    /// Adds a peer by address (`host:port`, an `http://` prefix tolerated): a manual link,
    /// kept and re-dialled until removed.
    pub(super) fn add_peer(self: &Arc<Self>, addr: &str) -> Result<(), String> {
        let addr = normalize_addr(addr)?;
        if self.peers.is_own(&addr) {
            return Err(format!("{addr} is this node itself"));
        }
        self.peers.learn(&addr, Source::Seed);
        self.dial(&addr, Direction::Manual);
        if !self.peers.is_link(&addr) {
            return Err(format!(
                "{addr} was not added: this node keeps at most {} manual peers",
                super::limits::MAX_MANUAL
            ));
        }
        Ok(())
    }

    /// Tells whether dialling `addr` would reach this node: its listen address, or, when
    /// bound to every interface, the same port on an address of this machine.
    pub(super) fn leads_to_self(&self, addr: &str) -> bool {
        let Ok(target) = addr.parse::<SocketAddr>() else {
            return false;
        };
        if target.port() != self.listen.port() {
            return false;
        }
        let ip = self.listen.ip();
        target.ip() == ip || (ip.is_unspecified() && self.env.net.is_local_ip(target.ip()))
    }
}

/// Returns the address to dial a peer that announced `listen` on a connection from
/// `remote`, or `None` when `listen` is not a numeric `ip:port` (a name would be resolved
/// when dialled, and `LOCALHOST`, `127.1` or `2130706433` all lead to loopback through a
/// resolver: a peer names itself by address). An IPv4-mapped IPv6 address is its IPv4
/// address. A peer bound to every interface (`0.0.0.0:P`) is dialled at the address its
/// connection came from, on port `P`; so is a peer on another host announcing a loopback
/// address (which could only lead to this machine's own services).
pub(crate) fn dial_addr(listen: &str, remote: Option<SocketAddr>) -> Option<String> {
    let announced: SocketAddr = listen.parse().ok()?;
    let ip = announced.ip().to_canonical();
    if announced.port() == 0 {
        return None;
    }
    let remote_is_local = remote.is_none_or(|r| r.ip().to_canonical().is_loopback());
    if ip.is_unspecified() || (ip.is_loopback() && !remote_is_local) {
        let remote = remote?;
        return Some(SocketAddr::new(remote.ip().to_canonical(), announced.port()).to_string());
    }
    Some(SocketAddr::new(ip, announced.port()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unspecified hosts, and loopback hosts announced from another host, are dialled at
    /// the connection's source address; others as announced.
    #[test]
    fn announced_addresses_become_dialable_ones() {
        let far: SocketAddr = "10.0.0.7:41000".parse().unwrap();
        let near: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        assert_eq!(
            dial_addr("0.0.0.0:5001", Some(far)).as_deref(),
            Some("10.0.0.7:5001")
        );
        assert_eq!(
            dial_addr("127.0.0.1:5001", Some(far)).as_deref(),
            Some("10.0.0.7:5001")
        );
        assert_eq!(
            dial_addr("127.0.0.1:5001", Some(near)).as_deref(),
            Some("127.0.0.1:5001")
        );
        assert_eq!(
            dial_addr("[::ffff:127.0.0.1]:5001", Some(far)).as_deref(),
            Some("10.0.0.7:5001"),
            "an IPv4-mapped loopback address is loopback"
        );
        assert_eq!(
            dial_addr("[::ffff:10.0.0.9]:5001", Some(far)).as_deref(),
            Some("10.0.0.9:5001")
        );
        // Names, and the forms a resolver reads as loopback, are not addresses.
        for name in [
            "localhost:5001",
            "LOCALHOST:5001",
            "127.1:5001",
            "2130706433:5001",
            "0x7f000001:5001",
            "127.0.0.1:0",
            "http://127.0.0.1:5001",
        ] {
            assert_eq!(dial_addr(name, Some(near)), None, "{name}");
        }
        assert_eq!(
            dial_addr("10.0.0.9:5001", Some(far)).as_deref(),
            Some("10.0.0.9:5001")
        );
        assert_eq!(dial_addr("0.0.0.0:5001", None), None);
        assert_eq!(dial_addr("nonsense", Some(far)), None);
    }
}
