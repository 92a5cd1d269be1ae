//! The probe: an HTTP API that forwards each request to a node over its socket, and a
//! live dashboard.

pub mod crawl;
mod error;
mod guard;
pub mod network;
mod routes;
pub mod spawn;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::ProbeError;
pub use routes::app;

/// How long a stopping probe lets requests in flight finish (a `mine` may take minutes).
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the probe on `listener` until `shutdown` is cancelled, then lets requests in
/// flight finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ProbeState>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    if let Some(crawl) = &state.crawl {
        tokio::spawn(crawl::crawl_forever(
            state.clone(),
            crawl.clone(),
            shutdown.clone(),
        ));
    }
    if !state.sample_interval.is_zero() {
        tokio::spawn(network::sample_forever(
            state.clone(),
            state.sample_interval,
            shutdown.clone(),
        ));
    }
    let graceful = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        served = graceful => served,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                "requests still in flight {} s after the stop; closing them",
                SHUTDOWN_GRACE.as_secs()
            );
            Ok(())
        }
    }
}

use crate::client::{NodeClient, read_cookies, with_cookies};

/// A node as a route names it: by port, on the probe's node host (`/status/5001`), or by
/// address, for a node the crawl found elsewhere (`/status/10.0.0.2:5001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(untagged)]
pub enum NodeId {
    /// A node on the probe's node host.
    Port(u16),
    /// A node the crawl found, at its address.
    Addr(std::net::SocketAddr),
}

impl NodeId {
    /// Parses a route's node: a port from 1 to 65535, or an `ip:port` address.
    pub fn parse(raw: &str) -> Option<NodeId> {
        if let Ok(port) = raw.parse::<u16>() {
            return (port > 0).then_some(NodeId::Port(port));
        }
        raw.parse::<std::net::SocketAddr>()
            .ok()
            .filter(|a| a.port() > 0)
            .map(NodeId::Addr)
    }

    /// The node's port.
    pub fn port(&self) -> u16 {
        match self {
            NodeId::Port(p) => *p,
            NodeId::Addr(a) => a.port(),
        }
    }
}

/// "on port 5001" or "at 10.0.0.2:5001", as in "node on port 5001 is unreachable".
impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeId::Port(p) => write!(f, "on port {p}"),
            NodeId::Addr(a) => write!(f, "at {a}"),
        }
    }
}

/// Largest request body the probe reads.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Debug)]
pub struct ProbeState {
    /// The only host nodes are reached on.
    pub node_host: IpAddr,
    /// The powchain home: registry and default node data directories.
    pub home: PathBuf,
    /// Timeout of ordinary node calls.
    pub timeout: Duration,
    /// Timeout of mining calls.
    pub(crate) mine_timeout: Duration,
    /// Host names the probe answers to besides addresses and loopback names.
    pub(crate) allowed_hosts: Vec<String>,
    /// How often the history is sampled (zero: never).
    pub(crate) sample_interval: Duration,
    /// The network over the last minutes.
    pub history: network::History,
    /// The metrics recorder's handle, when the process installed one (`GET /metrics`).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The crawl of the network beyond the registry (`probe --crawl`), when on.
    pub crawl: Option<Arc<crawl::Crawl>>,
    pool: Mutex<HashMap<std::net::SocketAddr, Vec<NodeClient>>>,
}

impl ProbeState {
    /// Returns the state of a probe reaching nodes on `node_host`, with `home` as powchain home.
    pub fn new(node_host: IpAddr, home: PathBuf) -> Arc<Self> {
        Self::with_timeouts(
            node_host,
            home,
            Duration::from_secs(10),
            Duration::from_secs(600),
        )
    }

    /// As [`ProbeState::new`], with the timeouts of ordinary and mining calls.
    pub fn with_timeouts(
        node_host: IpAddr,
        home: PathBuf,
        timeout: Duration,
        mine_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(ProbeState {
            node_host,
            home,
            timeout,
            mine_timeout,
            allowed_hosts: Vec::new(),
            sample_interval: network::SAMPLE_INTERVAL,
            history: network::History::default(),
            metrics: None,
            crawl: None,
            pool: Mutex::new(HashMap::new()),
        })
    }

    /// As [`ProbeState::new`], answering also to the host names in `allowed_hosts`.
    pub fn for_hosts(node_host: IpAddr, home: PathBuf, allowed_hosts: Vec<String>) -> Arc<Self> {
        let mut state = Arc::into_inner(Self::new(node_host, home))
            .unwrap_or_else(|| unreachable!("a state just made has no other owner"));
        state.allowed_hosts = allowed_hosts;
        Arc::new(state)
    }

    /// Returns this state sampling the history every `interval` (zero: never); call it
    /// before the state is shared.
    /// Serves `GET /metrics` from `handle` (the process's recorder).
    pub fn with_metrics(
        self: Arc<Self>,
        handle: metrics_exporter_prometheus::PrometheusHandle,
    ) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut state) => {
                state.metrics = Some(handle);
                Arc::new(state)
            }
            Err(shared) => shared,
        }
    }

    /// Crawls the network from the registry's nodes and `seeds` (`host:port`); call it
    /// before the state is shared.
    pub fn with_crawl(self: Arc<Self>, seeds: Vec<String>) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut state) => {
                state.crawl = Some(Arc::new(crawl::Crawl::new(seeds)));
                Arc::new(state)
            }
            Err(shared) => shared,
        }
    }

    /// Samples the network every `interval` for the dashboard's history (zero: never).
    pub fn with_sample_interval(self: Arc<Self>, interval: Duration) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut state) => {
                state.sample_interval = interval;
                Arc::new(state)
            }
            Err(shared) => shared,
        }
    }

    /// The address of `node`: a port on the node host, or an address the crawl found (any
    /// other address is refused: the probe forwards to nodes, not to whatever a URL names).
    pub(crate) fn resolve(&self, node: NodeId) -> Result<std::net::SocketAddr, ProbeError> {
        match node {
            NodeId::Port(port) => Ok(std::net::SocketAddr::new(self.node_host, port)),
            NodeId::Addr(addr) => {
                if self.crawl.as_ref().is_some_and(|c| c.knows(&addr)) {
                    Ok(addr)
                } else {
                    Err(ProbeError::NotFound(format!(
                        "{addr} is no node this probe's crawl found (name a node of the \
                         probe's host by its port; start the probe with --crawl to reach \
                         others)"
                    )))
                }
            }
        }
    }

    /// Takes a pooled client of the node at `addr` (a new one if none is idle).
    fn take(&self, addr: std::net::SocketAddr) -> NodeClient {
        let idle = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&addr)
            .and_then(Vec::pop);
        idle.unwrap_or_else(|| {
            NodeClient::new(addr.to_string())
                .with_timeout(self.timeout)
                .with_mine_timeout(self.mine_timeout)
        })
    }

    fn give_back(&self, addr: std::net::SocketAddr, client: NodeClient) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a pool per address the probe may reach (the registry's ports and the
        // crawl's nodes), each of at most 64 idle clients.
        if !pool.contains_key(&addr) && pool.len() >= crawl::MAX_NODES + 1024 {
            return;
        }
        let idle = pool.entry(addr).or_default();
        if idle.len() < 64 {
            idle.push(client);
        }
    }

    /// Runs `f` with a pooled client of `node`; the client returns to the pool only after
    /// a success.
    pub(crate) async fn with_node<T, F, Fut>(&self, node: NodeId, f: F) -> Result<T, ProbeError>
    where
        F: FnOnce(Arc<NodeClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::client::ClientError>>,
    {
        let addr = self.resolve(node)?;
        let client = Arc::new(self.take(addr));
        let result = f(client.clone()).await;
        match (result, Arc::try_unwrap(client)) {
            (Ok(v), Ok(c)) => {
                self.give_back(addr, c);
                Ok(v)
            }
            (Ok(v), Err(_)) => Ok(v),
            (Err(e), _) => Err(ProbeError::from_client(node, e)),
        }
    }

    /// Runs the admin call `f` on the node on `port` with a client carrying its cookie. The
    /// probe does not know the node's network, so it tries the cookie of each data directory
    /// of that port under its home (the default network's first) until one is accepted;
    /// the files are read off the runtime.
    /// A node the crawl found elsewhere gets none: the probe holds no cookie of it.
    pub(crate) async fn with_admin<T, F, Fut>(&self, node: NodeId, f: F) -> Result<T, ProbeError>
    where
        F: Fn(NodeClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::client::ClientError>>,
    {
        let NodeId::Port(port) = node else {
            return Err(ProbeError::Unauthorized(format!(
                "node {node} was found by the crawl: the probe holds no cookie of it, and \
                 admin requests (shutdown, peers) reach only nodes of its registry by port"
            )));
        };
        let addr = self.resolve(node)?;
        let home = self.home.clone();
        let cookies = read_cookies(move || crate::home::node_dirs(&home, port)).await;
        let client = |cookie| {
            NodeClient::new(addr.to_string())
                .with_timeout(self.timeout)
                .with_cookie(cookie)
        };
        with_cookies(cookies, client, f)
            .await
            .map_err(|e| ProbeError::from_client(node, e))
    }
}
