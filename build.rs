//! Detects the programs some integration tests need: Chromium for the dashboard's browser
//! tests, python3 for the second client's test, root and `ip` (iproute2) for the multi-host
//! test on network namespaces, root and `mount` for the full-disk test, the previous
//! release's node binary (`POWCHAIN_PREVIOUS_NODE`) for the compatibility test. Without one, those
//! tests are compiled as ignored, so `cargo test` reports them as ignored rather than
//! passed.
//!
//! Only paths that exist are watched: cargo re-runs a build script on every build when a
//! watched path is missing. After installing Chromium or python3 into a directory already
//! on the `PATH`, `touch build.rs` (or change `PATH`, `CHROMIUM` or `PYTHON3`) to re-detect.

use std::path::{Path, PathBuf};

/// Returns the first of `names` found as a file in a directory of the `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Finds a program from an override variable or the `PATH`; declares what to watch.
fn detect(cfg: &str, var: &str, names: &[&str]) {
    println!("cargo:rustc-check-cfg=cfg({cfg})");
    println!("cargo:rerun-if-env-changed={var}");
    let found = match std::env::var_os(var) {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => on_path(names),
    };
    if let Some(program) = found {
        // Re-run when it is removed or replaced; it exists, so this is not re-run each time.
        println!("cargo:rerun-if-changed={}", program.display());
        println!("cargo:rustc-cfg={cfg}");
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-changed=testkit/src/chromium_names.rs");
    let chromium: &[&str] = include!("testkit/src/chromium_names.rs");
    detect("has_chromium", "CHROMIUM", chromium);
    detect("has_python3", "PYTHON3", &["python3"]);
    // The previous release's node binary, for tests/compat.rs (.ci/run builds it).
    detect("has_previous_node", "POWCHAIN_PREVIOUS_NODE", &[]);
    if let Some(path) = std::env::var_os("POWCHAIN_PREVIOUS_NODE")
        && Path::new(&path).is_file()
    {
        println!(
            "cargo:rustc-env=POWCHAIN_PREVIOUS_NODE={}",
            Path::new(&path).display()
        );
    }
    println!("cargo:rustc-check-cfg=cfg(has_netns)");
    if is_root() && on_path(&["ip"]).is_some() {
        println!("cargo:rustc-cfg=has_netns");
    }
    // Containers (tests/containers.rs): rootful podman.
    println!("cargo:rustc-check-cfg=cfg(has_podman)");
    if is_root() && on_path(&["podman"]).is_some() {
        println!("cargo:rustc-cfg=has_podman");
    }
    println!("cargo:rustc-check-cfg=cfg(has_podman_compose)");
    if is_root() && on_path(&["podman"]).is_some() && on_path(&["podman-compose"]).is_some() {
        println!("cargo:rustc-cfg=has_podman_compose");
    }
    // Mounting a small tmpfs (tests/disk.rs) needs root and mount(8).
    println!("cargo:rustc-check-cfg=cfg(has_mount)");
    if is_root() && on_path(&["mount"]).is_some() {
        println!("cargo:rustc-cfg=has_mount");
    }
}

/// Tells whether the build runs as root (network namespaces need it).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|uids| uids.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}
