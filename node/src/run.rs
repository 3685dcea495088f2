//! `blocktorrent run`: one member's node in the foreground until SIGINT, SIGTERM or an API
//! shutdown.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use node::config::LoadedConfig;
use node::{Node, NodeOptions, Stores};
use overlay::{PeerId, QuicTransport};
use rand::Rng;
use tokio::sync::Notify;

/// Raft tick interval of a real node.
const TICK: Duration = Duration::from_millis(50);

/// CPU-heavy work on tokio's blocking pool, off the async workers; background work (the
/// ledger's snapshots: O(state) encoding and hashing every so often) on a thread of its own at
/// low priority, so it takes mostly CPU the node leaves idle. At normal priority on 2 cores,
/// four members each encoding a 300,000-file state at once slowed every commit for seconds.
pub(crate) fn compute_pool() -> node::Compute {
    node::Compute::pool(|job| {
        tokio::task::spawn_blocking(job);
    })
    .with_background(|job| {
        // Kept here too, so a job whose thread never started can still run.
        let slot = Arc::new(Mutex::new(Some(job)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("background".into())
            .spawn(move || {
                lower_priority();
                if let Some(job) = take_job(&theirs) {
                    job();
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no thread for background work; running it on the pool");
            if let Some(job) = take_job(&slot) {
                tokio::task::spawn_blocking(job);
            }
        }
    })
}

fn take_job(slot: &Mutex<Option<node::Job>>) -> Option<node::Job> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// Lowers the calling thread's scheduling priority to nice 10 (on Linux `setpriority` on a
/// thread id affects that thread alone): about a tenth of the weight of the node's own threads,
/// so a snapshot still finishes in seconds when the node keeps both cores busy (nice 19, a
/// seventieth, would take minutes, while the log it is to compact grows). Where that fails the
/// work runs at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(%error, "background thread keeps its priority");
    }
}

pub(crate) fn run(config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = LoadedConfig::load(config)?;
    let keys = loaded.keys()?;
    let token = loaded.token()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(loaded, keys, token))
}

async fn serve(
    loaded: LoadedConfig,
    keys: node::config::Keys,
    token: String,
) -> anyhow::Result<()> {
    let admin = tokio::net::TcpListener::bind(loaded.config.admin)
        .await
        .with_context(|| format!("cannot listen for the admin API on {}", loaded.config.admin))?;
    let stores = Stores::open_dir(
        &loaded.config.data_dir,
        loaded.config.quota_bytes_per_member,
    )?;
    let listen = loaded.listen();
    let book = loaded
        .consortium
        .members
        .iter()
        .map(|m| (PeerId::from_bytes(*m.id.as_bytes()), m.listen))
        .collect();
    let signing = keys.signing.clone();
    let seed = rand::make_rng::<rand::rngs::StdRng>().next_u64();
    let node = Node::start(
        NodeOptions {
            consortium: loaded.consortium.clone(),
            name: loaded.config.name.clone(),
            keys,
            stores,
            policy: loaded.config.policy.clone(),
            seed,
            clock: node::system_clock(),
            tick: TICK,
            compute: compute_pool(),
        },
        move |handler| {
            Ok(Arc::new(QuicTransport::bind(
                &signing, listen, book, handler,
            )?))
        },
    )?;
    let node = Arc::new(node);
    let shutdown = Arc::new(Notify::new());
    let app = node::api::router(node.clone(), token, shutdown.clone());
    tracing::info!(member = %loaded.config.name, %listen, admin = %loaded.config.admin, "node running");
    let stop = async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match terminate.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
            () = shutdown.notified() => {}
        }
        tracing::info!("stopping");
    };
    node::api::serve(admin, app, node::api::ServeLimits::default(), stop)
        .await
        .context("admin API failed")?;
    node.shutdown().await;
    node.transport().shutdown().await;
    Ok(())
}
