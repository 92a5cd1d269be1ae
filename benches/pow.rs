//! Miner and validation speed: the compression ceiling, naive vs midstate attempts,
//! thread scaling, and full validation of a 100,000-block chain.

mod support;

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use powchain::pow::{MineControl, NonceSearch, SearchStep, Template, mine};
use powchain::{Block, BlockData, BlockHash, Blockchain, ChainParams};
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};

fn template(data_len: usize, difficulty: u32) -> Template {
    Template {
        index: 12345,
        prev_hash: BlockHash([0xab; 32]).into(),
        difficulty,
        data: BlockData::new(&serde_json::json!("x".repeat(data_len))),
        min_time: 0,
    }
}

fn pow_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("pow");
    g.throughput(Throughput::Elements(1));
    let block = GenericArray::clone_from_slice(&[7u8; 64]);
    // The block is hidden from the optimizer: with a loop-invariant block LLVM hoists the
    // message schedule out of the loop and the "ceiling" would be a block never hashed.
    g.bench_function("compress256_one_block", |b| {
        let mut state = [1u32; 8];
        b.iter(|| {
            sha2::compress256(
                black_box(&mut state),
                std::slice::from_ref(black_box(&block)),
            )
        })
    });

    let t = template(40, 64);
    g.bench_function("naive_attempt", |b| {
        let mut nonce = 0u64;
        b.iter(|| {
            nonce += 1;
            let block = Block {
                index: t.index,
                timestamp: "22/11/2026, 10:00:00".into(),
                nonce,
                difficulty: t.difficulty,
                prev_hash: t.prev_hash,
                hash: BlockHash::default(),
                data: t.data.clone(),
            };
            let hex = hex::encode(Sha256::digest(block.preimage().as_bytes()));
            black_box(hex.starts_with("0000000000000000"))
        })
    });

    // One search per prefix remainder 0..63; each iteration makes one attempt on each.
    let mut searches: Vec<NonceSearch> = (0..64)
        .map(|rem| {
            let mut prefix = b"{\"index\":1,\"data\":\"".to_vec();
            while (prefix.len() + 10) % 64 != rem || prefix.len() < 128 {
                prefix.push(b'y');
            }
            prefix.extend_from_slice(b"\",\"nonce\":");
            assert_eq!(prefix.len() % 64, rem);
            NonceSearch::new(&prefix, 64, 0, 1, 0).expect("layout")
        })
        .collect();
    let fresh = searches.clone();
    g.throughput(Throughput::Elements(64 * 256));
    g.bench_function("midstate_attempt", |b| {
        b.iter(|| {
            let mut tried = 0;
            for (s, f) in searches.iter_mut().zip(&fresh) {
                if s.run(256, &mut tried) == SearchStep::Exhausted {
                    *s = f.clone();
                }
            }
            tried
        })
    });
    for rem in [0usize, 46, 47, 48, 53, 63] {
        let fresh = searches[rem].clone();
        let mut s = fresh.clone();
        g.throughput(Throughput::Elements(1024));
        g.bench_function(format!("midstate_attempt_offset_{rem}"), |b| {
            b.iter(|| {
                let mut tried = 0;
                if s.run(1024, &mut tried) == SearchStep::Exhausted {
                    s = fresh.clone();
                }
                tried
            })
        });
    }

    const ATTEMPTS: u64 = 8 << 20;
    g.throughput(Throughput::Elements(ATTEMPTS));
    g.sample_size(10);
    for (name, threads) in [("mine_1_thread", 1), ("mine_2_threads", 2)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += mine_for(&t, threads, ATTEMPTS);
                }
                total
            })
        });
    }
    g.finish();
}

/// Mines at an unreachable difficulty until about `attempts` were made; returns the time.
fn mine_for(t: &Template, threads: usize, attempts: u64) -> Duration {
    let control = MineControl::default();
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            while control.attempts.load(Ordering::Relaxed) < attempts {
                std::thread::sleep(Duration::from_micros(200));
            }
            control.cancel.store(true, Ordering::Relaxed);
        });
        black_box(mine(t, threads, &control));
    });
    let elapsed = start.elapsed();
    let made = control.attempts.load(Ordering::Relaxed);
    elapsed.mul_f64(attempts as f64 / made as f64)
}

/// A prefix whose last partial 64-byte block holds `rem` bytes.
fn prefix_with_remainder(rem: usize) -> Vec<u8> {
    let mut prefix = b"{\"index\":1,\"data\":\"".to_vec();
    while (prefix.len() + 10) % 64 != rem || prefix.len() < 128 {
        prefix.push(b'y');
    }
    prefix.extend_from_slice(b"\",\"nonce\":");
    prefix
}

/// Attempts per second at every prefix offset (`pow_offset/<rem>`: the first layout the
/// miner uses; `pow_offset/spill_<rem>`: the two-compression layout that follows a short
/// tail range). Short measurements: 64 offsets in about two minutes.
fn offset_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("pow_offset");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_millis(900));
    g.throughput(Throughput::Elements(1024));
    for rem in 0..64 {
        let prefix = prefix_with_remainder(rem);
        for stage in 0..powchain::pow::MAX_STAGES {
            let Some(fresh) = NonceSearch::new(&prefix, 64, 0, 1, stage) else {
                continue;
            };
            let name = match fresh.layout() {
                powchain::pow::Layout::Spill { .. } => format!("spill_{rem}"),
                _ if stage == 0 => format!("{rem}"),
                _ => continue,
            };
            let mut s = fresh.clone();
            g.bench_function(name, |b| {
                b.iter(|| {
                    let mut tried = 0;
                    if s.run(1024, &mut tried) == SearchStep::Exhausted {
                        s = fresh.clone();
                    }
                    tried
                })
            });
        }
    }
    g.finish();
}

fn chain_benches(c: &mut Criterion) {
    // Memory: the process's growth while it holds one 100,000-block Blockchain (the blocks
    // moved in, nothing else kept). An upper bound: it includes what the allocator keeps of
    // the memory used to build the chain.
    let n = support::chain_blocks();
    let label = support::blocks_label(n);
    let before = powchain_testkit::rss_kib("self");
    let chain = Blockchain::from_blocks(ChainParams::with_difficulty(0), support::long_chain(n))
        .expect("valid");
    let held = powchain_testkit::rss_kib("self").saturating_sub(before);
    eprintln!(
        "chain/memory_{label}: at most {:.1} MB resident for a {n}-block chain",
        held as f64 / 1024.0
    );
    let blocks = chain.to_vec();
    drop(chain);
    let mut g = c.benchmark_group("chain");
    g.sample_size(10);
    g.throughput(Throughput::Elements(blocks.len() as u64));
    g.bench_function(format!("validate_{label}"), |b| {
        b.iter_batched(
            || blocks.clone(),
            |blocks| {
                Blockchain::from_blocks(ChainParams::with_difficulty(0), blocks).expect("valid")
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, pow_benches, offset_benches, chain_benches);
criterion_main!(benches);
