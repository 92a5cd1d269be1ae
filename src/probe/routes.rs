//! The probe's routes: the original's four, the second original's per-port routes, status,
//! the registry's nodes, and the dashboard.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use super::{MAX_BODY, NodeId, ProbeError, ProbeState};
use crate::block::Block;
use crate::message::BlockOutcome;

type Shared = State<Arc<ProbeState>>;

/// Most requests the probe serves at once.
pub(crate) const MAX_IN_FLIGHT: usize = 512;
type Reply = Result<Response, ProbeError>;

/// The dashboard page, embedded in the binary.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Builds the probe's router over `state`.
pub fn app(state: Arc<ProbeState>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/nodes", get(nodes))
        .route("/history", get(history))
        .route("/vendor/{file}", get(vendored))
        .route("/mine_block/{port}", post(mine_block))
        .route("/get_chain/{port}", get(get_chain))
        .route("/validate/{port}", get(validate))
        .route("/shutdown/{port}", get(shutdown).post(shutdown))
        .route(
            "/peers/{port}",
            get(get_peers).post(add_peer).delete(remove_peer),
        )
        .route("/append/{port}", post(append))
        .route("/block/{port}", get(last_block).post(post_block))
        .route("/blocks/{port}", get(blocks))
        .route("/sync/{port}", post(sync))
        .route("/status/{port}", get(status))
        .route("/metrics", get(metrics_text))
        // After routing (route_layer), so the route's pattern is known; unmatched paths
        // (404s of the fallback) are not counted.
        .route_layer(axum::middleware::from_fn(count_request))
        .fallback(|| async {
            ProbeError::NotFound("no such route; see GET / for the dashboard".into())
        })
        .method_not_allowed_fallback(|| async { ProbeError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::guard::guard,
        ))
        // Every node call has its own timeout (ProbeState's, 504 when it passes), and a stop
        // waits for requests in flight at most SHUTDOWN_GRACE (probe::serve); requests
        // beyond the limit wait for a slot instead of piling up node connections.
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        .with_state(state)
}

/// The node a route names: its port on the probe's node host (`/status/5001`, from 1 to
/// 65535), or the address of a node the crawl found (`/status/10.0.0.2:5001`); anything
/// else is refused with 400 before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeRoute(pub NodeId);

impl<S: Send + Sync> FromRequestParts<S> for NodeRoute {
    type Rejection = ProbeError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ProbeError::BadRequest(e.body_text()))?;
        NodeId::parse(&raw).map(NodeRoute).ok_or_else(|| {
            ProbeError::BadRequest(format!(
                "node {raw:?} is neither a port from 1 to 65535 nor an ip:port address"
            ))
        })
    }
}

async fn read_body(body: Body) -> Result<Vec<u8>, ProbeError> {
    to_bytes(body, MAX_BODY)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| ProbeError::TooLarge(MAX_BODY))
}

async fn read_text(body: Body) -> Result<String, ProbeError> {
    let bytes = read_body(body).await?;
    String::from_utf8(bytes).map_err(|_| ProbeError::BadRequest("body is not UTF-8 text".into()))
}

fn ok(status: StatusCode, body: Value) -> Reply {
    Ok((status, Json(body)).into_response())
}

async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        Html(DASHBOARD),
    )
        .into_response()
}

/// Checks a mine request: a non-empty list of `{"transaction":{"from","to","amount"}}`.
pub(crate) fn check_transactions(body: &Value) -> Result<(), String> {
    let items = body
        .as_array()
        .ok_or("body must be a JSON list of {\"transaction\": {...}} items")?;
    if items.is_empty() {
        return Err("the list of transactions is empty".into());
    }
    for (i, item) in items.iter().enumerate() {
        let tx = item
            .get("transaction")
            .and_then(Value::as_object)
            .ok_or(format!(
                "item {i} is not {{\"transaction\": {{\"from\", \"to\", \"amount\"}}}}"
            ))?;
        for field in ["from", "to"] {
            match tx.get(field).and_then(Value::as_str) {
                Some(s) if !s.trim().is_empty() => {}
                _ => return Err(format!("item {i}: \"{field}\" must be a non-empty string")),
            }
        }
        match tx.get("amount").and_then(Value::as_f64) {
            Some(a) if a > 0.0 && a.is_finite() => {}
            _ => return Err(format!("item {i}: \"amount\" must be a positive number")),
        }
    }
    Ok(())
}

/// The 201 body of `POST /mine_block`, fields in the original's order, then the block.
#[derive(Serialize)]
struct Mined<'a> {
    message: &'static str,
    index: u64,
    hash: crate::block::BlockHash,
    prev_hash: &'a crate::block::PrevHash,
    nonce: u64,
    timestamp: &'a crate::block::Timestamp,
    block: &'a Block,
}

/// The body of `GET /get_chain`: blocks keep their field order (a `json!` map would sort it).
#[derive(Serialize)]
struct Chain<'a> {
    chain: &'a [Block],
    length: usize,
}

fn mined_reply(block: &Block) -> Reply {
    let body = Mined {
        message: "block inserted into blockchain",
        index: block.index,
        hash: block.hash,
        prev_hash: &block.prev_hash,
        nonce: block.nonce,
        timestamp: &block.timestamp,
        block,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn mine_block(State(s): Shared, NodeRoute(node): NodeRoute, body: Body) -> Reply {
    let bytes = read_body(body).await?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ProbeError::BadRequest(format!("body is not JSON: {e}")))?;
    check_transactions(&value).map_err(ProbeError::BadRequest)?;
    let block = s
        .with_node(node, |c| async move { c.mine(value).await })
        .await?;
    mined_reply(&block)
}

async fn append(State(s): Shared, NodeRoute(node): NodeRoute, body: Body) -> Reply {
    let text = read_text(body).await?;
    if text.is_empty() {
        return Err(ProbeError::BadRequest(
            "body is empty: send the text to store in the block".into(),
        ));
    }
    let block = s
        .with_node(node, |c| async move { c.mine(Value::String(text)).await })
        .await?;
    Ok((StatusCode::CREATED, Json(block)).into_response())
}

async fn get_chain(State(s): Shared, NodeRoute(node): NodeRoute) -> Reply {
    let chain = s
        .with_node(node, |c| async move { c.get_chain().await })
        .await?;
    Ok(Json(Chain {
        chain: &chain,
        length: chain.len(),
    })
    .into_response())
}

/// `GET /blocks/{port}`: the whole chain, or with `?last=N` only its newest N blocks.
async fn blocks(
    State(s): Shared,
    NodeRoute(node): NodeRoute,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let last = match q.get("last") {
        None => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ProbeError::BadRequest(format!("last={n:?} is not a count")))?,
        ),
    };
    let chain = match last {
        // The node sends at most MAX_BLOCKS_PER_REPLY newest blocks; beyond, take the chain.
        Some(n) if n <= crate::message::MAX_BLOCKS_PER_REPLY => {
            s.with_node(node, |c| async move { c.get_tail(n).await })
                .await?
        }
        _ => {
            let mut chain = s
                .with_node(node, |c| async move { c.get_chain().await })
                .await?;
            if let Some(n) = last {
                chain.drain(..chain.len().saturating_sub(n));
            }
            chain
        }
    };
    Ok(Json(chain).into_response())
}

async fn last_block(State(s): Shared, NodeRoute(node): NodeRoute) -> Reply {
    let tail = s
        .with_node(node, |c| async move { c.get_tail(1).await })
        .await?;
    let tip = tail.into_iter().next_back().ok_or(ProbeError::Node {
        code: crate::message::ErrorCode::Internal,
        node,
        message: "empty chain".into(),
    })?;
    Ok(Json(tip).into_response())
}

async fn post_block(State(s): Shared, NodeRoute(node): NodeRoute, body: Body) -> Reply {
    let bytes = read_body(body).await?;
    let block: Block = serde_json::from_slice(&bytes)
        .map_err(|e| ProbeError::BadRequest(format!("body is not a block: {e}")))?;
    let (result, reason) = s
        .with_node(node, |c| async move { c.new_block(block).await })
        .await?;
    match result {
        BlockOutcome::Rejected => Err(ProbeError::Rejected(
            reason.unwrap_or_else(|| "block rejected".into()),
        )),
        _ => ok(
            StatusCode::OK,
            json!({ "result": result, "reason": reason }),
        ),
    }
}

async fn validate(State(s): Shared, NodeRoute(node): NodeRoute) -> Reply {
    match s
        .with_node(node, |c| async move { c.validate().await })
        .await?
    {
        None => ok(
            StatusCode::OK,
            json!({ "message": "is valid.", "valid": true }),
        ),
        Some(error) => ok(
            StatusCode::OK,
            json!({ "message": "not valid.", "valid": false, "error": error }),
        ),
    }
}

async fn shutdown(State(s): Shared, NodeRoute(node): NodeRoute) -> Reply {
    s.with_admin(node, |c| async move { c.shutdown().await })
        .await?;
    ok(StatusCode::OK, json!({ "message": "server is shutdown" }))
}

async fn get_peers(State(s): Shared, NodeRoute(node): NodeRoute) -> Reply {
    let peers = s
        .with_node(node, |c| async move { c.get_peers().await })
        .await?;
    Ok(Json(peers).into_response())
}

fn peer_text(text: &str) -> Result<String, ProbeError> {
    crate::node::normalize_addr(text).map_err(ProbeError::BadRequest)
}

async fn add_peer(State(s): Shared, NodeRoute(node): NodeRoute, body: Body) -> Reply {
    let peer = peer_text(&read_text(body).await?)?;
    s.with_admin(node, |c| {
        let peer = peer.clone();
        async move { c.add_peer(&peer).await }
    })
    .await?;
    ok(
        StatusCode::OK,
        json!({ "message": format!("peer {peer} added") }),
    )
}

async fn remove_peer(State(s): Shared, NodeRoute(node): NodeRoute, body: Body) -> Reply {
    let peer = peer_text(&read_text(body).await?)?;
    s.with_admin(node, |c| {
        let peer = peer.clone();
        async move { c.remove_peer(&peer).await }
    })
    .await?;
    ok(
        StatusCode::OK,
        json!({ "message": format!("peer {peer} removed") }),
    )
}

async fn sync(State(s): Shared, NodeRoute(node): NodeRoute) -> Reply {
    let (height, tip, replaced) = s.with_node(node, |c| async move { c.sync().await }).await?;
    ok(
        StatusCode::OK,
        json!({ "height": height, "tip": tip, "replaced": replaced }),
    )
}

async fn status(State(s): Shared, NodeRoute(node): NodeRoute) -> Reply {
    let status = s
        .with_node(node, |c| async move { c.status().await })
        .await?;
    Ok(Json(status).into_response())
}

/// Lists the registry's nodes, each asked for its status (only on the probe's node host).
async fn nodes(State(s): Shared) -> Reply {
    let views = super::network::gather(&s).await?;
    let up = views.iter().filter(|v| v.status.is_ok()).count();
    metrics::gauge!(crate::metrics::PROBE_NODES, "state" => "up").set(up as f64);
    metrics::gauge!(crate::metrics::PROBE_NODES, "state" => "down").set((views.len() - up) as f64);
    let list: Vec<Value> = views
        .iter()
        .map(super::network::NodeView::to_json)
        .collect();
    Ok(Json(list).into_response())
}

/// `GET /metrics`: the probe's own metrics in Prometheus's text format.
async fn metrics_text(State(s): Shared) -> Reply {
    let Some(handle) = &s.metrics else {
        return Err(ProbeError::NotFound(
            "this probe records no metrics (it was started without a recorder)".into(),
        ));
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

/// Counts every request by its route's pattern (`/status/{port}`, not the port: the
/// labels stay few) and status, and times it.
async fn count_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(crate::metrics::PROBE_REQUESTS, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(crate::metrics::PROBE_LATENCY, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /history?since=T`: the samples taken after `T` (ms since the epoch; all without).
async fn history(State(s): Shared, Query(q): Query<HashMap<String, String>>) -> Reply {
    let since = match q.get("since") {
        None => i64::MIN,
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| ProbeError::BadRequest(format!("since={t:?} is not a time in ms")))?,
    };
    let reply = super::network::HistoryReply {
        interval_ms: s.sample_interval.as_millis() as u64,
        samples: s.history.since(since),
    };
    Ok(Json(reply).into_response())
}

/// The vendored front-end libraries (see `vendor/README.md`), by file name.
const VENDORED: &[(&str, &str, &str)] = &[
    (
        "d3-dispatch.min.js",
        "text/javascript",
        include_str!("vendor/d3-dispatch.min.js"),
    ),
    (
        "d3-quadtree.min.js",
        "text/javascript",
        include_str!("vendor/d3-quadtree.min.js"),
    ),
    (
        "d3-timer.min.js",
        "text/javascript",
        include_str!("vendor/d3-timer.min.js"),
    ),
    (
        "d3-force.min.js",
        "text/javascript",
        include_str!("vendor/d3-force.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript",
        include_str!("vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css",
        include_str!("vendor/uPlot.min.css"),
    ),
];

/// `GET /vendor/{file}`: one of the vendored libraries, embedded in the binary.
async fn vendored(Path(file): Path<String>) -> Reply {
    let (_, kind, body) = VENDORED
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ProbeError::NotFound(format!("no vendored file {file:?}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CACHE_CONTROL, "max-age=3600".to_owned()),
        ],
        *body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use std::time::Duration;
    use tower::ServiceExt;

    fn router() -> Router {
        let home = std::env::temp_dir().join("powchain-probe-unit-no-home");
        app(ProbeState::with_timeouts(
            "127.0.0.1".parse().unwrap(),
            home,
            Duration::from_millis(500),
            Duration::from_millis(500),
        ))
    }

    async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), MAX_BODY).await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A path port outside 1..=65535 is a 400 naming it, before any node is called.
    #[tokio::test]
    async fn node_port_is_checked_before_the_handler() {
        let r = router();
        for bad in ["0", "65536", "abc", "-1"] {
            let (status, body) = get(&r, &format!("/status/{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(body["message"].as_str().unwrap().contains(bad), "{body}");
        }
    }

    /// A rebound host name gets 421 on every route, a page of another origin 403 for a
    /// change, both with a code, before any node is called; curl-like requests pass.
    #[tokio::test]
    async fn foreign_hosts_and_origins_are_refused_before_any_node_is_called() {
        let r = router();
        let send = |req: Request<Body>| {
            let r = r.clone();
            async move {
                let resp = r.oneshot(req).await.unwrap();
                let status = resp.status();
                let bytes = to_bytes(resp.into_body(), MAX_BODY).await.unwrap();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap())
            }
        };
        let rebound = Request::get("/status/5001")
            .header("host", "attacker.example:8080")
            .body(Body::empty())
            .unwrap();
        let (status, body) = send(rebound).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::MISDIRECTED_REQUEST, json!("misdirected"))
        );
        let forged = Request::post("/append/5001")
            .header("host", "127.0.0.1:8080")
            .header("origin", "http://evil.example")
            .body(Body::from("x"))
            .unwrap();
        let (status, body) = send(forged).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::FORBIDDEN, json!("cross_site"))
        );
        let img = Request::get("/shutdown/5001")
            .header("host", "localhost:8080")
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(img).await.0, StatusCode::FORBIDDEN);
        // No browser headers (curl): the request reaches the node, here an absent one.
        let curl = Request::post("/append/1")
            .header("host", "127.0.0.1:8080")
            .body(Body::from("x"))
            .unwrap();
        let (status, body) = send(curl).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::BAD_GATEWAY, json!("unreachable"))
        );
    }

    /// The vendored libraries are served from the binary with their type; other names 404.
    #[tokio::test]
    async fn vendored_libraries_are_served_and_nothing_else() {
        let r = router();
        for (file, kind) in [
            ("d3-force.min.js", "text/javascript"),
            ("uPlot.min.css", "text/css"),
        ] {
            let req = Request::get(format!("/vendor/{file}"))
                .body(Body::empty())
                .unwrap();
            let resp = r.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{file}");
            let ct = resp.headers()[header::CONTENT_TYPE].to_str().unwrap();
            assert!(ct.starts_with(kind), "{file}: {ct}");
            let body = to_bytes(resp.into_body(), MAX_BODY).await.unwrap();
            assert!(body.len() > 1000, "{file}");
        }
        let (status, body) = get(&r, "/vendor/..%2Fmod.rs").await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::NOT_FOUND, json!("not_found"))
        );
    }

    /// `/history` answers the samples after `since`, and refuses a `since` that is no time.
    #[tokio::test]
    async fn history_answers_samples_after_since() {
        let state = ProbeState::with_timeouts(
            "127.0.0.1".parse().unwrap(),
            std::env::temp_dir().join("powchain-probe-unit-no-home"),
            Duration::from_millis(500),
            Duration::from_millis(500),
        );
        for t in [10, 20, 30] {
            state
                .history
                .record(super::super::network::Sample::of(t, &[]));
        }
        let r = app(state);
        let (status, body) = get(&r, "/history").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["interval_ms"], json!(2000));
        assert_eq!(body["samples"].as_array().unwrap().len(), 3);
        let (_, body) = get(&r, "/history?since=20").await;
        assert_eq!(
            body["samples"],
            json!([{"t": 30, "up": 0, "down": 0, "tips": 0, "nodes": []}])
        );
        let (status, _) = get(&r, "/history?since=soon").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    /// Transactions are checked item by item, naming the first bad one.
    #[test]
    fn transactions_are_checked_item_by_item() {
        let good = json!([{"transaction": {"from": "a", "to": "b", "amount": 1}}]);
        assert_eq!(check_transactions(&good), Ok(()));
        let bad = json!([
            {"transaction": {"from": "a", "to": "b", "amount": 1}},
            {"transaction": {"from": "a", "to": "", "amount": 1}}
        ]);
        assert_eq!(
            check_transactions(&bad),
            Err("item 1: \"to\" must be a non-empty string".into())
        );
        assert!(check_transactions(&json!([])).is_err());
        assert!(check_transactions(&json!({"transaction": {}})).is_err());
        let zero = json!([{"transaction": {"from": "a", "to": "b", "amount": 0}}]);
        assert!(check_transactions(&zero).unwrap_err().contains("amount"));
    }
}
