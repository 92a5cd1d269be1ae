//! The invariants a run must end with: the live nodes agree, every node runs, every chain
//! validates, no mined block is lost (its data is in the chain or queued, durably, to be
//! mined again), and the caps on address books and competing branches held.

use super::*;

/// Checks the end of a run; `Err` names the invariant that broke.
pub(super) fn check(
    options: &Options,
    n: usize,
    params: &ChainParams,
    final_agreement: Option<Duration>,
    live: &[Arc<Node>],
    stats: &Stats,
) -> Result<(), String> {
    if final_agreement.is_none() {
        return Err(format!(
            "live nodes did not agree within {:.0} s of the end of the run and the last \
                 fault healing ({} of {n} nodes running)",
            options.settle.as_secs_f64(),
            live.len()
        ));
    }
    if live.len() != n {
        return Err(format!("only {} of {n} nodes run at the end", live.len()));
    }
    let reference = live[0].chain_blocks();
    let in_chain: BTreeSet<&str> = reference.iter().map(|b| b.data.as_str()).collect();
    for node in live {
        let blocks = node.chain_blocks();
        // The run is over: "now" is the simulated clock's end, no real-clock read (the
        // newest block was stamped by it).
        let end = blocks
            .iter()
            .filter_map(|b| b.timestamp.unix())
            .max()
            .unwrap_or(0);
        if let Err(e) = Blockchain::from_blocks_at(params.clone(), blocks, end) {
            return Err(format!("a node's chain does not validate: {e}"));
        }
    }
    // Every block a node mined is in the chain, or its data is, or it is queued (durably)
    // to be mined again.
    let mut queued: BTreeSet<String> = BTreeSet::new();
    for node in live {
        match node.remine_queue() {
            Ok(data) => queued.extend(data.into_iter().map(|d| d.as_str().to_owned())),
            Err(e) => return Err(format!("cannot read a remine queue: {e}")),
        }
    }
    for (miner, hash, data) in &stats.mined {
        if !in_chain.contains(data.as_str()) && !queued.contains(data) {
            return Err(format!(
                "block {} mined by {} is lost: neither it nor its data is in the final \
                     chain, and no node queued the data to be mined again",
                hash.short(),
                host_name(*miner)
            ));
        }
    }
    if stats.peak_book > powchain::node::MAX_ADDRS {
        return Err(format!("an address book grew to {}", stats.peak_book));
    }
    if stats.peak_branch_blocks > powchain::node::MAX_BRANCH_BLOCKS
        || stats.peak_branch_bytes > powchain::node::MAX_BRANCH_BYTES
    {
        return Err("a competing branch outgrew its caps".into());
    }
    Ok(())
}

/// A liar that pushed an honest node [`powchain::node::limits::MAX_STRIKES`] invalid blocks
/// is banned by it: its next `hello` there is refused (checked for every fifth strike at
/// least 15 simulated seconds before the end, time enough for the liar to dial again).
pub(super) fn check_liars(stats: &super::liars::LiarStats, end: Duration) -> Result<(), String> {
    for (&(liar, node), &(count, fifth)) in &stats.rejected {
        let Some(at) = fifth else { continue };
        if count >= powchain::node::limits::MAX_STRIKES
            && at + Duration::from_secs(15) <= end
            && !stats.banned_by.contains(&(liar, node))
        {
            return Err(format!(
                "{} rejected {count} invalid blocks of liar {} (the fifth at {:.0} s) but did \
                 not ban it",
                host_name(node),
                host_name(liar),
                at.as_secs_f64()
            ));
        }
    }
    Ok(())
}
