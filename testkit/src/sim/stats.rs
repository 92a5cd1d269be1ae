//! What a run records, and its summary: propagation, stale rate, traffic, the selfish
//! pool's revenue.

use super::*;
use crate::percentile;

// ---------------------------------------------------------------------------------------
// What the run records.

#[derive(Debug)]
pub(super) struct BlockRecord {
    pub(super) height: u64,
    /// When the first node (its miner) committed it.
    pub(super) first: Duration,
    /// When each node first committed it, in order.
    pub(super) reached: Vec<Duration>,
    pub(super) nodes: BTreeSet<usize>,
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) blocks: BTreeMap<BlockHash, BlockRecord>,
    /// (seconds, highest height of each half), sampled.
    pub(super) heights: Vec<(f64, u64, u64)>,
    /// (node, hash, data) of every block a node mined and committed.
    pub(super) mined: Vec<(usize, BlockHash, String)>,
    pub(super) reorg_depths: BTreeMap<usize, u64>,
    /// Each node's tip (height, hash) as of its last commit or start.
    pub(super) tips: Vec<(u64, BlockHash)>,
    pub(super) peak_book: usize,
    pub(super) peak_branch_blocks: usize,
    pub(super) peak_branch_bytes: usize,
    /// Nodes each node has started (its restarts included).
    pub(super) starts: Vec<u64>,
}

impl Stats {
    pub(super) fn on_event(&mut self, node: usize, t: Duration, event: Event<'_>) {
        match event {
            Event::Committed { blocks, left, .. } => {
                for b in blocks {
                    let record = self.blocks.entry(b.hash).or_insert_with(|| BlockRecord {
                        height: b.index,
                        first: t,
                        reached: Vec::new(),
                        nodes: BTreeSet::new(),
                    });
                    if record.nodes.insert(node) {
                        record.reached.push(t);
                    }
                }
                if let Some(last) = blocks.last() {
                    self.tips[node] = (last.index, last.hash);
                }
                if left > 0 {
                    *self.reorg_depths.entry(left).or_default() += 1;
                }
            }
            Event::Mined { block } => {
                self.mined
                    .push((node, block.hash, block.data.as_str().to_owned()));
            }
            Event::Branch { blocks, bytes } => {
                self.peak_branch_blocks = self.peak_branch_blocks.max(blocks);
                self.peak_branch_bytes = self.peak_branch_bytes.max(bytes);
            }
        }
    }
}

pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(super) fn spread(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({
        "blocks": v.len(),
        "min": v.first().copied().map(round3),
        "p50": percentile(&v, 0.5).map(round3),
        "p90": percentile(&v, 0.9).map(round3),
        "max": v.last().copied().map(round3),
    })
}

pub(super) fn summarize(
    options: &Options,
    n: usize,
    stats: &Stats,
    (chains, races): (
        &BTreeMap<BlockHash, BTreeSet<BlockHash>>,
        Option<powchain::node::Races>,
    ),
    traffic: &[Arc<Traffic>],
    agreed_after: &[Value],
    final_agreement: Option<Duration>,
) -> (Value, Series) {
    // The chain most nodes hold at the end decides which blocks are stale.
    let mut tip_count: BTreeMap<BlockHash, usize> = BTreeMap::new();
    for t in &stats.tips {
        *tip_count.entry(t.1).or_default() += 1;
    }
    let final_tip = tip_count
        .iter()
        .max_by_key(|(h, c)| (**c, std::cmp::Reverse(**h)))
        .map(|(h, _)| *h)
        .unwrap_or_default();
    let final_height = stats
        .tips
        .iter()
        .find(|t| t.1 == final_tip)
        .map_or(0, |t| t.0);
    // Blocks of the final chain, as a node at the final tip holds it; without one (a failed
    // run), the blocks every node that ends at the final tip once committed.
    let in_chain: BTreeSet<BlockHash> = match chains.get(&final_tip) {
        Some(chain) => stats
            .blocks
            .keys()
            .filter(|h| chain.contains(*h))
            .copied()
            .collect(),
        None => {
            let holders: BTreeSet<usize> =
                (0..n).filter(|i| stats.tips[*i].1 == final_tip).collect();
            stats
                .blocks
                .iter()
                .filter(|(_, r)| r.height <= final_height && holders.is_subset(&r.nodes))
                .map(|(h, _)| *h)
                .collect()
        }
    };
    let mined = stats.mined.len();
    let stale = stats
        .mined
        .iter()
        .filter(|(_, h, _)| !in_chain.contains(h))
        .count();
    let mut to = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    // The k-th node's delay of each block.
    let mut kth: Vec<Vec<f64>> = vec![Vec::new(); n];
    for hash in &in_chain {
        let r = &stats.blocks[hash];
        // Hosts step one after another, so a node's commit may be stamped a moment before
        // the miner's: in order of arrival, and never before it.
        let mut arrivals: Vec<f64> = r
            .reached
            .iter()
            .map(|t| t.saturating_sub(r.first).as_secs_f64())
            .collect();
        arrivals.sort_by(f64::total_cmp);
        for (k, d) in arrivals.into_iter().enumerate().take(n) {
            kth[k].push(d);
        }
        for (k, fraction) in [0.5, 0.9, 0.99, 1.0].iter().enumerate() {
            let need = ((n as f64) * fraction).ceil() as usize;
            if let Some(t) = r.reached.get(need.max(1) - 1) {
                to[k].push((*t - r.first).as_secs_f64());
            }
        }
    }
    let frames: u64 = traffic
        .iter()
        .map(|t| t.frames.load(Ordering::Relaxed))
        .sum();
    let bytes: u64 = traffic
        .iter()
        .map(|t| t.bytes.load(Ordering::Relaxed))
        .sum();
    let per = (n as f64) * (in_chain.len().max(1) as f64);
    let reorgs: u64 = stats.reorg_depths.values().sum();
    let [to50, to90, to99, to100] = to;
    let selfish = options.selfish.map(|alpha| {
        let (pool, honest): (Vec<_>, Vec<_>) = stats.mined.iter().partition(|(m, _, _)| *m == 0);
        let pool_in_chain = pool.iter().filter(|(_, h, _)| in_chain.contains(h)).count();
        let honest_stale = honest
            .iter()
            .filter(|(_, h, _)| !in_chain.contains(h))
            .count();
        let races = races.unwrap_or_default();
        let ended = races.honest_on_pool + races.honest_on_honest;
        let gamma = (ended > 0).then(|| races.honest_on_pool as f64 / ended as f64);
        json!({
            "alpha": alpha,
            "pool_mined": pool.len(),
            "pool_in_chain": pool_in_chain,
            "relative_revenue": round3(pool_in_chain as f64 / in_chain.len().max(1) as f64),
            "theory_gamma_0": round3(selfish_revenue(alpha, 0.0)),
            "races": {
                "pool_won": races.pool_won,
                "honest_on_pool": races.honest_on_pool,
                "honest_on_honest": races.honest_on_honest,
            },
            "gamma_measured": gamma.map(round3),
            "theory_at_measured_gamma": gamma.map(|g| round3(selfish_revenue(alpha, g))),
            "honest_stale_rate": round3(honest_stale as f64 / honest.len().max(1) as f64),
        })
    });
    let propagation: Vec<f64> = kth
        .into_iter()
        .take_while(|v| !v.is_empty())
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.5).map_or(0.0, round3)
        })
        .collect();
    // The mean over nodes of their typical delay: the area left of the curve above (the
    // median over blocks keeps out the blocks that reached a node late because it was on
    // another branch until a fork resolved).
    let mean_delay =
        (!propagation.is_empty()).then(|| round3(propagation.iter().sum::<f64>() / n as f64));
    let mut summary = json!({
        "options": options.to_json(),
        "blocks": {
            "mined": mined,
            "in_final_chain": in_chain.len(),
            "stale": stale,
            "stale_rate": round3(stale as f64 / mined.max(1) as f64),
        },
        "propagation_s": {
            "to_50pct": spread(to50),
            "to_90pct": spread(to90),
            "to_99pct": spread(to99),
            "to_100pct": spread(to100),
            "mean_delay": mean_delay,
        },
        "reorgs": {
            "count": reorgs,
            "max_depth": stats.reorg_depths.keys().max().copied().unwrap_or(0),
            "by_depth": stats.reorg_depths.iter().map(|(d, c)| (d.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
        },
        "agreement": agreed_after,
        "traffic_per_node_per_block": {
            "messages": round3(frames as f64 / per),
            "bytes": round3(bytes as f64 / per),
        },
        "traffic_per_node_per_mined_block": {
            "bytes": round3(bytes as f64 / ((n as f64) * (mined.max(1) as f64))),
        },
        "peak": {
            "address_book": stats.peak_book,
            "branch_blocks": stats.peak_branch_blocks,
            "branch_bytes": stats.peak_branch_bytes,
        },
        "final": {
            "height": final_height,
            "tip": final_tip.to_hex(),
            "agreed_at_s": final_agreement.map(|t| round3(t.as_secs_f64())),
            "restarts": stats.starts.iter().map(|s| s.saturating_sub(1)).sum::<u64>(),
        },
    });
    if let Some(selfish) = selfish {
        summary["selfish"] = selfish;
    }
    if !options.shares.is_empty() {
        // Each pool's blocks: a big miner never competes with itself, so it loses fewer.
        let pools: Vec<Value> = options
            .shares
            .iter()
            .enumerate()
            .map(|(node, share)| {
                let mined: Vec<_> = stats.mined.iter().filter(|m| m.0 == node).collect();
                let kept = mined.iter().filter(|m| in_chain.contains(&m.1)).count();
                json!({
                    "node": node,
                    "share": share,
                    "mined": mined.len(),
                    "in_final_chain": kept,
                    "stale_rate": round3(1.0 - kept as f64 / mined.len().max(1) as f64),
                    "relative_revenue": round3(kept as f64 / in_chain.len().max(1) as f64),
                })
            })
            .collect();
        summary["pools"] = json!(pools);
    }

    let series = Series {
        propagation,
        heights: stats.heights.clone(),
    };
    (summary, series)
}

/// A selfish pool's relative revenue (its share of the blocks of the final chain) with
/// hash power share `alpha`, when a share `gamma` of the honest miners mines on its block
/// in a race: Eyal and Sirer, "Majority is not Enough" (2014), equation (8).
pub fn selfish_revenue(alpha: f64, gamma: f64) -> f64 {
    let a = alpha;
    (a * (1.0 - a).powi(2) * (4.0 * a + gamma * (1.0 - 2.0 * a)) - a.powi(3))
        / (1.0 - a * (1.0 + (2.0 - a) * a))
}

/// Returns the process's peak resident memory in MiB (Linux), if known.
pub(super) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round3(kb / 1024.0))
}
