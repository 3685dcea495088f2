//! The ledger task: owns the [`Replica`], takes submissions, queries and Raft messages from
//! channels, ticks it, sends what it emits over the overlay (in order per peer) and publishes
//! each committed block; reopens the replica from its durable state when it fails.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crate::inbound::Inbound;
use ledger::{
    BuiltSnapshot, MemberId, Replica, ReplicaConfig, SnapshotJob, Transaction, TxId, WireMessage,
};
use overlay::{PeerId, Transport};
use tokio::sync::{mpsc, oneshot, watch};

use crate::compute::Compute;
use crate::config::Consortium;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::shared::{Command, Receipt, Shared};

/// Opens the ledger's database. Called at start and again whenever the ledger task restarts
/// after an error, so it must reopen the same durable state (a file path, or a backend that
/// outlives the database using it).
pub type LedgerOpener = Box<dyn FnMut() -> Result<ledger::RedbStore, Error> + Send + 'static>;

/// Maps Raft ids (1-based genesis positions) to overlay peers.
pub(crate) fn raft_peers(consortium: &Consortium) -> Vec<PeerId> {
    consortium.members.iter().map(Shared::<()>::peer).collect()
}

/// Bounds of the wait between ledger restarts (doubling while reopening keeps failing).
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A ledger that served this long before failing starts its backoff afresh.
const HEALTHY_STRETCH: Duration = Duration::from_secs(30);

/// How one run of the replica ended.
enum Served {
    /// The node is stopping.
    Stopped,
    /// The replica failed (a storage error): it must be reopened from its durable state.
    Failed(String),
}

/// The ledger task: serves the replica until the node stops. A replica that fails is logged,
/// reported (`status`, `/metrics`) and reopened from its durable state with backoff; the
/// submissions it interrupted fail with [`Error::LedgerDown`], so their callers can retry, and
/// submissions made while it is down are refused the same way.
pub(crate) async fn run_ledger<T: Transport>(
    mut replica: Replica,
    mut opener: LedgerOpener,
    shared: Arc<Shared<T>>,
    mut commands: mpsc::Receiver<Command>,
    mut messages: mpsc::Receiver<Inbound>,
    tick: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut outbox = Outbox::default();
    // Never goes down across restarts: transactions signed before a failure may still commit,
    // and a nonce must not be signed twice for different bodies.
    let mut next_nonce = 0u64;
    let mut backoff = RESTART_BACKOFF_MIN;
    shared.set_ledger_error(None);
    loop {
        let started = tokio::time::Instant::now();
        let served = serve_ledger(
            replica,
            &shared,
            &mut commands,
            &mut messages,
            &mut outbox,
            &mut next_nonce,
            tick,
            &mut stopped,
        )
        .await;
        let Served::Failed(reason) = served else {
            return;
        };
        tracing::error!(%reason, "the ledger replica failed; reopening it from its durable state");
        Metrics::add(&shared.metrics.ledger_restarts, 1);
        shared.set_ledger_error(Some(reason));
        // A ledger that fails again soon after reopening waits longer each time.
        backoff = if started.elapsed() >= HEALTHY_STRETCH {
            RESTART_BACKOFF_MIN
        } else {
            (backoff * 2).min(RESTART_BACKOFF_MAX)
        };
        replica = loop {
            if !refuse_while_down(&shared, &mut commands, &mut messages, &mut stopped, backoff)
                .await
            {
                return;
            }
            match reopen(&shared, &mut opener) {
                Ok(replica) => break replica,
                Err(error) => {
                    tracing::error!(%error, "the ledger could not be reopened; trying again");
                    shared.set_ledger_error(Some(error.to_string()));
                    backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                }
            }
        };
        tracing::info!("the ledger replica is back");
        shared.set_ledger_error(None);
        // Duties that failed while it was down can be tried now.
        shared.ledger_recovered.notify_waiters();
    }
}

fn reopen<T>(shared: &Shared<T>, opener: &mut LedgerOpener) -> Result<Replica, Error> {
    let id = raft_peers(&shared.consortium)
        .iter()
        .position(|peer| peer.as_bytes() == shared.me.id.as_bytes())
        .map_or(0, |position| position as u64 + 1);
    let store = opener()?;
    Ok(Replica::open_sharing(
        shared.consortium.genesis(),
        ReplicaConfig::new(id),
        store,
        shared.compute.verdicts().cloned(),
    )?)
}

/// Waits `delay` while the ledger is down, refusing submissions and queries and dropping Raft
/// messages (peers resend). Returns false if the node is stopping.
async fn refuse_while_down<T>(
    shared: &Shared<T>,
    commands: &mut mpsc::Receiver<Command>,
    messages: &mut mpsc::Receiver<Inbound>,
    stopped: &mut watch::Receiver<bool>,
    delay: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => return false,
            () = tokio::time::sleep_until(deadline) => return true,
            Some(command) = commands.recv() => {
                let reason = shared.ledger_error().unwrap_or_default();
                match command {
                    Command::Submit { reply, .. } => {
                        let _ = reply.send(Err(Error::LedgerDown { reason }));
                    }
                    Command::SubmitSigned { txs, reply } => {
                        let refused = txs
                            .iter()
                            .map(|_| Err(Error::LedgerDown { reason: reason.clone() }))
                            .collect();
                        let _ = reply.send(refused);
                    }
                    Command::Query(_) => {}
                }
            }
            Some(_) = messages.recv() => {}
        }
    }
}

/// Runs `replica` until the node stops or the replica fails.
#[allow(clippy::too_many_arguments)]
async fn serve_ledger<T: Transport>(
    mut replica: Replica,
    shared: &Arc<Shared<T>>,
    commands: &mut mpsc::Receiver<Command>,
    messages: &mut mpsc::Receiver<Inbound>,
    outbox: &mut Outbox,
    next_nonce: &mut u64,
    tick: Duration,
    stopped: &mut watch::Receiver<bool>,
) -> Served {
    let peers = raft_peers(&shared.consortium);
    let me = MemberId::from_bytes(*shared.me.id.as_bytes());
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiters: BTreeMap<TxId, oneshot::Sender<Result<Receipt, Error>>> = BTreeMap::new();
    // Snapshots built in the background come back here. Made per run: a replica reopened
    // after a failure takes no snapshot built for the one before.
    let (built_sender, mut built) = mpsc::channel::<Result<BuiltSnapshot, u64>>(1);
    shared.metrics.ledger_height.store(
        replica.state().height(),
        std::sync::atomic::Ordering::Relaxed,
    );
    *shared
        .last_head
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = replica.state().head();
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => return Served::Stopped,
            Some(snapshot) = built.recv() => match snapshot {
                Ok(snapshot) => replica.snapshot_built(snapshot),
                Err(index) => replica.snapshot_not_built(index),
            },
            Some(inbound) = messages.recv() => {
                deliver(&mut replica, &peers, inbound.from, &inbound.bytes);
            }
            Some(command) = commands.recv() => match command {
                Command::Submit { body, reply } => {
                    *next_nonce = (*next_nonce).max(replica.state().nonce(&me) + 1);
                    let chain_id = &replica.state().genesis().chain_id;
                    let tx = Transaction::sign(&shared.signing, chain_id, *next_nonce, body);
                    match replica.submit(tx) {
                        Ok(id) => {
                            *next_nonce += 1;
                            waiters.insert(id, reply);
                            replica.flush();
                        }
                        Err(error) => {
                            let _ = reply.send(Err(error.into()));
                        }
                    }
                }
                Command::SubmitSigned { txs, reply } => {
                    let admissions = txs
                        .into_iter()
                        .map(|tx| {
                            // One waiter per transaction: a copy submitted while the first
                            // waits is refused, not left to take the first one's answer.
                            let id = tx.id();
                            if waiters.get(&id).is_some_and(|waiter| !waiter.is_closed()) {
                                return Err(Error::Invalid(format!(
                                    "transaction {id} is already waiting for its block"
                                )));
                            }
                            // This member's own nonces, signed elsewhere, are spent for the
                            // node's own submissions too — once the signature shows the key
                            // holder signed them (a token holder alone must not move the
                            // counter).
                            let own_nonce = (tx.sender == me
                                && ledger::verify_signatures(replica.state(), &[&tx])
                                    == [true])
                                .then_some(tx.nonce);
                            let id = replica.submit(tx)?;
                            if let Some(nonce) = own_nonce {
                                *next_nonce = (*next_nonce).max(nonce.saturating_add(1));
                            }
                            let (sender, receiver) = oneshot::channel();
                            waiters.insert(id, sender);
                            Ok(receiver)
                        })
                        .collect();
                    replica.flush();
                    let _ = reply.send(admissions);
                }
                Command::Query(query) => query(&replica),
            },
            _ = interval.tick() => replica.tick((shared.clock)()),
        }
        // Messages first, then blocks: `more` says blocks are waiting to be applied.
        loop {
            let effects = match replica.poll() {
                Ok(effects) => effects,
                Err(error) => {
                    let reason = error.to_string();
                    for (_, waiter) in std::mem::take(&mut waiters) {
                        let reason = reason.clone();
                        let _ = waiter.send(Err(Error::LedgerDown { reason }));
                    }
                    return Served::Failed(reason);
                }
            };
            let more = effects.more;
            if let Some(job) = effects.snapshot {
                build_snapshot(&shared.compute, job, built_sender.clone());
            }
            for message in effects.messages {
                let Some(peer) = peers.get(message.recipient() as usize - 1).copied() else {
                    continue;
                };
                outbox.send(&shared.transport, peer, message.encode());
            }
            for (id, error) in effects.refused {
                if let Some(waiter) = waiters.remove(&id) {
                    let _ = waiter.send(Err(error.into()));
                }
            }
            for tx in effects.superseded {
                if let Some(waiter) = waiters.remove(&tx) {
                    let _ = waiter.send(Err(Error::OutcomeUnknown { tx }));
                }
            }
            for committed in effects.committed {
                let block = committed.block;
                if !waiters.is_empty() {
                    for (&id, result) in committed.ids.iter().zip(&block.results) {
                        if let Some(waiter) = waiters.remove(&id) {
                            let _ = waiter.send(Ok(Receipt {
                                tx: id,
                                height: block.height,
                                result: result.clone(),
                            }));
                        }
                    }
                }
                let metrics = &shared.metrics;
                metrics
                    .ledger_height
                    .store(block.height, std::sync::atomic::Ordering::Relaxed);
                Metrics::add(&metrics.tx_committed, block.txs.len() as u64);
                let _ = shared.blocks.send(Arc::new(block));
            }
            *shared
                .last_head
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = replica.state().head();
            if !more {
                break;
            }
        }
    }
}

/// Builds `job` in the background (encoding and hashing the whole contract state, which must not
/// hold up the ledger task nor take CPU from it) and sends the result back to it: the snapshot,
/// or its index when the pool dropped the job, so the replica can start another.
fn build_snapshot(
    compute: &Compute,
    job: SnapshotJob,
    done: mpsc::Sender<Result<BuiltSnapshot, u64>>,
) {
    let index = job.index();
    let building = compute.start_background(move || job.build());
    tokio::spawn(async move {
        let result = building.await.map_err(|error| {
            tracing::warn!(index, %error, "snapshot not built");
            index
        });
        let _ = done.send(result).await;
    });
}

/// Ledger messages waiting to leave for one peer; beyond this they are dropped (Raft resends).
const OUTBOX_QUEUE: usize = 1024;

/// Ledger messages to one peer are sent in the order the replica emitted them: one queue and one
/// sending task per peer (a task per message would let them race), so a slow or unreachable peer
/// holds up only its own queue. The transport may still deliver them out of order (each message
/// travels on its own stream); the replica does not rely on arrival order.
#[derive(Default)]
struct Outbox {
    queues: BTreeMap<PeerId, mpsc::Sender<Vec<u8>>>,
}

impl Outbox {
    fn send<T: Transport>(&mut self, transport: &Arc<T>, peer: PeerId, bytes: Vec<u8>) {
        let queue = self.queues.entry(peer).or_insert_with(|| {
            let (queue, mut waiting) = mpsc::channel::<Vec<u8>>(OUTBOX_QUEUE);
            let transport = transport.clone();
            // Ends when the ledger task drops the outbox.
            tokio::spawn(async move {
                while let Some(bytes) = waiting.recv().await {
                    if let Err(error) = transport.send_message(peer, bytes).await {
                        tracing::trace!(%peer, %error, "ledger message not sent");
                    }
                }
            });
            queue
        });
        if queue.try_send(bytes).is_err() {
            tracing::debug!(%peer, "ledger message queue full; message dropped");
        }
    }
}

/// Feeds one Raft message from `from`, refusing it unless it is signed into the transport by
/// the member it claims to come from.
fn deliver(replica: &mut Replica, peers: &[PeerId], from: PeerId, bytes: &[u8]) {
    let message = match WireMessage::decode(bytes) {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(%from, %error, "undecodable raft message");
            return;
        }
    };
    let claimed = peers.get((message.sender() as usize).wrapping_sub(1));
    if claimed != Some(&from) {
        tracing::warn!(%from, sender = message.sender(), "raft message from the wrong member");
        return;
    }
    let kind = message.kind();
    if let Err(error) = replica.handle_message(message) {
        // Raft refuses stale messages routinely; a refused snapshot transfer is worth a warning
        // (the transfer is asked for again).
        if kind.starts_with("snapshot") {
            tracing::warn!(%from, kind, %error, "snapshot transfer message refused");
            return;
        }
        tracing::debug!(%from, kind, %error, "raft message refused");
    }
}
