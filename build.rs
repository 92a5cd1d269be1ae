//! Detects a Chromium for the dashboard's browser tests: without one they are compiled as
//! ignored, so `cargo test` reports them as ignored rather than passed.

use std::path::Path;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(has_chromium)");
    println!("cargo:rerun-if-env-changed=CHROMIUM");
    println!("cargo:rerun-if-env-changed=PATH");
    let candidates = ["chromium", "chromium-browser", "google-chrome"];
    let found = std::env::var_os("CHROMIUM").is_some_and(|c| Path::new(&c).exists())
        || std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| candidates.iter().any(|c| dir.join(c).exists()))
        });
    for c in candidates {
        // Re-run when a browser gets installed or removed.
        println!("cargo:rerun-if-changed=/usr/bin/{c}");
    }
    if found {
        println!("cargo:rustc-cfg=has_chromium");
    }
}
