//! `simulate --scenario FILE --report DIR` through the example binary: a sweep runs every
//! point with every seed, the command line overrides the file, the report holds the files
//! it promises, and a bad file is refused with its line and field.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The `simulate` example of this build (`cargo test` builds it; built here otherwise).
fn simulate() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join("examples").join("simulate");
    if !path.is_file() {
        let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "--example", "simulate"]);
        if profile == "release" {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "cargo build --example simulate failed");
    }
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(simulate())
        .args(args)
        .output()
        .expect("simulate runs")
}

#[test]
fn a_sweep_runs_every_point_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "name = \"small\"\nnodes = 4\nminutes = 5\nblock_interval = \"2s\"\n\
         latency = \"10ms..50ms\"\n\n[sweep]\nseeds = [1, 2]\nselfish = [0.3, 0.45]\n",
    )
    .unwrap();
    let report = dir.path().join("report");
    // A --data-dir that does not exist yet: each run's stores go in a directory under it.
    let stores = dir.path().join("stores");
    let out = run(&[
        "--scenario",
        file.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--data-dir",
        stores.to_str().unwrap(),
        "--minutes",
        "1",
        "--jobs",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every point with every seed, in the file's order, with --minutes over the file's 5.
    let got: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["point"]["selfish"].as_str().unwrap().to_owned(),
                l["seed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("0.3".to_owned(), 1),
            ("0.3".to_owned(), 2),
            ("0.45".to_owned(), 1),
            ("0.45".to_owned(), 2)
        ]
    );
    for l in &lines {
        let options = &l["summary"]["options"];
        assert_eq!(options["minutes"], 1.0, "{l}");
        assert_eq!(options["nodes"], 4, "{l}");
        assert_eq!(
            options["selfish"].as_f64().unwrap().to_string(),
            l["point"]["selfish"].as_str().unwrap()
        );
        assert!(
            l["summary"]["selfish"]["relative_revenue"].is_number(),
            "{l}"
        );
    }
    // The same options and seed give the same summary, whichever thread ran it.
    let again = run(&[
        "--nodes",
        "4",
        "--minutes",
        "1",
        "--block-interval",
        "2s",
        "--latency",
        "10ms..50ms",
        "--selfish",
        "0.45",
        "--seed",
        "2",
    ]);
    let alone: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(alone, lines[3]["summary"]);

    for i in 0..4 {
        assert!(
            stores.join(format!("run-{i}")).is_dir(),
            "run-{i}: {stderr}"
        );
    }
    for name in [
        "runs.json",
        "runs.csv",
        "sweep.csv",
        "propagation.svg",
        "revenue.svg",
    ] {
        assert!(report.join(name).is_file(), "{name} missing: {stderr}");
    }
    let runs: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("runs.json")).unwrap()).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 4);
    let csv = std::fs::read_to_string(report.join("runs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("selfish,seed,ok,mined,"), "{csv}");
    let sweep = std::fs::read_to_string(report.join("sweep.csv")).unwrap();
    assert_eq!(sweep.lines().count(), 3, "{sweep}");
    let svg = std::fs::read_to_string(report.join("revenue.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[test]
fn a_sweep_of_block_intervals_plots_stale_rates_and_a_partition_heights() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "nodes = 6\nminutes = 1\nlatency = \"20ms..300ms\"\npartition = \"halves@20s+15s\"\n\
         block_size = \"1KB/1s\"\n[sweep]\nblock_interval = [\"1s\", \"3s\"]\n\
         [published]\nlabel = \"a paper\"\nblock_interval = [\"3s\"]\nstale_rate = [0.05]\n",
    )
    .unwrap();
    let report = dir.path().join("report");
    let out = run(&[
        "--scenario",
        file.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["stale_rate.svg", "heights.svg", "propagation.svg"] {
        let svg = std::fs::read_to_string(report.join(name)).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
    }
    assert!(!report.join("revenue.svg").exists());
    // The published figure stands beside the measured one, at the point it is given for.
    let svg = std::fs::read_to_string(report.join("stale_rate.svg")).unwrap();
    assert!(svg.contains("published: a paper"), "{svg}");
    let sweep = std::fs::read_to_string(report.join("sweep.csv")).unwrap();
    let published: Vec<&str> = sweep
        .lines()
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    assert_eq!(published, ["published_stale_rate", "", "0.05"], "{sweep}");
    // A block size per span of interval scales each run's blocks with its interval.
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("runs.json")).unwrap()).unwrap();
    let sizes: Vec<u64> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["summary"]["options"]["block_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1000, 3000]);
    let csv = std::fs::read_to_string(report.join("runs.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "theory_stale_rate")
        .unwrap();
    for row in csv.lines().skip(1) {
        let theory: f64 = row.split(',').nth(col).unwrap().parse().unwrap();
        assert!(theory > 0.0 && theory < 1.0, "{row}");
    }
}

#[test]
fn a_bad_scenario_is_refused_with_its_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "nodes = 4\n# the interval\nblock_interval = \"2x\"\n",
    )
    .unwrap();
    let out = run(&["--scenario", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("`block_interval`") && err.contains("bad duration"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let missing = run(&["--scenario", "/nonexistent/s.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[test]
fn the_nodes_logs_name_their_host_and_the_simulated_time() {
    let out = Command::new(simulate())
        .args(["--nodes", "3", "--minutes", "0.5", "--block-interval", "2s"])
        .env("RUST_LOG", "powchain=info")
        .output()
        .expect("simulate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // A block a node took from a peer: stamped in simulated seconds, in its host's span,
    // without colour codes (stderr is no terminal here).
    let line = err
        .lines()
        .find(|l| l.contains("block appended"))
        .unwrap_or_else(|| panic!("no block appended in the logs:\n{err}"));
    let secs: f64 = line
        .strip_prefix("sim ")
        .and_then(|rest| rest.trim_start().split('s').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no simulated time: {line}"));
    assert!(secs > 0.0 && secs <= 30.0 + 120.0, "{line}");
    assert!(
        ["n0", "n1", "n2"]
            .iter()
            .any(|h| line.contains(&format!("node{{name=\"{h}\"}}"))),
        "{line}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe");
    // The simulator's own events stay under RUST_LOG's control.
    assert!(!err.contains("turmoil: Bind"), "{err}");
}
