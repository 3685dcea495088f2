//! The compute seam: where the node's CPU-heavy work (chunk encryption and hashing, decryption,
//! chain replay) runs.
//!
//! The library owns no threads (DESIGN.md "Determinism rules"): the binary hands in a pool, so a
//! multi-core machine encrypts while the async workers keep serving peers; a test or the
//! simulator runs the same closures inline on its one thread, where their order is the task
//! order and a seed replays a run exactly.
//!
//! Replicas in one process may also share good signature verdicts through it
//! ([`Compute::sharing_verdicts`]): pure work every replica would repeat on identical bytes,
//! done once (see [`ledger::SharedVerdicts`] for why that cannot hide a bug).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::error::Error;

/// A unit of work handed to the pool.
pub type Job = Box<dyn FnOnce() + Send>;

/// Runs a [`Job`] somewhere else (e.g. `tokio::task::spawn_blocking`, a rayon pool).
pub type Spawner = Arc<dyn Fn(Job) + Send + Sync>;

/// Runs CPU-heavy closures on a pool the binary provides, or inline.
#[derive(Clone, Default)]
pub struct Compute {
    pool: Option<Spawner>,
    /// Where long, unhurried work runs (the ledger's snapshots); `pool` when unset.
    background: Option<Spawner>,
    verdicts: Option<ledger::SharedVerdicts>,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.pool.is_some() {
            "Compute::Pool"
        } else {
            "Compute::Inline"
        })
    }
}

impl Compute {
    /// Runs every job inline, in the calling task: deterministic, one core.
    pub fn inline() -> Self {
        Self::default()
    }

    /// Runs every job through `spawn`.
    pub fn pool(spawn: impl Fn(Job) + Send + Sync + 'static) -> Self {
        Self {
            pool: Some(Arc::new(spawn)),
            background: None,
            verdicts: None,
        }
    }

    /// This compute, running background work ([`Self::start_background`]) through `spawn`:
    /// e.g. on threads of low priority, so it takes only CPU the node leaves idle.
    pub fn with_background(mut self, spawn: impl Fn(Job) + Send + Sync + 'static) -> Self {
        self.background = Some(Arc::new(spawn));
        self
    }

    /// This compute, with the ledger replica taking good signature verdicts from `verdicts`
    /// and adding its own: for many replicas of one consortium in one process.
    pub fn sharing_verdicts(mut self, verdicts: ledger::SharedVerdicts) -> Self {
        self.verdicts = Some(verdicts);
        self
    }

    /// The shared signature verdicts, if any.
    pub fn verdicts(&self) -> Option<&ledger::SharedVerdicts> {
        self.verdicts.as_ref()
    }

    /// Runs `work` and returns its result. Fails only if the pool dropped the job (it is
    /// shutting down).
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Error> {
        self.start(work).await
    }

    /// Starts `work` now and yields its result when awaited, so jobs started one after another
    /// run in parallel on the pool (inline, each runs as it is started, in that order).
    pub fn start<R, F>(&self, work: F) -> impl Future<Output = Result<R, Error>> + Send + use<R, F>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        Self::start_on(self.pool.as_ref(), work)
    }

    /// [`Self::start`] for long work nobody waits on closely (a snapshot of the ledger state):
    /// on the background spawner if there is one.
    pub fn start_background<R, F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<R, Error>> + Send + use<R, F>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        Self::start_on(self.background.as_ref().or(self.pool.as_ref()), work)
    }

    fn start_on<R, F>(
        spawner: Option<&Spawner>,
        work: F,
    ) -> impl Future<Output = Result<R, Error>> + Send + use<R, F>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        match spawner {
            None => {
                let _ = done.send(work());
            }
            Some(spawn) => spawn(Box::new(move || {
                let _ = done.send(work());
            })),
        }
        async move { result.await.map_err(|_| Error::Stopped) }
    }
}

/// A fetch hashes arriving chunks on this compute: on the pool in a node, off the async threads
/// that drive QUIC; inline (in the request's task) in a test or the simulator.
impl overlay::Offload for Compute {
    async fn offload<R, F>(&self, job: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        self.start(job).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn inline_and_pool_give_the_same_result() {
        let inline = Compute::inline().run(|| 6 * 7).await.unwrap_or(0);
        let pool = Compute::pool(|job| {
            std::thread::spawn(job);
        })
        .run(|| 6 * 7)
        .await
        .unwrap_or(0);
        assert_eq!((inline, pool), (42, 42));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn background_work_goes_to_the_background_spawner_when_there_is_one() {
        let pool_drops = Compute::pool(drop);
        assert!(matches!(
            pool_drops.start_background(|| 1).await,
            Err(Error::Stopped)
        ));
        let background = pool_drops.with_background(|job| {
            std::thread::spawn(job);
        });
        assert_eq!(background.start_background(|| 6 * 7).await.unwrap_or(0), 42);
        assert!(matches!(background.run(|| 1).await, Err(Error::Stopped)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pool_that_drops_jobs_reports_stopped() {
        let dropping = Compute::pool(drop);
        assert!(matches!(dropping.run(|| 1).await, Err(Error::Stopped)));
    }
}
