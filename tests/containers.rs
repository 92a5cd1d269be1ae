//! powchain's container image on rootful podman: `deploy/build-image.sh` builds it from
//! this build's binaries, then four containers on a podman network of their own peer by
//! their addresses with one seed, a block mined in one reaches all, a probe in the seed's
//! container answers for it, and a container killed and started again keeps its chain.
//! Without podman (or without root) the test is compiled as ignored (see build.rs).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Runs podman with `args`; returns its output.
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs")
}

/// Runs podman and returns its stdout, failing with its stderr.
fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The hard limit of `name` in /proc/self/limits ("Max open files", "Max processes").
fn hard_limit(name: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().nth(1)?.parse().ok()
}

/// What `podman run` needs on machines whose sandbox forbids raising resource limits:
/// podman's default limits (a million files) are above what the runtime may set there, so
/// the containers get at most 16,384 files and 4,096 processes (the nodes of this test
/// use a few dozen of each), and never more than this process's own hard limits.
fn run_flags() -> Vec<String> {
    let mut flags = Vec::new();
    for (flag, name, most) in [
        ("nofile", "Max open files", 16_384),
        ("nproc", "Max processes", 4_096),
    ] {
        let n = hard_limit(name).map_or(most, |h| h.min(most));
        flags.push("--ulimit".to_owned());
        flags.push(format!("{flag}={n}:{n}"));
    }
    flags
}

/// Global podman flags: runc where it is installed (crun refuses cgroups in hybrid mode,
/// as on this project's CI machine).
fn global_flags() -> Vec<&'static str> {
    let runc = Command::new("runc").arg("--version").output();
    if runc.is_ok_and(|o| o.status.success()) {
        vec!["--runtime", "runc"]
    } else {
        Vec::new()
    }
}

/// Builds the image `tag` from this build's binaries with `deploy/build-image.sh`.
fn build_image(tag: &str) {
    let bin_dir = std::path::Path::new(NODE)
        .parent()
        .expect("the binaries' directory");
    let built = Command::new("deploy/build-image.sh")
        .args([
            "--bin-dir",
            bin_dir.to_str().expect("a UTF-8 path"),
            "--tag",
            tag,
        ])
        .output()
        .expect("deploy/build-image.sh runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// The containers, network and image of one run, removed at the end whatever happens.
struct Cleanup {
    names: Vec<String>,
    network: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = podman(&["rm", "--force", "--volumes", "--time", "2", name]);
        }
        let _ = podman(&["network", "rm", "--force", &self.network]);
        let _ = podman(&["rmi", "--force", &self.image]);
    }
}

/// `powchain-cli 5001 ARGS` inside container `name`.
fn cli(global: &[&str], name: &str, args: &[&str]) -> Result<String, String> {
    let mut all: Vec<&str> = global.to_vec();
    all.extend(["exec", name, "/usr/local/bin/powchain-cli", "5001"]);
    all.extend(args);
    let out = podman(&all);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn status(global: &[&str], name: &str) -> Option<Value> {
    serde_json::from_str(&cli(global, name, &["status"]).ok()?).ok()
}

/// Waits up to `DEADLINE` for `check` (run off the runtime: podman calls block).
async fn wait_until<T: Send + 'static>(
    what: &str,
    check: impl Fn() -> Option<T> + Send + Sync + Clone + 'static,
) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    loop {
        let c = check.clone();
        if let Some(v) = tokio::task::spawn_blocking(c).await.unwrap() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(has_podman),
    ignore = "needs rootful podman (apt-get install podman runc, run as root)"
)]
async fn a_network_of_containers_peers_mines_and_keeps_its_chain() {
    let id = std::process::id();
    let image = format!("localhost/powchain-test:{id}");
    let network = format!("powchain-test-{id}");
    // A /24 of its own, away from podman's default 10.88.0.0/16.
    let subnet = format!("10.90.{}", 100 + id % 100);
    let names: Vec<String> = ["seed", "n1", "n2", "n3", "probe"]
        .iter()
        .map(|n| format!("powchain-test-{id}-{n}"))
        .collect();
    let _cleanup = Cleanup {
        names: names.clone(),
        network: network.clone(),
        image: image.clone(),
    };
    build_image(&image);
    let global = global_flags();
    let flags = run_flags();
    let run = |name: &str, ip: &str, extra: &[&str], cmd: &[&str]| {
        let mut args: Vec<&str> = global.clone();
        args.extend(["run", "--detach", "--name", name]);
        args.extend(flags.iter().map(String::as_str));
        if !ip.is_empty() {
            args.extend(["--network", &network, "--ip", ip]);
        }
        args.extend(extra);
        args.push(&image);
        args.extend(cmd);
        podman_ok(&args);
    };
    podman_ok(&[
        "network",
        "create",
        "--subnet",
        &format!("{subnet}.0/24"),
        &network,
    ]);
    let seed_ip = format!("{subnet}.10");
    let seed_addr = format!("{seed_ip}:5001");
    let node = ["5001", "--host", "0.0.0.0", "--difficulty", "8"];
    run(&names[0], &seed_ip, &[], &node);
    for (i, name) in names[1..4].iter().enumerate() {
        let ip = format!("{subnet}.{}", 11 + i);
        let mut cmd = node.to_vec();
        cmd.extend(["--peer", &seed_addr]);
        run(name, &ip, &[], &cmd);
    }
    let global: Vec<&'static str> = global.clone();
    let nodes: Vec<String> = names[..4].to_vec();

    // Every node links to the others (the seed hands out their addresses).
    {
        let (g, nodes) = (global.clone(), nodes.clone());
        wait_until("every node linked to the three others", move || {
            nodes
                .iter()
                .all(|n| {
                    status(&g, n)
                        .is_some_and(|s| s["peers"].as_array().is_some_and(|p| p.len() == 3))
                })
                .then_some(())
        })
        .await;
    }

    // A block mined in n2 reaches all four.
    let block: Value =
        serde_json::from_str(&cli(&global, &names[2], &["mine", "\"from a container\""]).unwrap())
            .unwrap();
    let tip = block["hash"].as_str().unwrap().to_owned();
    {
        let (g, nodes, tip) = (global.clone(), nodes.clone(), tip.clone());
        wait_until("the block on every node", move || {
            nodes
                .iter()
                .all(|n| status(&g, n).is_some_and(|s| s["tip"] == tip.as_str()))
                .then_some(())
        })
        .await;
    }

    // A probe in the seed's container (its network and data volume) answers for the seed.
    let mut args: Vec<&str> = global.clone();
    let seed_net = format!("container:{}", names[0]);
    args.extend(["run", "--detach", "--name", &names[4]]);
    args.extend(flags.iter().map(String::as_str));
    args.extend([
        "--network",
        &seed_net,
        "--volumes-from",
        &names[0],
        "--entrypoint",
        "/usr/local/bin/probe",
        &image,
        "--bind",
        "0.0.0.0",
        "--port",
        "8080",
    ]);
    podman_ok(&args);
    let url = format!("http://{seed_ip}:8080/status/5001");
    let probed = {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let got = async {
                client
                    .get(&url)
                    .send()
                    .await
                    .ok()?
                    .json::<Value>()
                    .await
                    .ok()
            }
            .await;
            if let Some(v) = got.filter(|v| v["tip"] == tip.as_str()) {
                break v;
            }
            assert!(tokio::time::Instant::now() < deadline, "the probe at {url}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(probed["height"], 1);

    // n3 killed (SIGKILL) and started again: it loads its chain from its volume.
    podman_ok(&[&global[..], &["kill", &names[3]]].concat());
    podman_ok(&[&global[..], &["start", &names[3]]].concat());
    {
        let (g, name, tip) = (global.clone(), names[3].clone(), tip.clone());
        wait_until("n3 up again at the tip", move || {
            status(&g, &name)
                .filter(|s| s["tip"] == tip.as_str())
                .map(|_| ())
        })
        .await;
    }
    // The node logs on stderr; podman keeps both streams.
    let out = podman(&["logs", &names[3]]);
    let logs =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let loads: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("chain loaded"))
        .collect();
    assert_eq!(loads.len(), 2, "{logs}");
    assert!(loads[1].contains("height=1"), "{logs}");
}

/// The compose file of the README: `podman-compose up` starts the seed, three nodes and the
/// probe; the probe, published on the host, sees the seed linked to the three; a block
/// mined in one node reaches the probe's seed, and the probe's crawl shows all four nodes
/// on it; `down` removes it all.
#[tokio::test]
#[cfg_attr(
    not(has_podman_compose),
    ignore = "needs rootful podman and podman-compose (apt-get install podman runc; pip install podman-compose)"
)]
async fn the_compose_file_starts_a_network_the_probe_sees() {
    let id = std::process::id();
    let image = format!("localhost/powchain-compose-test:{id}");
    let project = format!("powchain-compose-{id}");
    let subnet = format!("10.91.{}", 100 + id % 100);
    let probe_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    build_image(&image);
    // runc where crun cannot run here (see global_flags), through podman's own config.
    let conf = tempfile::NamedTempFile::new().unwrap();
    if !global_flags().is_empty() {
        std::fs::write(conf.path(), "[engine]\nruntime = \"runc\"\n").unwrap();
    }
    let compose = |args: &[&str]| -> Output {
        Command::new("podman-compose")
            .args(["-p", &project, "-f", "deploy/compose.yaml"])
            .args(args)
            .env("POWCHAIN_IMAGE", &image)
            .env("POWCHAIN_SUBNET", &subnet)
            .env("POWCHAIN_PROBE_PORT", probe_port.to_string())
            .env("CONTAINERS_CONF", conf.path())
            .output()
            .expect("podman-compose runs")
    };
    struct Down<F: Fn(&[&str]) -> Output>(F, String);
    impl<F: Fn(&[&str]) -> Output> Drop for Down<F> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "--volumes"]);
            let _ = podman(&["rmi", "--force", &self.1]);
        }
    }
    let _down = Down(compose, image.clone());
    let up = (_down.0)(&["up", "-d"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{probe_port}/status/5001");
    let get = |client: reqwest::Client, url: String| async move {
        client
            .get(&url)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()
    };
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    loop {
        let st = get(client.clone(), url.clone()).await;
        if st.is_some_and(|s| s["peers"].as_array().is_some_and(|p| p.len() == 3)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the seed linked to three nodes at {url}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let node2 = format!("{project}_node-2_1");
    let global = global_flags();
    let block: Value =
        serde_json::from_str(&cli(&global, &node2, &["mine", "\"compose\""]).unwrap()).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let st = get(client.clone(), url.clone()).await;
        if st.is_some_and(|s| s["tip"] == block["hash"]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the block at the probe"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The probe's crawl: the seed by port (its registry), the three others by address,
    // each on the block.
    let nodes_url = format!("http://127.0.0.1:{probe_port}/nodes");
    let want: Vec<Value> = std::iter::once(json!(5001))
        .chain((11..=13).map(|i| json!(format!("{subnet}.{i}:5001"))))
        .collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let nodes = get(client.clone(), nodes_url.clone()).await;
        let seen: Option<Vec<Value>> = nodes.as_ref().and_then(Value::as_array).map(|a| {
            a.iter()
                .filter(|n| n["status"]["tip"] == block["hash"])
                .map(|n| n["id"].clone())
                .collect()
        });
        if seen.as_ref() == Some(&want) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe's crawl to show the four nodes on the block: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
