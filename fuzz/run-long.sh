#!/usr/bin/env bash
# A long fuzzing run: every target (or those named) for RUNS executions each (10 million by
# default), one after the other, each from its corpus, seeds and regressions; prints each
# target's final libFuzzer line ("Done N runs in S second(s)"). Crashes are written to
# fuzz/artifacts/<target>/; move a crashing input to fuzz/regressions/<target>/ once fixed.
#
#   fuzz/run-long.sh                          # every target, 10,000,000 runs each
#   RUNS=1000000 fuzz/run-long.sh node_session
#   MAX_TIME=1800 fuzz/run-long.sh node_session   # or stop each target after 30 minutes
#   FORK=2 fuzz/run-long.sh node_session          # on two cores: one count over 2 processes
#
# FORK=N uses libFuzzer's fork mode: N processes fuzz subsets of the corpus in jobs of up to
# 5 minutes, and the parent adds up their executions ("INFO: fuzzed for N iterations") and
# merges what they found into the corpus. libFuzzer's whole output goes to
# fuzz/logs/<target>.log.
#
# Without AddressSanitizer by default (SANITIZER=address to use it): powchain has no unsafe
# code, and ASan makes node_session's mining ~25x slower; the bounded runs of
# .ci/run keep cargo-fuzz's default (ASan).
set -euo pipefail
cd "$(dirname "$0")"
runs="${RUNS:-10000000}"
sanitizer="${SANITIZER:-none}"
limit=()
[ -z "${MAX_TIME:-}" ] || limit=(-max_total_time="$MAX_TIME")
[ "${FORK:-1}" -le 1 ] || limit+=(-fork="$FORK")
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_decoder parse_request chain_json node_session)
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "regressions/$target" "seeds/$target" logs
    start=$(date +%s)
    RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" "seeds/$target" \
        "regressions/$target" -- -runs="$runs" "${limit[@]}" -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | tee "logs/$target.log" \
        | grep -E "^Done|^stat::number_of_executed_units|^INFO: fuzzed for|^==.*ERROR|^SUMMARY" || true
    echo "$target: $(( $(date +%s) - start )) s"
done
# node_session's nodes live in directories named by process (powchain-fuzz-<pid>-*), which
# libFuzzer's last processes end without removing: remove those of ended processes.
for dir in /dev/shm/powchain-fuzz-* "${TMPDIR:-/tmp}"/powchain-fuzz-*; do
    [ -d "$dir" ] || continue
    pid="${dir##*/powchain-fuzz-}"
    [ -d "/proc/${pid%%-*}" ] || rm -rf "$dir"
done
