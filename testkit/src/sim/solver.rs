//! Mining in the simulation: a Poisson process of each node's hash power, and the
//! simulated clock.

use super::*;

/// Mining as a Poisson process: each attempt waits an exponential time of the node's
/// rate, then finds a real block at the chain's (low) difficulty, on this thread.
#[derive(Debug)]
pub(super) struct PoissonSolver {
    /// Blocks per simulated second this node finds.
    pub(super) rate: f64,
    pub(super) rng: Mutex<StdRng>,
}

impl Solve for PoissonSolver {
    fn solve(
        &self,
        template: Template,
        _threads: usize,
        control: Arc<MineControl>,
        wall_clock: fn() -> i64,
    ) -> BoxFuture<'static, Option<Block>> {
        let u: f64 = self.rng.lock().unwrap_or_else(|e| e.into_inner()).random();
        let wait = if self.rate > 0.0 {
            Some(Duration::from_secs_f64(
                (-(1.0 - u).ln() / self.rate).min(1e9),
            ))
        } else {
            None
        };
        Box::pin(async move {
            // No hash power: nothing is ever found (data left behind waits for a miner).
            let Some(wait) = wait else {
                return futures::future::pending().await;
            };
            tokio::time::sleep(wait).await;
            if control.cancel.load(Ordering::Relaxed) {
                return None;
            }
            powchain::pow::mine_with_clock(&template, 1, &control, wall_clock)
        })
    }
}

/// The simulated wall clock: the epoch plus simulated time.
pub(super) fn sim_clock() -> i64 {
    turmoil::since_epoch().map_or_else(powchain::block::unix_now, |d| d.as_secs() as i64)
}

pub(super) fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}
