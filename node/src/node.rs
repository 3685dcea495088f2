//! One member's node: a ledger replica driven on a tick timer, an overlay peer, and the flows
//! that tie them together (store, holder duties, recreate).
//!
//! Tasks: the **ledger task** owns the [`Replica`] — it takes submissions, queries and Raft
//! messages from channels, ticks it, sends what it emits over the overlay and publishes each
//! committed block; the **holder task** watches blocks and answers for this member (checks
//! deposited shares, releases or denies on access requests); the **ingest task** shares private
//! records that are not yet shared. Everything else runs in the caller's task.
//!
//! Injected: the transport (QUIC or in-memory), the wall clock, the RNG seed and the storage
//! (redb on files or on any backend), so the simulator can run this code on virtual time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use keyshare::{SealContext, SealPurpose, SealingSecretKey};
use ledger::{
    Block, Body, FileRecord, MemberId, Replica, ReplicaConfig, RequestId, Transaction, TxId,
    TxResult, WireMessage,
};
use overlay::wire::{Request, Response};
use overlay::{Handler, PeerId, Transport};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Consortium, Keys, MemberEntry, ReleasePolicy};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::private::PrivateDb;

/// Milliseconds since the Unix epoch, from whatever clock the embedder chose.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock, for the binary.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    })
}

/// Opens the ledger's database. Called at start and again whenever the ledger task restarts
/// after an error, so it must reopen the same durable state (a file path, or a backend that
/// outlives the database using it).
pub type LedgerOpener =
    Box<dyn FnMut() -> Result<ledger::RedbStore, ledger::StoreError> + Send + 'static>;

/// Storage a node runs on; files in the binary, in-memory backends in tests and the simulator.
pub struct Stores {
    /// Opens the ledger's database.
    pub ledger: LedgerOpener,
    /// Chunks held for other members.
    pub chunks: overlay::ChunkStore,
    /// This member's private records.
    pub private: PrivateDb,
}

impl Stores {
    /// Opens (or creates) the three databases under `data_dir`.
    pub fn open_dir(data_dir: &std::path::Path, quota_bytes: u64) -> Result<Self, Error> {
        std::fs::create_dir_all(data_dir).map_err(|error| Error::io(data_dir, error))?;
        let ledger_path = data_dir.join("ledger.redb");
        let chunks_path = data_dir.join("chunks.redb");
        // Opened once here, so a bad file is reported at start; reopened by the opener later.
        drop(
            ledger::RedbStore::open_file(&ledger_path)
                .map_err(|error| Error::config(&ledger_path, error))?,
        );
        Ok(Self {
            ledger: Box::new(move || ledger::RedbStore::open_file(&ledger_path)),
            chunks: overlay::ChunkStore::open_file(&chunks_path, quota_bytes)
                .map_err(|error| Error::config(&chunks_path, error))?,
            private: PrivateDb::open_file(&data_dir.join("private.redb"))?,
        })
    }
}

/// Everything a node is started with.
pub struct NodeOptions {
    /// The consortium.
    pub consortium: Consortium,
    /// This member's name in it.
    pub name: String,
    /// This member's secret keys.
    pub keys: Keys,
    /// Its databases.
    pub stores: Stores,
    /// When to release shares.
    pub policy: ReleasePolicy,
    /// Seeds the node's RNG (file secrets, nonces, sealing). Election timeouts come from the
    /// genesis, the same on every node.
    pub seed: u64,
    /// Wall-clock milliseconds, for block and file timestamps.
    pub clock: Clock,
    /// Raft tick interval.
    pub tick: Duration,
}

/// The answer to a committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The transaction id.
    pub tx: TxId,
    /// The block that holds it.
    pub height: u64,
    /// Applied or rejected.
    pub result: TxResult,
}

type Query = Box<dyn FnOnce(&Replica) + Send>;

enum Command {
    Submit {
        body: Body,
        reply: oneshot::Sender<Result<Receipt, Error>>,
    },
    Query(Query),
}

/// State shared by a node's tasks and its handle.
pub(crate) struct Shared<T> {
    pub(crate) consortium: Consortium,
    pub(crate) me: MemberEntry,
    pub(crate) signing: SigningKey,
    pub(crate) sealing: SealingSecretKey,
    pub(crate) policy: ReleasePolicy,
    pub(crate) transport: Arc<T>,
    pub(crate) private: PrivateDb,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) rng: Mutex<StdRng>,
    pub(crate) clock: Clock,
    commands: mpsc::Sender<Command>,
    pub(crate) blocks: broadcast::Sender<Arc<Block>>,
    pub(crate) ingest: Notify,
    /// Serialises sharing, so the ingest task and the API never share a record twice.
    pub(crate) store_lock: tokio::sync::Mutex<()>,
    /// Why the ledger is down, while it restarts after an error.
    pub(crate) ledger_error: Mutex<Option<String>>,
    /// Hash of the last applied block, for `status` while the ledger is down.
    pub(crate) last_head: Mutex<ledger::BlockHash>,
    /// Woken when the ledger is back after a failure.
    pub(crate) ledger_recovered: Notify,
}

impl<T> Shared<T> {
    pub(crate) fn peer(entry: &MemberEntry) -> PeerId {
        PeerId::from_bytes(*entry.id.as_bytes())
    }

    /// Why the ledger is down, if it is.
    pub(crate) fn ledger_error(&self) -> Option<String> {
        self.ledger_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_ledger_error(&self, error: Option<String>) {
        let healthy = u64::from(error.is_none());
        self.metrics
            .ledger_healthy
            .store(healthy, std::sync::atomic::Ordering::Relaxed);
        *self
            .ledger_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    /// Runs `f` on the replica, in the ledger task.
    pub(crate) async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Replica) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (reply, answer) = oneshot::channel();
        let query: Query = Box::new(move |replica| {
            let _ = reply.send(f(replica));
        });
        let down = || match self.ledger_error() {
            Some(reason) => Error::LedgerDown { reason },
            None => Error::Stopped,
        };
        self.commands
            .send(Command::Query(query))
            .await
            .map_err(|_| Error::Stopped)?;
        // A query the ledger task dropped because the replica failed says why.
        answer.await.map_err(|_| down())
    }

    /// Signs and submits `body`; the receiver resolves when its block is applied here.
    /// Transactions enqueued one after another get increasing nonces in that order.
    async fn enqueue(
        &self,
        body: Body,
    ) -> Result<oneshot::Receiver<Result<Receipt, Error>>, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Submit { body, reply })
            .await
            .map_err(|_| Error::Stopped)?;
        Ok(answer)
    }

    /// Submits `bodies` in order and waits until each is applied. They are enqueued at once: the
    /// replica proposes a member's transactions in the order they were signed, so their nonces
    /// apply in order. The first rejection is returned (the bodies after it are still ordered,
    /// and fail on their own).
    pub(crate) async fn submit_applied_all(
        &self,
        bodies: Vec<Body>,
    ) -> Result<Vec<Receipt>, Error> {
        let mut answers = Vec::with_capacity(bodies.len());
        for body in bodies {
            answers.push(self.enqueue(body).await?);
        }
        let mut receipts = Vec::with_capacity(answers.len());
        for answer in answers {
            let receipt = answer.await.map_err(|_| Error::Stopped)??;
            if let TxResult::Rejected(rejection) = &receipt.result {
                return Err(Error::Rejected(rejection.clone()));
            }
            receipts.push(receipt);
        }
        Ok(receipts)
    }

    /// Submits `body` and waits until the contracts applied it.
    pub(crate) async fn submit_applied(&self, body: Body) -> Result<Receipt, Error> {
        let mut receipts = self.submit_applied_all(vec![body]).await?;
        receipts.pop().ok_or(Error::Stopped)
    }

    pub(crate) async fn file(&self, file: keyshare::FileId) -> Result<FileRecord, Error> {
        self.query(move |replica| replica.state().file(&file).cloned())
            .await?
            .ok_or(Error::UnknownFile { file })
    }

    pub(crate) fn with_rng<R>(&self, f: impl FnOnce(&mut StdRng) -> R) -> R {
        f(&mut self.rng.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Pings every other member; returns those that answered, with their RTT.
    pub(crate) async fn online_peers(&self, timeout: Duration) -> Vec<(MemberEntry, Duration)>
    where
        T: Transport,
    {
        let mut pings = tokio::task::JoinSet::new();
        for entry in &self.consortium.members {
            if entry.id == self.me.id {
                continue;
            }
            let transport = self.transport.clone();
            let entry = entry.clone();
            pings.spawn(async move {
                let start = tokio::time::Instant::now();
                let answer = transport
                    .request(Self::peer(&entry), Request::Ping { nonce: 0 }, timeout)
                    .await;
                matches!(answer, Ok(Response::Pong { .. })).then(|| (entry, start.elapsed()))
            });
        }
        let mut online: Vec<(MemberEntry, Duration)> =
            pings.join_all().await.into_iter().flatten().collect();
        online.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let mut rtts = self
            .metrics
            .peer_rtt_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (entry, rtt) in &online {
            rtts.insert(entry.name.clone(), rtt.as_micros() as u64);
        }
        online
    }
}

/// Counts served chunks, then answers with the standard chunk service.
struct CountingHandler {
    inner: overlay::ChunkService,
    metrics: Arc<Metrics>,
}

impl Handler for CountingHandler {
    fn handle(&self, from: &PeerId, request: Request) -> Response {
        let is_put = matches!(request, Request::PutChunk { .. });
        let response = self.inner.handle(from, request);
        match response {
            Response::Chunk { .. } => Metrics::add(&self.metrics.chunks_served, 1),
            Response::Stored if is_put => Metrics::add(&self.metrics.chunks_stored, 1),
            _ => {}
        }
        response
    }

    fn on_message(&self, from: &PeerId, payload: Vec<u8>) {
        self.inner.on_message(from, payload);
    }
}

/// Every ledger message fits in one overlay frame (the ledger ties its own limits to this one).
const _: () = assert!(ledger::MAX_MESSAGE_BYTES <= overlay::wire::MAX_FRAME_BYTES as usize);

/// Raft messages waiting for the ledger task; beyond this they are dropped (Raft resends).
const MESSAGE_QUEUE: usize = 4096;
/// Submissions and queries waiting for the ledger task.
const COMMAND_QUEUE: usize = 1024;

/// A running node.
pub struct Node<T: Transport> {
    pub(crate) shared: Arc<Shared<T>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<T: Transport> Node<T> {
    /// Starts a node. `make_transport` receives the handler that serves this node's peers and
    /// returns the transport (for QUIC: bound and listening).
    pub fn start(
        options: NodeOptions,
        make_transport: impl FnOnce(Arc<dyn Handler>) -> Result<Arc<T>, Error>,
    ) -> Result<Self, Error> {
        let NodeOptions {
            consortium,
            name,
            keys,
            stores,
            policy,
            seed,
            clock,
            tick,
        } = options;
        let position = consortium
            .members
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| Error::Invalid(format!("{name} is not a member of the consortium")))?;
        let me = consortium.members[position].clone();
        let mut opener = stores.ledger;
        let replica = Replica::open(
            consortium.genesis(),
            ReplicaConfig::new(position as u64 + 1),
            opener().map_err(ledger::Error::from)?,
        )?;
        let metrics = Arc::new(Metrics::default());
        let chunks = Arc::new(stores.chunks);
        let (message_tx, message_rx) = mpsc::channel(MESSAGE_QUEUE);
        let handler: Arc<dyn Handler> = Arc::new(CountingHandler {
            inner: overlay::ChunkService::new(chunks.clone(), message_tx),
            metrics: metrics.clone(),
        });
        let transport = make_transport(handler)?;
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (blocks, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            consortium,
            me,
            signing: keys.signing,
            sealing: keys.sealing,
            policy,
            transport,
            private: stores.private,
            metrics,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15)),
            clock,
            commands,
            blocks,
            ingest: Notify::new(),
            store_lock: tokio::sync::Mutex::new(()),
            ledger_error: Mutex::new(None),
            last_head: Mutex::new(ledger::GENESIS_PREV_HASH),
            ledger_recovered: Notify::new(),
        });
        shared.set_ledger_error(None);
        let (stop, stopped) = watch::channel(false);
        let ledger_task = tokio::spawn(run_ledger(
            replica,
            opener,
            shared.clone(),
            command_rx,
            message_rx,
            tick,
            stopped.clone(),
        ));
        let holder_task = tokio::spawn(crate::holder::run(shared.clone(), stopped.clone()));
        let ingest_task = tokio::spawn(crate::store::run_ingest(shared.clone(), stopped));
        Ok(Self {
            shared,
            stop,
            tasks: Mutex::new(vec![ledger_task, holder_task, ingest_task]),
        })
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.shared.me.name
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The transport it serves on.
    pub fn transport(&self) -> &Arc<T> {
        &self.shared.transport
    }

    /// Stops the tasks and waits for them.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The master table and share state of a file.
    pub async fn file(&self, file: keyshare::FileId) -> Result<FileRecord, Error> {
        self.shared.file(file).await
    }

    /// Files this member's ledger replica knows, with the requests filed for them.
    pub async fn requests_for(&self, file: keyshare::FileId) -> Result<Vec<RequestId>, Error> {
        self.shared
            .query(move |replica| {
                replica
                    .state()
                    .requests()
                    .filter(|(_, record)| record.file == file)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .await
    }

    /// An access request and the answers to it so far, as this replica knows them.
    pub async fn access_request(
        &self,
        request: RequestId,
    ) -> Result<Option<ledger::AccessRecord>, Error> {
        self.shared
            .query(move |replica| replica.state().request(&request).cloned())
            .await
    }

    /// The Raft leader's id as this replica knows it.
    pub async fn leader_id(&self) -> Result<Option<u64>, Error> {
        self.shared.query(|replica| replica.leader()).await
    }

    /// Waits until the replica has applied `height` (or `timeout` passes).
    pub async fn wait_for_height(&self, height: u64, timeout: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self
                .shared
                .query(|replica| replica.state().height())
                .await?;
            if now >= height {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("block {height}"),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Maps Raft ids (1-based genesis positions) to overlay peers.
fn raft_peers(consortium: &Consortium) -> Vec<PeerId> {
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
async fn run_ledger<T: Transport>(
    mut replica: Replica,
    mut opener: LedgerOpener,
    shared: Arc<Shared<T>>,
    mut commands: mpsc::Receiver<Command>,
    mut messages: mpsc::Receiver<(PeerId, Vec<u8>)>,
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
    let store = opener().map_err(ledger::Error::from)?;
    Ok(Replica::open(
        shared.consortium.genesis(),
        ReplicaConfig::new(id),
        store,
    )?)
}

/// Waits `delay` while the ledger is down, refusing submissions and queries and dropping Raft
/// messages (peers resend). Returns false if the node is stopping.
async fn refuse_while_down<T>(
    shared: &Shared<T>,
    commands: &mut mpsc::Receiver<Command>,
    messages: &mut mpsc::Receiver<(PeerId, Vec<u8>)>,
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
                if let Command::Submit { reply, .. } = command {
                    let reason = shared.ledger_error().unwrap_or_default();
                    let _ = reply.send(Err(Error::LedgerDown { reason }));
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
    messages: &mut mpsc::Receiver<(PeerId, Vec<u8>)>,
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
            Some((from, bytes)) = messages.recv() => deliver(&mut replica, &peers, from, &bytes),
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

/// The context a holder's deposited share is sealed under.
pub(crate) fn deposit_context(record: &FileRecord, holder: &MemberId) -> Option<SealContext> {
    Some(SealContext {
        file_id: record.table.file_id,
        holder: *holder.as_bytes(),
        share_index: record.share_index(holder)?,
        purpose: SealPurpose::Deposit,
    })
}

/// The context a holder's released share is sealed under.
pub(crate) fn release_context(
    record: &FileRecord,
    holder: &MemberId,
    request: &RequestId,
) -> Option<SealContext> {
    Some(SealContext {
        purpose: SealPurpose::Release {
            request_id: *request.as_bytes(),
        },
        ..deposit_context(record, holder)?
    })
}
