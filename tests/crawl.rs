//! `probe --crawl`: a probe with an empty registry finds a whole network from one seed by
//! walking the nodes' address books, shows every node in `GET /nodes` and the history,
//! forwards reads and mining to them, never admin requests, and marks a node that stops
//! answering as down; a probe crawling its own registry's network lists each node once.
//! (Across hosts: `tests/hosts.rs`.)

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use powchain_testkit::{Options, TestNetwork, wait_for};
use serde_json::{Value, json};

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.expect("the probe answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The `/nodes` entries that are up, by id.
async fn up_ids(probe: &Probe) -> Option<BTreeSet<String>> {
    let (status, nodes) = get(&format!("{}/nodes", probe.url)).await;
    (status == 200).then(|| {
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["up"] == json!(true))
            .map(|n| match &n["id"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    })
}

#[tokio::test]
async fn a_crawling_probe_finds_the_network_from_one_seed() {
    let mut net = TestNetwork::start(NODE, Options::new(4)).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    // Its own home: an empty registry, no cookie of any node.
    let elsewhere = tempfile::tempdir().unwrap();
    let seed = net.addr(0);
    let probe = start_probe(elsewhere.path(), &["--crawl", &seed, "--sample-every", "1"]).await;
    let want: BTreeSet<String> = (0..4).map(|i| net.addr(i)).collect();
    wait_for(DEADLINE, "the crawl to find all four nodes", || async {
        (up_ids(&probe).await? == want).then_some(())
    })
    .await
    .unwrap();
    let (_, nodes) = get(&format!("{}/nodes", probe.url)).await;
    for n in nodes.as_array().unwrap() {
        assert_eq!(n["admin"], json!(false), "{n}");
        assert_eq!(n["host"], json!("127.0.0.1"), "{n}");
        let id = n["id"].as_str().unwrap();
        assert_eq!(
            n["port"],
            json!(id.rsplit(':').next().unwrap().parse::<u16>().unwrap())
        );
        assert_eq!(n["status"]["listen"], json!(id), "{n}");
    }

    // Reads and mining reach a crawled node by its address.
    let a1 = net.addr(1);
    let (status, st) = get(&format!("{}/status/{a1}", probe.url)).await;
    assert_eq!((status, st["listen"].clone()), (200, json!(a1)));
    let mined = reqwest::Client::new()
        .post(format!("{}/append/{a1}", probe.url))
        .body("crawled")
        .send()
        .await
        .unwrap();
    assert_eq!(mined.status(), 201);
    let tip = net.wait_agree(DEADLINE).await.unwrap();
    wait_for(
        DEADLINE,
        "the crawl to see the block on every node",
        || async {
            let (_, nodes) = get(&format!("{}/nodes", probe.url)).await;
            let nodes = nodes.as_array()?.clone();
            (nodes.len() == 4 && nodes.iter().all(|n| n["status"]["tip"] == json!(tip)))
                .then_some(())
        },
    )
    .await
    .unwrap();
    let (status, blocks) = get(&format!("{}/blocks/{}?last=1", probe.url, net.addr(3))).await;
    assert_eq!((status, blocks[0]["hash"].clone()), (200, json!(tip)));

    // No admin request: the probe holds no cookie of them; the node stays up.
    let a2 = net.addr(2);
    let refused = reqwest::Client::new()
        .post(format!("{}/shutdown/{a2}", probe.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], json!("unauthorized"), "{body}");
    assert!(net.client(2).status().await.is_ok(), "node 2 still runs");
    // An address the crawl never found is not forwarded to.
    let (status, body) = get(&format!("{}/status/127.0.0.1:1", probe.url)).await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));

    // The history holds the crawled nodes by address.
    wait_for(DEADLINE, "a sample of the four nodes", || async {
        let (_, h) = get(&format!("{}/history", probe.url)).await;
        let last = h["samples"].as_array()?.last()?.clone();
        let ids: BTreeSet<String> = last["nodes"]
            .as_array()?
            .iter()
            .filter_map(|p| p[0].as_str().map(str::to_owned))
            .collect();
        (ids == want).then_some(())
    })
    .await
    .unwrap();

    // A node that stops answering is shown down, with the crawl's error, the others up.
    let gone = net.addr(3);
    net.kill(3).await.unwrap();
    wait_for(
        Duration::from_secs(60),
        "the killed node shown down",
        || async {
            let (_, nodes) = get(&format!("{}/nodes", probe.url)).await;
            let entry = nodes
                .as_array()?
                .iter()
                .find(|n| n["id"] == json!(gone))?
                .clone();
            (entry["up"] == json!(false) && entry["error"].is_string()).then_some(())
        },
    )
    .await
    .unwrap();
    let mut alive = want.clone();
    alive.remove(&gone);
    assert_eq!(up_ids(&probe).await.unwrap(), alive);
}

/// Crawling the registry's own network lists each node once, by port, with admin.
#[tokio::test]
async fn a_crawl_of_the_registry_lists_each_node_once() {
    let net = TestNetwork::start(NODE, Options::new(3)).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    let probe = start_probe(net.home(), &["--crawl"]).await;
    let ports: BTreeSet<String> = (0..3).map(|i| net.node(i).port().to_string()).collect();
    let (_, first) = get(&format!("{}/nodes", probe.url)).await;
    assert_eq!(first.as_array().map(Vec::len), Some(3));
    // Until the crawl has visited each node twice (and so followed every peer they name).
    wait_for(DEADLINE, "six visits of the crawl", || async {
        let text = reqwest::get(format!("{}/metrics", probe.url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let visits: f64 = text
            .lines()
            .find(|l| l.starts_with("powchain_probe_crawl_visits_total{result=\"ok\"}"))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()?;
        (visits >= 6.0).then_some(())
    })
    .await
    .unwrap();
    let (_, nodes) = get(&format!("{}/nodes", probe.url)).await;
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let ids: BTreeSet<String> = nodes.iter().map(|n| n["id"].to_string()).collect();
    assert_eq!(ids, ports);
    assert!(nodes.iter().all(|n| n["admin"] == json!(true)));
}

/// The dashboard of a crawling probe draws the crawled nodes as nodes (by address, not as
/// grey peers outside the registry) with exactly the links their statuses report, lists
/// them in the table, and offers no shutdown of them.
#[tokio::test]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium (apt-get install chromium)"
)]
async fn the_dashboard_draws_the_crawled_network() {
    use powchain_testkit::browser::Browser;
    let net = TestNetwork::start(NODE, Options::new(4)).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let probe = start_probe(elsewhere.path(), &["--crawl", &net.addr(0)]).await;
    let mut page = Browser::open(&format!("{}/", probe.url)).await.unwrap();
    let all: Vec<usize> = (0..4).collect();
    let want_nodes: BTreeSet<String> = all.iter().map(|&i| net.addr(i)).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let drawn = page
            .eval("window.powchain ? window.powchain.topology() : null")
            .await
            .unwrap();
        let nodes: BTreeSet<String> = drawn["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["id"].as_str().map(str::to_owned))
            .collect();
        let links: BTreeSet<String> = drawn["links"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_owned))
            .collect();
        // Each link as the page keys it: the two addresses in string order.
        let want_links = net.statuses(&all).await.map(|st| {
            let mut links = BTreeSet::new();
            for s in &st {
                for peer in s.outbound.iter().chain(&s.inbound) {
                    let (a, b) = if s.listen < *peer {
                        (&s.listen, peer)
                    } else {
                        (peer, &s.listen)
                    };
                    links.insert(format!("{a}|{b}"));
                }
            }
            links
        });
        if nodes == want_nodes && Some(&links) == want_links.as_ref() {
            assert!(links.len() >= 3, "four connected nodes: {links:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the graph never matched the crawl: drew {nodes:?} {links:?}, want {want_nodes:?} {want_links:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a2 = net.addr(2);
    let row = page
        .wait_js(
            "the crawled node's row",
            &format!(
                "(r => r && [r.querySelector('td code').textContent, r.querySelector('[data-field=state]').textContent, r.querySelector('button[data-action=shutdown]').disabled])(document.querySelector('#nodes tr[data-port=\"{a2}\"]'))"
            ),
        )
        .await
        .unwrap();
    assert_eq!(row, json!([a2, "up", true]));
}

/// Seeds that answer with a frame over the crawl's reply cap, or with bytes that are no
/// frame, are shown down with the reason; the probe keeps crawling the real network.
#[tokio::test]
async fn hostile_seeds_are_shown_down_and_change_nothing() {
    use powchain_testkit::fake::{Answer, FakePeer};
    let net = TestNetwork::start(NODE, Options::new(2)).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    // Announces 10 MB (over the 256 KiB cap): refused before it is read.
    let huge = FakePeer::bind()
        .await
        .serve(|_| Answer::Raw(format!("{:<10}", 10_000_000).into_bytes()));
    let garbage = FakePeer::bind()
        .await
        .serve(|_| Answer::Raw(b"not a frame at all".to_vec()));
    let elsewhere = tempfile::tempdir().unwrap();
    let seeds = format!("{huge},{garbage},{}", net.addr(0));
    let probe = start_probe(elsewhere.path(), &["--crawl", &seeds]).await;
    let real: BTreeSet<String> = (0..2).map(|i| net.addr(i)).collect();
    wait_for(DEADLINE, "the real nodes up, the fakes down", || async {
        let (_, nodes) = get(&format!("{}/nodes", probe.url)).await;
        let nodes = nodes.as_array()?.clone();
        let state = |a: &str| nodes.iter().find(|n| n["id"] == json!(a)).cloned();
        let (h, g) = (state(&huge)?, state(&garbage)?);
        let huge_refused = h["up"] == json!(false) && h["error"].as_str()?.contains("cap");
        let garbage_down = g["up"] == json!(false) && g["error"].is_string();
        (huge_refused && garbage_down && up_ids(&probe).await? == real).then_some(())
    })
    .await
    .unwrap();
}
