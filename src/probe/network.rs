//! The network as the probe sees it: the registry's nodes asked for their status, many at
//! once (`GET /nodes`), and a history of those answers over the last minutes, sampled in
//! the background (`GET /history`) so that a page opened late still shows what happened.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::{NodeId, ProbeError, ProbeState};
use crate::message::{ErrorCode, Status};
use crate::registry::Registry;

/// How often the background sampler asks every node for its status.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: ten minutes at [`SAMPLE_INTERVAL`].
pub(crate) const MAX_SAMPLES: usize = 300;
/// Nodes kept per sample (a registry is a file anyone on the host can write).
pub(crate) const MAX_NODES_PER_SAMPLE: usize = 1024;
/// Status calls open at once while gathering.
const MAX_STATUS_CALLS: usize = 64;
/// Time limit of one node's status call while gathering.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// One node's answer, or why it gave none.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The node as routes name it: its port for a registry node, its address for one the
    /// crawl found.
    pub id: NodeId,
    /// The host the registry names, or the crawled node's IP.
    pub host: String,
    /// The node's status, or the error of the call.
    pub status: Result<Status, String>,
}

impl NodeView {
    /// The JSON of one `/nodes` entry: `{id, port, host, admin, up, status}` or
    /// `{id, port, host, admin, up, error}`; `admin` is whether the probe may send the
    /// node admin requests (a registry node, whose cookie is under the probe's home).
    pub fn to_json(&self) -> Value {
        let admin = matches!(self.id, NodeId::Port(_));
        let (id, port, host) = (self.id, self.id.port(), &self.host);
        match &self.status {
            Ok(st) => {
                json!({ "id": id, "port": port, "host": host, "admin": admin, "up": true, "status": st })
            }
            Err(e) => {
                json!({ "id": id, "port": port, "host": host, "admin": admin, "up": false, "error": e })
            }
        }
    }
}

/// Asks every node of the registry for its status, all at once, each call within
/// [`STATUS_TIMEOUT`]; the registry file is read off the runtime.
pub(crate) async fn gather(state: &ProbeState) -> Result<Vec<NodeView>, ProbeError> {
    let registry = Registry::in_home(&state.home);
    let path = registry.path().to_path_buf();
    let internal = |message: String| ProbeError::Node {
        code: ErrorCode::Internal,
        node: NodeId::Port(0),
        message,
    };
    let entries = tokio::task::spawn_blocking(move || registry.entries())
        .await
        .map_err(|e| internal(format!("registry task failed: {e}")))?
        .map_err(|e| internal(format!("cannot read {}: {e}", path.display())))?;
    // The registry lists each port once, at most `registry::MAX_ENTRIES`; asked
    // [`MAX_STATUS_CALLS`] at a time.
    let checks = entries.into_iter().map(|(port, host)| async move {
        let addr = std::net::SocketAddr::new(state.node_host, port);
        let client = crate::client::NodeClient::new(addr.to_string()).with_timeout(STATUS_TIMEOUT);
        let status = client.status().await.map_err(|e| e.to_string());
        NodeView {
            id: NodeId::Port(port),
            host,
            status,
        }
    });
    let mut views: Vec<NodeView> = futures::StreamExt::collect(futures::StreamExt::buffered(
        futures::stream::iter(checks),
        MAX_STATUS_CALLS,
    ))
    .await;
    if let Some(crawl) = &state.crawl {
        views.extend(beyond_registry(state.node_host, &views, crawl.views()));
    }
    Ok(views)
}

/// The crawl's nodes that are not the registry's own: neither a registry port on the node
/// host (or on loopback, when that is the node host) nor a node reporting the same listen
/// address as a registry node (a node reached at two addresses is listed once).
fn beyond_registry(
    node_host: std::net::IpAddr,
    registry: &[NodeView],
    crawled: Vec<(std::net::SocketAddr, Result<Status, String>)>,
) -> Vec<NodeView> {
    let ports: HashSet<u16> = registry.iter().map(|v| v.id.port()).collect();
    let listens: HashSet<&str> = registry
        .iter()
        .filter_map(|v| v.status.as_ref().ok())
        .map(|s| s.listen.as_str())
        .filter(|l| {
            l.parse::<std::net::SocketAddr>()
                .is_ok_and(|a| !a.ip().is_unspecified())
        })
        .collect();
    let on_node_host =
        |ip: std::net::IpAddr| ip == node_host || (node_host.is_loopback() && ip.is_loopback());
    crawled
        .into_iter()
        .filter(|(addr, _)| !(on_node_host(addr.ip()) && ports.contains(&addr.port())))
        .filter(|(_, st)| {
            st.as_ref()
                .map_or(true, |s| !listens.contains(s.listen.as_str()))
        })
        .map(|(addr, status)| NodeView {
            id: NodeId::Addr(addr),
            host: addr.ip().to_string(),
            status,
        })
        .collect()
}

/// One node in a sample: `[id, height, hash_rate, reorgs]` on the wire, `id` as `/nodes`
/// gives it (a port, or a crawled node's `"ip:port"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point(pub NodeId, pub u64, pub f64, pub u64);

/// The network at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch (the probe's clock).
    pub t: i64,
    /// Nodes that answered.
    pub up: usize,
    /// Nodes of the registry that did not.
    pub down: usize,
    /// Distinct tips among the nodes that answered (more than one: a fork or a block on its
    /// way).
    pub tips: usize,
    /// The nodes that answered, by id (ports first, then addresses).
    pub nodes: Vec<Point>,
}

impl Sample {
    /// Summarises `views` taken at `t`.
    pub fn of(t: i64, views: &[NodeView]) -> Sample {
        let mut tips = HashSet::new();
        let mut nodes = Vec::new();
        for v in views {
            if let Ok(st) = &v.status {
                tips.insert(st.tip);
                if nodes.len() < MAX_NODES_PER_SAMPLE {
                    nodes.push(Point(v.id, st.height, st.hash_rate, st.reorgs));
                }
            }
        }
        nodes.sort_by_key(|p| p.0);
        Sample {
            t,
            up: views.iter().filter(|v| v.status.is_ok()).count(),
            down: views.iter().filter(|v| v.status.is_err()).count(),
            tips: tips.len(),
            nodes,
        }
    }
}

/// The last [`MAX_SAMPLES`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Adds a sample, dropping the oldest beyond [`MAX_SAMPLES`]. A sample not later than
    /// the newest (a clock stepped back) replaces nothing and is dropped.
    pub fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.back().is_some_and(|last| last.t >= sample.t) {
            return;
        }
        if samples.len() == MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples taken after `since` (milliseconds since the epoch), oldest first.
    pub fn since(&self, since: i64) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.iter().filter(|s| s.t > since).cloned().collect()
    }
}

/// The body of `GET /history`.
#[derive(Debug, Serialize)]
pub(crate) struct HistoryReply {
    /// Time between two samples (0: sampling is off).
    pub(crate) interval_ms: u64,
    /// The samples asked for, oldest first.
    pub samples: Vec<Sample>,
}

/// Samples the network every `interval` until `shutdown` is cancelled.
pub(crate) async fn sample_forever(
    state: std::sync::Arc<ProbeState>,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match gather(&state).await {
            Ok(views) => state
                .history
                .record(Sample::of(chrono::Utc::now().timestamp_millis(), &views)),
            Err(e) => tracing::debug!("history sample skipped: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockHash;

    fn view(port: u16, height: u64, tip: u8) -> NodeView {
        let mut hash = [0u8; 32];
        hash[0] = tip;
        let status = Status {
            listen: format!("127.0.0.1:{port}"),
            height,
            tip: BlockHash(hash),
            work: "0".into(),
            difficulty: 8,
            peers: vec![],
            outbound: vec![],
            inbound: vec![],
            mining: false,
            hash_rate: 10.0,
            genesis: None,
            reorgs: 1,
            withheld: None,
        };
        NodeView {
            id: NodeId::Port(port),
            host: "127.0.0.1".into(),
            status: Ok(status),
        }
    }

    /// A sample counts nodes up and down and distinct tips, and lists the live ones by port.
    #[test]
    fn a_sample_summarises_the_network() {
        let down = NodeView {
            id: NodeId::Port(5000),
            host: "127.0.0.1".into(),
            status: Err("refused".into()),
        };
        let views = [view(5003, 4, 2), view(5001, 5, 1), down, view(5002, 5, 1)];
        let s = Sample::of(7, &views);
        assert_eq!((s.up, s.down, s.tips), (3, 1, 2));
        let ports: Vec<u16> = s.nodes.iter().map(|p| p.0.port()).collect();
        assert_eq!(ports, [5001, 5002, 5003]);
        assert_eq!(
            serde_json::to_value(s.nodes[0]).unwrap(),
            json!([5001, 5, 10.0, 1])
        );
    }

    /// The history keeps the newest MAX_SAMPLES in time order and answers "since".
    #[test]
    fn history_is_bounded_and_ordered() {
        let h = History::default();
        for t in 1..=(MAX_SAMPLES as i64 + 10) {
            h.record(Sample::of(t, &[view(5001, t as u64, 1)]));
        }
        h.record(Sample::of(3, &[]));
        let all = h.since(0);
        assert_eq!(all.len(), MAX_SAMPLES);
        assert_eq!(all[0].t, 11);
        assert_eq!(all.last().unwrap().t, MAX_SAMPLES as i64 + 10);
        assert_eq!(h.since(MAX_SAMPLES as i64 + 8).len(), 2);
    }
}
