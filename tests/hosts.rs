//! Nodes on several hosts: network namespaces, each with its own address and the same port,
//! joined by a bridge; every node is started with one seed. Gossip finds the peers, and a
//! host cut off and brought back heals to the most work with no data lost; one probe on
//! the test's side crawls from the seed to all four. Needs root and
//! `ip` (iproute2): without them the test is compiled as ignored (see build.rs).

mod common;

use std::process::Command as StdCommand;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use powchain::NodeClient;
use powchain::client::read_cookie;
use powchain::process::{Announced, spawn_announced};
use powchain_testkit::wait_for;
use serde_json::json;
use tokio::process::Command;

/// The test hosts' subnet (a /24 on a bridge of this machine only): the nodes' network.
const SUBNET: &str = "10.213.47";
/// The subnet the test reaches the hosts on, a second bridge, so a host cut off the nodes'
/// network can still be asked how it is doing.
const CONTROL: &str = "10.213.48";
/// The port every node listens on, the same on each host.
const PORT: u16 = 5001;

/// Network namespaces on two bridges (the nodes' network and the test's), removed on drop.
struct Hosts {
    bridges: Vec<String>,
    names: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = StdCommand::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// Creates `n` hosts at `SUBNET.1` … `SUBNET.n` (`eth0`), reached by the test at
    /// `CONTROL.1` … (`ctl0`); the test itself is `.254` on both.
    fn new(n: usize) -> Hosts {
        let tag = std::process::id() % 100_000;
        let hosts = Hosts {
            bridges: vec![format!("pcbr{tag}"), format!("pcct{tag}")],
            names: (1..=n).map(|i| format!("pc{tag}h{i}")).collect(),
        };
        for (bridge, subnet) in hosts.bridges.iter().zip([SUBNET, CONTROL]) {
            ip(&["link", "add", bridge, "type", "bridge"]);
            ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", bridge]);
            ip(&["link", "set", bridge, "up"]);
        }
        for (i, ns) in hosts.names.iter().enumerate() {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            let links = [("pcv", "eth0", SUBNET), ("pcc", "ctl0", CONTROL)];
            for ((prefix, inner, subnet), bridge) in links.into_iter().zip(&hosts.bridges) {
                let veth = format!("{prefix}{tag}h{}", i + 1);
                ip(&[
                    "link", "add", &veth, "type", "veth", "peer", "name", inner, "netns", ns,
                ]);
                ip(&["link", "set", &veth, "master", bridge]);
                ip(&["link", "set", &veth, "up"]);
                let addr = format!("{subnet}.{}/24", i + 1);
                ip(&["-n", ns, "addr", "add", &addr, "dev", inner]);
                ip(&["-n", ns, "link", "set", inner, "up"]);
            }
        }
        hosts
    }

    /// Cuts host `i` off the network, or brings it back.
    fn set_link(&self, i: usize, up: bool) {
        ip(&[
            "-n",
            &self.names[i],
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = StdCommand::new("ip").args(["netns", "del", ns]).status();
        }
        for bridge in &self.bridges {
            let _ = StdCommand::new("ip").args(["link", "del", bridge]).status();
        }
    }
}

/// Starts a node on host `i`, bound to every interface on [`PORT`], with `seed` as its only
/// peer; returns the process and a client of it.
async fn start_node(
    hosts: &Hosts,
    home: &std::path::Path,
    i: usize,
    seed: Option<&str>,
) -> (Announced, NodeClient) {
    let dir = home.join(format!("h{}", i + 1));
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &hosts.names[i], NODE, &PORT.to_string()])
        .args(["--host", "0.0.0.0", "--no-registry", "--difficulty", "8"])
        .args(["--threads", "1", "--data-dir", dir.to_str().unwrap()])
        .args(seed.map(|s| vec!["--peer", s]).unwrap_or_default())
        .env("POWCHAIN_HOME", home)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(home.join(format!("h{}.log", i + 1))).unwrap())
        .stdin(Stdio::null());
    let node = spawn_announced(&mut command, Duration::from_secs(60))
        .await
        .expect("node starts in its namespace");
    let client = NodeClient::new(format!("{CONTROL}.{}:{PORT}", i + 1))
        .with_cookie(read_cookie(&dir))
        .with_mine_timeout(Duration::from_secs(120));
    (node, client)
}

/// Four hosts, the same port on each, one seed: gossip links every node to the three others
/// at their real addresses (never a loopback one); a host cut off mines apart and, brought
/// back, ends on the chain with the most work with its data mined again.
#[cfg_attr(
    not(has_netns),
    ignore = "needs root and ip (iproute2) for network namespaces"
)]
#[tokio::test]
async fn hosts_with_one_seed_find_each_other_and_heal_after_a_cut() {
    let hosts = Hosts::new(4);
    let home = tempfile::tempdir().unwrap();
    let seed = format!("{SUBNET}.1:{PORT}");
    let mut nodes = Vec::new();
    for i in 0..4 {
        let seed = (i > 0).then_some(seed.as_str());
        nodes.push(start_node(&hosts, home.path(), i, seed).await);
    }
    let want: Vec<String> = (1..=4).map(|i| format!("{SUBNET}.{i}:{PORT}")).collect();
    wait_for(
        Duration::from_secs(60),
        "every host linked to the others",
        || async {
            for (i, (_, c)) in nodes.iter().enumerate() {
                let s = c.status().await.ok()?;
                let mut others = want.clone();
                others.remove(i);
                if s.peers != others {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap();
    // One probe on the test's side, its registry empty, crawling from the seed: all four
    // hosts' nodes by address, each with its links to the three others.
    let probe_home = tempfile::tempdir().unwrap();
    let probe = start_probe(probe_home.path(), &["--crawl", &seed]).await;
    wait_for(
        Duration::from_secs(60),
        "the probe's crawl to show the four hosts and their links",
        || async {
            let nodes: serde_json::Value = reqwest::get(format!("{}/nodes", probe.url))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let nodes = nodes.as_array()?;
            let ids: Vec<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
            if ids != want.iter().map(String::as_str).collect::<Vec<_>>() {
                return None;
            }
            nodes
                .iter()
                .enumerate()
                .all(|(i, n)| {
                    let mut others: Vec<serde_json::Value> =
                        want.iter().map(|a| json!(a)).collect();
                    others.remove(i);
                    n["up"] == json!(true) && n["status"]["peers"] == json!(others)
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
    drop(probe);
    for (_, c) in &nodes {
        let known = c.get_peers().await.unwrap();
        assert!(
            known.iter().all(|p| p.starts_with(SUBNET)),
            "no loopback or unspecified address crosses hosts: {known:?}"
        );
    }

    let (cut, main) = (&nodes[3].1, &nodes[1].1);
    main.mine(json!("shared")).await.unwrap();
    let agreed = || async {
        let mut tips = Vec::new();
        for (_, c) in &nodes {
            tips.push(c.status().await.ok()?.tip);
        }
        tips.windows(2).all(|w| w[0] == w[1]).then_some(())
    };
    wait_for(DEADLINE, "the first block everywhere", agreed)
        .await
        .unwrap();

    hosts.set_link(3, false);
    for i in 0..2 {
        cut.mine(json!({ "cut": i })).await.unwrap();
    }
    for i in 0..3 {
        main.mine(json!({ "main": i })).await.unwrap();
    }
    assert_eq!(cut.status().await.unwrap().height, 3);
    // Its relays fail, and so does the ping they trigger: the links it dialled are gone.
    wait_for(
        Duration::from_secs(90),
        "the cut host to lose its outbound links",
        || async { cut.status().await.ok()?.outbound.is_empty().then_some(()) },
    )
    .await
    .unwrap();
    hosts.set_link(3, true);

    let data: Vec<String> = std::iter::once(json!("shared").to_string())
        .chain((0..2).map(|i| json!({ "cut": i }).to_string()))
        .chain((0..3).map(|i| json!({ "main": i }).to_string()))
        .collect();
    wait_for(
        Duration::from_secs(150),
        "the cut host to heal with its data kept",
        || async {
            agreed().await?;
            let chain = cut.get_chain().await.ok()?;
            let held: Vec<String> = chain.iter().map(|b| b.data.as_str().to_owned()).collect();
            data.iter().all(|d| held.contains(d)).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(home.path().join("h4.log")).unwrap_or_default();
        panic!("{e}; host 4's log:\n{log}")
    });
    let chain = main.get_chain().await.unwrap();
    assert_eq!(
        chain[2].data.as_str(),
        json!({ "main": 0 }).to_string(),
        "the branch with more work won"
    );
    for (_, c) in &nodes {
        assert_eq!(c.validate().await.unwrap(), None);
    }
}
