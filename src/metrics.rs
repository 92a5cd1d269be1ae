//! Prometheus metrics of a node (`node --metrics ADDR`) and of the probe (its `/metrics`).
//!
//! Code records through the [`metrics`] facade's macros under the names below; without an
//! installed recorder (the default, the simulator, the tests' in-process nodes) those are
//! no-ops. [`install`] installs the Prometheus recorder of `metrics-exporter-prometheus`
//! for the process; [`serve`] answers `GET /metrics` with what it renders. Names follow
//! Prometheus's conventions: a `powchain_` prefix, base units (`_seconds`, `_bytes`), and
//! `_total` for counters. The manual's "Metrics" section (docs/operations.md) lists them all.

use std::future::Future;
use std::net::SocketAddr;

use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Height of the node's tip.
pub(crate) const HEIGHT: &str = "powchain_height";
/// Total work of the node's chain (an f64: exact up to 2^53).
pub(crate) const TIP_WORK: &str = "powchain_tip_work";
/// Connected peers, by `direction` (outbound, inbound, manual).
pub(crate) const PEERS: &str = "powchain_peers";
/// Addresses in the address book.
pub(crate) const ADDRESS_BOOK: &str = "powchain_address_book_size";
/// Peers banned.
pub(crate) const BANS: &str = "powchain_bans_total";
/// Blocks offered by peers and clients, by `outcome` (appended, ignored, synced, rejected).
pub(crate) const BLOCKS_RECEIVED: &str = "powchain_blocks_received_total";
/// Blocks refused, by the `rule` they broke (the rule's code, as in `rejected` reasons).
pub(crate) const BLOCKS_REJECTED: &str = "powchain_blocks_rejected_total";
/// Blocks sent to peers, by `how` (push: the whole block; announce: its header).
pub(crate) const BLOCKS_RELAYED: &str = "powchain_blocks_relayed_total";
/// Announcements received, by `outcome` (fetching, ignored, rejected, synced).
pub(crate) const ANNOUNCEMENTS: &str = "powchain_announcements_received_total";
/// Bodies of announced blocks asked for, by `result` (taken, refused, mismatch, failed).
pub(crate) const FETCHES: &str = "powchain_block_fetches_total";
/// Reorgs: a chain with more work replaced blocks the node held.
pub(crate) const REORGS: &str = "powchain_reorgs_total";
/// Blocks a reorg replaced.
pub(crate) const REORG_DEPTH: &str = "powchain_reorg_depth_blocks";
/// From a block's timestamp to this node storing it (a peer's block; 1 s resolution).
pub(crate) const PROPAGATION: &str = "powchain_block_propagation_seconds";
/// Batches of blocks a sync applied.
pub(crate) const SYNC_BATCHES: &str = "powchain_sync_batches_total";
/// Blocks a sync applied.
pub(crate) const SYNC_BLOCKS: &str = "powchain_sync_blocks_total";
/// Requests answered, by `type` (`legacy` for the text commands, `invalid` for payloads
/// that are not one).
pub const REQUESTS: &str = "powchain_requests_total";
/// Bytes of request payloads received, by `type`.
pub(crate) const BYTES_IN: &str = "powchain_received_bytes_total";
/// Bytes of reply payloads sent, by the `type` of the request answered.
pub(crate) const BYTES_OUT: &str = "powchain_sent_bytes_total";
/// Connections open now.
pub(crate) const CONNECTIONS_OPEN: &str = "powchain_connections_open";
/// Connections accepted.
pub(crate) const CONNECTIONS: &str = "powchain_connections_accepted_total";
/// Handshakes refused, by `code` (wrong_network, too_many_peers, bad_peer).
pub(crate) const HELLOS_REFUSED: &str = "powchain_hellos_refused_total";
/// Attempts per second of the current or last mining run.
pub(crate) const HASH_RATE: &str = "powchain_hash_rate";
/// Blocks this node mined and stored.
pub(crate) const BLOCKS_MINED: &str = "powchain_blocks_mined_total";
/// Time of one store commit (an extension or a reorg).
pub(crate) const STORE_COMMIT: &str = "powchain_store_commit_seconds";

/// Requests the probe answered, by `route` (its pattern) and `status`.
pub(crate) const PROBE_REQUESTS: &str = "powchain_probe_requests_total";
/// Time the probe took to answer, by `route`.
pub(crate) const PROBE_LATENCY: &str = "powchain_probe_request_seconds";
/// Nodes of the probe's last `/nodes`, by `state` (up, down).
pub(crate) const PROBE_NODES: &str = "powchain_probe_nodes";
/// Visits of the probe's crawl (`--crawl`), by `result` (ok, failed).
pub(crate) const PROBE_CRAWL_VISITS: &str = "powchain_probe_crawl_visits_total";
/// Addresses the probe's crawl knows, reached or not.
pub(crate) const PROBE_CRAWL_ADDRESSES: &str = "powchain_probe_crawl_addresses";

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, in buckets.
    Histogram,
}

/// Every metric: name, kind, help text (for `# HELP`, and checks of dashboards and
/// documentation against the code).
pub const ALL: [(&str, Kind, &str); 29] = [
    (HEIGHT, Kind::Gauge, "Height of the node's tip."),
    (TIP_WORK, Kind::Gauge, "Total work of the node's chain."),
    (PEERS, Kind::Gauge, "Connected peers, by direction."),
    (ADDRESS_BOOK, Kind::Gauge, "Addresses in the address book."),
    (BANS, Kind::Counter, "Peers banned."),
    (
        BLOCKS_RECEIVED,
        Kind::Counter,
        "Blocks offered by peers and clients, by outcome.",
    ),
    (
        BLOCKS_REJECTED,
        Kind::Counter,
        "Blocks refused, by the rule they broke.",
    ),
    (
        BLOCKS_RELAYED,
        Kind::Counter,
        "Blocks sent to peers, whole (push) or as a header.",
    ),
    (
        ANNOUNCEMENTS,
        Kind::Counter,
        "Block announcements received, by outcome.",
    ),
    (
        FETCHES,
        Kind::Counter,
        "Bodies of announced blocks asked for, by result.",
    ),
    (
        REORGS,
        Kind::Counter,
        "Times a chain with more work replaced blocks held.",
    ),
    (REORG_DEPTH, Kind::Histogram, "Blocks a reorg replaced."),
    (
        PROPAGATION,
        Kind::Histogram,
        "From a peer's block's timestamp to this node storing it.",
    ),
    (
        SYNC_BATCHES,
        Kind::Counter,
        "Batches of blocks a sync applied.",
    ),
    (SYNC_BLOCKS, Kind::Counter, "Blocks a sync applied."),
    (REQUESTS, Kind::Counter, "Requests answered, by type."),
    (
        BYTES_IN,
        Kind::Counter,
        "Request payload bytes received, by type.",
    ),
    (
        BYTES_OUT,
        Kind::Counter,
        "Reply payload bytes sent, by request type.",
    ),
    (CONNECTIONS_OPEN, Kind::Gauge, "Connections open now."),
    (CONNECTIONS, Kind::Counter, "Connections accepted."),
    (
        HELLOS_REFUSED,
        Kind::Counter,
        "Handshakes refused, by error code.",
    ),
    (
        HASH_RATE,
        Kind::Gauge,
        "Attempts per second of the current or last mining run.",
    ),
    (
        BLOCKS_MINED,
        Kind::Counter,
        "Blocks this node mined and stored.",
    ),
    (STORE_COMMIT, Kind::Histogram, "Time of one store commit."),
    (
        PROBE_REQUESTS,
        Kind::Counter,
        "Requests the probe answered, by route and status.",
    ),
    (
        PROBE_LATENCY,
        Kind::Histogram,
        "Time the probe took to answer.",
    ),
    (
        PROBE_NODES,
        Kind::Gauge,
        "Nodes of the probe's last /nodes, by state.",
    ),
    (
        PROBE_CRAWL_VISITS,
        Kind::Counter,
        "Visits of the probe's crawl, by result.",
    ),
    (
        PROBE_CRAWL_ADDRESSES,
        Kind::Gauge,
        "Addresses the probe's crawl knows.",
    ),
];

/// Installs the Prometheus recorder for this process, with the buckets of every histogram
/// and the help text of every metric.
pub fn install() -> Result<PrometheusHandle, String> {
    let seconds = [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let depth = [1.0, 2.0, 3.0, 5.0, 10.0, 100.0, 1000.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(REORG_DEPTH.into()), &depth))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

fn describe() {
    for (name, kind, help) in ALL {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram => describe_histogram!(name, help),
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves: `refresh` runs first
/// (to set the gauges read from state), then the recorder renders.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    refresh: impl Fn() + Clone + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (handle, refresh) = (handle.clone(), refresh.clone());
            async move {
                refresh();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` for the metrics listener; the error names the flag.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}
