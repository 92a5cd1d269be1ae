#!/usr/bin/env bash
# Builds powchain's container image from this checkout, pulling nothing from a registry:
#
#   deploy/build-image.sh                 # cargo build --release, image powchain:latest
#   deploy/build-image.sh --bin-dir target/debug --tag powchain:test
#
# The image holds node, probe and powchain-cli and the shared libraries they load (found
# with ldd: glibc's loader, libc, libm, libgcc_s), copied from this machine, on `FROM
# scratch`. Dynamic linking against the build machine's glibc, copied whole, was chosen
# over a static build because this toolchain has no musl target (rustup cannot fetch
# one here) and a static glibc binary is not supported by glibc for programs that resolve
# names; the copied libraries are the ones the binaries were linked and tested against.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=""
tag="powchain:latest"
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        *) echo "usage: $0 [--bin-dir DIR] [--tag NAME:TAG]" >&2; exit 2 ;;
    esac
done
if [ -z "$bin_dir" ]; then
    cargo build --release --locked --bin node --bin probe --bin powchain-cli
    bin_dir="${CARGO_TARGET_DIR:-target}/release"
fi
command -v podman >/dev/null || { echo "error: podman is not installed" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/data" "$root/tmp"
chmod 1777 "$root/tmp"
for bin in node probe powchain-cli; do
    [ -x "$bin_dir/$bin" ] || { echo "error: $bin_dir/$bin is missing" >&2; exit 1; }
    cp "$bin_dir/$bin" "$root/usr/local/bin/$bin"
    # Debug information stays on the build machine (the release profile keeps some).
    if command -v strip >/dev/null; then strip --strip-debug "$root/usr/local/bin/$bin"; fi
    # Every library the binary loads, at the path it loads it from.
    for lib in $(ldd "$bin_dir/$bin" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
done
podman build --quiet --tag "$tag" -f deploy/Containerfile "$root"
echo "built $tag"
