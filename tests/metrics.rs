//! `node --metrics ADDR` serves Prometheus metrics: scraped from the real binaries during a
//! small network's run, they say what the nodes' statuses say.

mod common;

use std::collections::BTreeMap;

use common::*;
use powchain_testkit::{Options, TestNetwork, wait_for};
use serde_json::json;

/// Reads the Prometheus text format into `name{labels}` → value (comments skipped).
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The metrics address node `i` logged at start.
async fn metrics_url(net: &TestNetwork, i: usize) -> String {
    wait_for(DEADLINE, "the metrics address in the log", || async {
        let log = net.log(i);
        let at = log.find("metrics on http://")? + "metrics on ".len();
        let url = log[at..].split_whitespace().next()?.to_owned();
        Some(url)
    })
    .await
    .unwrap()
}

async fn scrape(url: &str) -> (String, BTreeMap<String, f64>) {
    let reply = reqwest::get(url).await.unwrap();
    assert!(reply.status().is_success());
    let kind = reply.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    let text = reply.text().await.unwrap();
    let values = parse(&text);
    (text, values)
}

#[tokio::test]
async fn metrics_of_real_nodes_agree_with_their_statuses() {
    let net = TestNetwork::start(NODE, Options::new(2).args(["--metrics", "127.0.0.1:0"]))
        .await
        .unwrap();
    let (a, b) = (net.client(0), net.client(1));
    wait_for(DEADLINE, "the two nodes linked", || async {
        let (sa, sb) = (a.status().await.ok()?, b.status().await.ok()?);
        (!sa.peers.is_empty() && !sb.peers.is_empty()).then_some(())
    })
    .await
    .unwrap();
    let mut last = None;
    for i in 0..3 {
        last = Some(a.mine(json!({ "n": i })).await.unwrap());
    }
    let tip = last.unwrap().hash;
    wait_for(DEADLINE, "the blocks on the second node", || async {
        (b.status().await.ok()?.tip == tip).then_some(())
    })
    .await
    .unwrap();
    let (url_a, url_b) = (metrics_url(&net, 0).await, metrics_url(&net, 1).await);
    let (text, ma) = scrape(&url_a).await;
    // A peer's block is in the chain (and the status) before its store commit returns, and
    // is counted only once the offer has returned: wait for the count, not for the tip.
    let counted = |m: &BTreeMap<String, f64>| {
        m.get(r#"powchain_blocks_received_total{outcome="appended"}"#)
            .copied()
            .unwrap_or(0.0)
            + m.get("powchain_sync_blocks_total").copied().unwrap_or(0.0)
    };
    let mb = wait_for(
        DEADLINE,
        "the second node's metrics count three blocks",
        || async {
            let (_, mb) = scrape(&url_b).await;
            (counted(&mb) >= 3.0).then_some(mb)
        },
    )
    .await
    .unwrap();
    let (sa, sb) = (a.status().await.unwrap(), b.status().await.unwrap());
    let get = |m: &BTreeMap<String, f64>, k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing in\n{text}"))
    };
    assert_eq!(get(&ma, "powchain_height"), sa.height as f64);
    assert_eq!(get(&mb, "powchain_height"), sb.height as f64);
    assert_eq!(
        get(&ma, "powchain_tip_work"),
        sa.work.parse::<f64>().unwrap()
    );
    for (m, s) in [(&ma, &sa), (&mb, &sb)] {
        let peers = get(m, r#"powchain_peers{direction="outbound"}"#)
            + get(m, r#"powchain_peers{direction="inbound"}"#);
        assert_eq!(peers, s.peers.len() as f64, "{s:?}");
        assert_eq!(
            get(m, r#"powchain_peers{direction="outbound"}"#),
            s.outbound.len() as f64
        );
    }
    assert_eq!(get(&ma, "powchain_blocks_mined_total"), 3.0);
    assert_eq!(get(&ma, r#"powchain_requests_total{type="mine"}"#), 3.0);
    assert!(get(&ma, r#"powchain_blocks_relayed_total{how="push"}"#) >= 3.0);
    assert!(get(&ma, "powchain_store_commit_seconds_count") >= 3.0);
    assert!(get(&ma, "powchain_connections_open") >= 1.0);
    assert!(
        text.contains("# TYPE powchain_store_commit_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("# HELP powchain_height "), "{text}");
    // Offered blocks are counted by outcome: a replay is ignored, a forged one rejected by rule.
    let block = a.get_tail(1).await.unwrap().remove(0);
    let (outcome, _) = b.new_block(block.clone()).await.unwrap();
    assert_eq!(outcome, powchain::message::BlockOutcome::Ignored);
    let mut forged = block;
    forged.index += 1;
    forged.prev_hash = forged.hash.into();
    forged.hash = powchain::BlockHash([0; 32]);
    let (outcome, _) = b.new_block(forged).await.unwrap();
    assert_eq!(outcome, powchain::message::BlockOutcome::Rejected);
    let (_, mb) = scrape(&url_b).await;
    assert!(get(&mb, r#"powchain_blocks_received_total{outcome="ignored"}"#) >= 1.0);
    assert_eq!(
        get(&mb, r#"powchain_blocks_received_total{outcome="rejected"}"#),
        1.0
    );
    let rejected: f64 = mb
        .iter()
        .filter(|(k, _)| k.starts_with("powchain_blocks_rejected_total{rule="))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rejected, 1.0, "{mb:?}");
}

/// The probe serves its own metrics: its requests by route pattern and status, their
/// latency, and the nodes up and down at its last `/nodes`.
#[tokio::test]
async fn the_probe_counts_its_requests_and_the_nodes_it_sees() {
    let net = TestNetwork::start(NODE, Options::new(2)).await.unwrap();
    let probe = start_probe(net.home(), &[]).await;
    let port = net.addr(0).rsplit(':').next().unwrap().to_owned();
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .get(format!("{}/status/{port}", probe.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let r = http
        .get(format!("{}/status/1", probe.url))
        .send()
        .await
        .unwrap();
    let refused = r.status().as_u16();
    assert!(refused >= 500, "nothing listens on port 1: {refused}");
    let nodes: Vec<serde_json::Value> = http
        .get(format!("{}/nodes", probe.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let up = nodes.iter().filter(|n| n["up"] == true).count();
    let (text, m) = scrape(&format!("{}/metrics", probe.url)).await;
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing in\n{text}"))
    };
    assert_eq!(
        get(r#"powchain_probe_requests_total{route="/status/{port}",status="200"}"#),
        3.0
    );
    assert_eq!(
        get(&format!(
            r#"powchain_probe_requests_total{{route="/status/{{port}}",status="{refused}"}}"#
        )),
        1.0
    );
    assert_eq!(
        get(r#"powchain_probe_request_seconds_count{route="/status/{port}"}"#),
        4.0
    );
    assert_eq!(get(r#"powchain_probe_nodes{state="up"}"#), up as f64);
    assert_eq!(
        get(r#"powchain_probe_nodes{state="down"}"#),
        (nodes.len() - up) as f64
    );
    assert_eq!(nodes.len(), 2, "both nodes are in the registry");
}

/// Every metric the shipped Grafana dashboard queries, and every metric the manual's table
/// (docs/operations.md) lists, is one the code records; the manual lists them all.
#[test]
fn the_dashboard_and_the_manual_name_only_metrics_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        let mut found = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("powchain_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            found.insert(base.to_owned());
            rest = &tail[end..];
        }
        found
    };
    let known: std::collections::BTreeSet<String> = powchain::metrics::ALL
        .iter()
        .map(|m| m.0.to_string())
        .collect();
    let dashboard =
        std::fs::read_to_string(format!("{root}/deploy/grafana/powchain.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let queried = names(&dashboard);
    assert!(queried.len() >= 10, "{queried:?}");
    assert!(
        queried.is_subset(&known),
        "unknown: {:?}",
        queried.difference(&known).collect::<Vec<_>>()
    );
    let manual = std::fs::read_to_string(format!("{root}/docs/operations.md")).unwrap();
    let section = manual
        .split("## Metrics")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/operations.md has a Metrics section");
    let listed: std::collections::BTreeSet<String> = names(section)
        .into_iter()
        .filter(|n| n != "powchain_")
        .collect();
    assert_eq!(
        listed, known,
        "the manual's metrics table and the code differ"
    );
}
