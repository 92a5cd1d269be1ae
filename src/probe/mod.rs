//! The probe: an HTTP API that forwards each request to a node over its socket, and a
//! live dashboard.

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
pub use guard::host_allowed;
pub use routes::{MAX_IN_FLIGHT, app};

/// How long a stopping probe lets requests in flight finish (a `mine` may take minutes).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the probe on `listener` until `shutdown` is cancelled, then lets requests in
/// flight finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ProbeState>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
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

/// Largest request body the probe reads.
pub const MAX_BODY: usize = 1024 * 1024;

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
    pub mine_timeout: Duration,
    /// Host names the probe answers to besides addresses and loopback names.
    pub allowed_hosts: Vec<String>,
    /// How often the history is sampled (zero: never).
    pub sample_interval: Duration,
    /// The network over the last minutes.
    pub history: network::History,
    /// The metrics recorder's handle, when the process installed one (`GET /metrics`).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pool: Mutex<HashMap<u16, Vec<NodeClient>>>,
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

    fn addr(&self, port: u16) -> String {
        std::net::SocketAddr::new(self.node_host, port).to_string()
    }

    /// Takes a pooled client of the node on `port` (a new one if none is idle).
    fn take(&self, port: u16) -> NodeClient {
        let idle = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&port)
            .and_then(Vec::pop);
        idle.unwrap_or_else(|| {
            NodeClient::new(self.addr(port))
                .with_timeout(self.timeout)
                .with_mine_timeout(self.mine_timeout)
        })
    }

    fn give_back(&self, port: u16, client: NodeClient) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(port).or_default();
        if idle.len() < 64 {
            idle.push(client);
        }
    }

    /// Runs `f` with a pooled client of the node on `port`; the client returns to the pool
    /// only after a success.
    pub async fn with_node<T, F, Fut>(&self, port: u16, f: F) -> Result<T, ProbeError>
    where
        F: FnOnce(Arc<NodeClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::client::ClientError>>,
    {
        let client = Arc::new(self.take(port));
        let result = f(client.clone()).await;
        match (result, Arc::try_unwrap(client)) {
            (Ok(v), Ok(c)) => {
                self.give_back(port, c);
                Ok(v)
            }
            (Ok(v), Err(_)) => Ok(v),
            (Err(e), _) => Err(ProbeError::from_client(port, e)),
        }
    }

    /// Runs the admin call `f` on the node on `port` with a client carrying its cookie. The
    /// probe does not know the node's network, so it tries the cookie of each data directory
    /// of that port under its home (the default network's first) until one is accepted;
    /// the files are read off the runtime.
    pub async fn with_admin<T, F, Fut>(&self, port: u16, f: F) -> Result<T, ProbeError>
    where
        F: Fn(NodeClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::client::ClientError>>,
    {
        let home = self.home.clone();
        let cookies = read_cookies(move || crate::home::node_dirs(&home, port)).await;
        let client = |cookie| {
            NodeClient::new(self.addr(port))
                .with_timeout(self.timeout)
                .with_cookie(cookie)
        };
        with_cookies(cookies, client, f)
            .await
            .map_err(|e| ProbeError::from_client(port, e))
    }
}
