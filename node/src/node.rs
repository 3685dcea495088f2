//! One member's node: a ledger replica driven on a tick timer, an overlay peer, and the flows
//! that tie them together (store, holder duties, recreate).
//!
//! Tasks: the **ledger task** (`ledger_task`) owns the [`Replica`] — it takes submissions,
//! queries and Raft messages from channels, ticks it, sends what it emits over the overlay and
//! publishes each committed block; the **holder task** watches blocks and answers for this member
//! (checks deposited shares, releases or denies on access requests); the **ingest task** shares
//! private records that are not yet shared. Everything else runs in the caller's task. The tasks
//! share `shared::Shared`; they import it, not this module, which starts them.
//!
//! Injected: the transport (QUIC or in-memory), the wall clock, the RNG seed and the storage
//! (redb on files or on any backend), so the simulator can run this code on virtual time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ledger::{FileRecord, Replica, ReplicaConfig, RequestId};
use overlay::wire::{Request, Response};
use overlay::{Handler, PeerId, Transport};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::compute::Compute;
use crate::config::{Consortium, Keys, ReleasePolicy};
use crate::error::Error;
use crate::inbound::InboundQueue;
use crate::ledger_task::{LedgerOpener, run_ledger};
use crate::metrics::Metrics;
use crate::private::{PrivateDb, RecordWriter};
use crate::shared::{Clock, Shared};
use tracing::Instrument;

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
        let private_path = data_dir.join("private.redb");
        for path in [&ledger_path, &chunks_path, &private_path] {
            if crate::disk::discard_unfinished_database_file(path)
                .map_err(|error| Error::io(path, error))?
            {
                tracing::warn!(
                    path = %path.display(),
                    "a crash interrupted this database's creation; creating it again"
                );
            }
        }
        Ok(Self {
            // Opened by `Node::start` (a bad file is reported then, with its path) and again
            // whenever the ledger task reopens it.
            ledger: Box::new(move || {
                ledger::RedbStore::open_file(&ledger_path)
                    .map_err(|error| Error::config(&ledger_path, error))
            }),
            chunks: overlay::ChunkStore::open_file(&chunks_path, quota_bytes)
                .map_err(|error| Error::config(&chunks_path, error))?,
            private: PrivateDb::open_file(&private_path)?,
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
    /// Where CPU-heavy work runs: a pool in the binary, inline under a test or the simulator.
    pub compute: Compute,
}

/// Counts served chunks, then answers with the standard chunk service; queues Raft messages
/// for the ledger task itself, bounded per member in bytes and count (see the `inbound` module).
struct CountingHandler {
    inner: overlay::ChunkService,
    messages: InboundQueue,
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
        self.messages.offer(*from, payload);
    }
}

/// Every ledger message fits in one overlay frame (the ledger ties its own limits to this one).
const _: () = assert!(ledger::MAX_MESSAGE_BYTES <= overlay::wire::MAX_FRAME_BYTES as usize);

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
            compute,
        } = options;
        let position = consortium
            .members
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| Error::Invalid(format!("{name} is not a member of the consortium")))?;
        let me = consortium.members[position].clone();
        let mut opener = stores.ledger;
        let replica = Replica::open_sharing(
            consortium.genesis(),
            ReplicaConfig::new(position as u64 + 1),
            opener()?,
            compute.verdicts().cloned(),
        )?;
        let metrics = Arc::new(Metrics::default());
        let chunks = Arc::new(stores.chunks);
        let (message_queue, message_rx) =
            InboundQueue::new(crate::ledger_task::raft_peers(&consortium));
        // The chunk service's own message channel goes unused: messages go to `message_queue`.
        let handler: Arc<dyn Handler> = Arc::new(CountingHandler {
            inner: overlay::ChunkService::new(chunks.clone(), mpsc::channel(1).0),
            messages: message_queue,
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
            compute,
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
        // Every line a task logs names its member: several nodes may share a process (the
        // simulator, tests).
        let span = tracing::info_span!("node", member = %shared.me.name);
        let ledger_task = tokio::spawn(
            run_ledger(
                replica,
                opener,
                shared.clone(),
                command_rx,
                message_rx,
                tick,
                stopped.clone(),
            )
            .instrument(span.clone()),
        );
        let holder_task = tokio::spawn(
            crate::holder::run(shared.clone(), stopped.clone()).instrument(span.clone()),
        );
        let scrub_task = tokio::spawn(
            crate::scrub::run(shared.clone(), chunks, stopped.clone()).instrument(span.clone()),
        );
        let ingest_task =
            tokio::spawn(crate::store::run_ingest(shared.clone(), stopped).instrument(span));
        Ok(Self {
            shared,
            stop,
            tasks: Mutex::new(vec![ledger_task, holder_task, scrub_task, ingest_task]),
        })
    }

    /// Writes `bytes` to the private database as a new record and shares it; returns once the
    /// master table and the shares are on the ledger. See [`Self::share`].
    pub async fn store(&self, bytes: Vec<u8>) -> Result<crate::StoreReceipt, Error> {
        let mut writer = self.record_writer()?;
        writer.write(&bytes)?;
        drop(bytes);
        let key = writer.finish()?;
        self.share(&key, &mut |_| {}).await
    }

    /// Starts a record of the `files` stream that its caller fills (in pieces of any size, so a
    /// file of any size up to 64 GiB passes through bounded memory) and then shares with
    /// [`Self::share`].
    pub fn record_writer(&self) -> Result<RecordWriter<'_>, Error> {
        self.shared.private.writer(crate::FILES_STREAM, true)
    }

    /// Shares a record written with [`Self::record_writer`]: encrypted and pushed window by
    /// window, then registered, reporting `progress` as chunks are acknowledged. If sharing
    /// fails the error is the caller's to act on ([`Error::StoreFailed`]): the node does not
    /// push or submit for the record again (the caller asked for one store and was told it
    /// failed). If none of its transactions was submitted the record is removed; otherwise the
    /// error names the file, which may still complete on the ledger, and the node then marks
    /// the record shared. Sharing a record again once it is shared returns the first receipt.
    pub async fn share(
        &self,
        key: &crate::RecordKey,
        progress: crate::ProgressSink<'_>,
    ) -> Result<crate::StoreReceipt, Error> {
        crate::store::share_claimed(&self.shared, key, progress).await
    }

    /// Writes a record to `stream` and returns at once; the ingest task shares it.
    pub fn ingest(&self, stream: &str, bytes: &[u8]) -> Result<crate::RecordKey, Error> {
        crate::store::ingest(&self.shared, stream, bytes)
    }

    /// How a record of the private database was shared, once it is.
    pub fn record_shared(
        &self,
        key: &crate::RecordKey,
    ) -> Result<Option<crate::SharedRecord>, Error> {
        self.shared.private.shared(key)
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

    /// Stops the tasks where they are: no duty or share is finished. The databases the tasks
    /// held are dropped, and redb closes a database cleanly when it is dropped — so a crash
    /// test must take the disks away first (fail them, or move to `MemoryDisk::after_crash`
    /// copies) for only what was synced to survive.
    pub async fn abort(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Signs and submits any transaction body from this member and waits until it is applied
    /// here; the receipt says whether the contracts applied or rejected it. The flows above
    /// build their own bodies; this is for load generators and the simulator.
    pub async fn submit(&self, body: ledger::Body) -> Result<crate::Receipt, Error> {
        let mut receipts = self.shared.submit_all(vec![body]).await?;
        receipts.pop().ok_or(Error::Stopped)
    }

    /// Submits transactions signed elsewhere — a load generator holding the members' keys — in
    /// their order. Returns once the ledger task has taken them in (pooled, or refused at once),
    /// so whatever the caller submits afterwards is ordered after them: a member's nonces must
    /// arrive in order, so a caller sends a sender's next batch only then.
    /// [`AdmittedBatch::outcomes`] then waits until each is applied here (whatever its result)
    /// or refused.
    pub async fn admit_signed(
        &self,
        txs: Vec<ledger::Transaction>,
    ) -> Result<AdmittedBatch, Error> {
        Ok(AdmittedBatch {
            admissions: self.shared.submit_signed(txs).await?,
        })
    }

    /// The last nonce each member used, as this replica has applied them, by member name.
    pub async fn nonces(&self) -> Result<std::collections::BTreeMap<String, u64>, Error> {
        let members: Vec<(String, ledger::MemberId)> = self
            .shared
            .consortium
            .members
            .iter()
            .map(|member| (member.name.clone(), member.id))
            .collect();
        self.shared
            .query(move |replica| {
                members
                    .into_iter()
                    .map(|(name, id)| (name, replica.state().nonce(&id)))
                    .collect()
            })
            .await
    }

    /// The height and head of this replica's applied chain (no network traffic, unlike
    /// [`Self::status`]).
    pub async fn head(&self) -> Result<(u64, ledger::BlockHash), Error> {
        self.shared
            .query(|replica| (replica.state().height(), replica.state().head()))
            .await
    }

    /// Up to `max` applied blocks from height `from` on, as this replica stored them.
    pub async fn blocks(&self, from: u64, max: usize) -> Result<Vec<ledger::Block>, Error> {
        Ok(self
            .shared
            .query(move |replica| replica.store().blocks_from(from, max))
            .await?
            .map_err(ledger::Error::from)?)
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
            // A ledger reopening after an error is waited for, like one catching up.
            match self.shared.query(|replica| replica.state().height()).await {
                Ok(now) if now >= height => return Ok(()),
                Ok(_) | Err(Error::LedgerDown { .. }) => {}
                Err(error) => return Err(error),
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

/// Transactions of one [`Node::admit_signed`] call, taken in order, waiting for their blocks.
pub struct AdmittedBatch {
    admissions: Vec<crate::shared::Admission>,
}

impl AdmittedBatch {
    /// Waits until each is applied here (whatever its result) or refused: one outcome per
    /// transaction, in order.
    pub async fn outcomes(self) -> Vec<Result<crate::Receipt, Error>> {
        let mut outcomes = Vec::with_capacity(self.admissions.len());
        for admission in self.admissions {
            outcomes.push(match admission {
                Ok(receipt) => receipt.await.unwrap_or(Err(Error::Stopped)),
                Err(error) => Err(error),
            });
        }
        outcomes
    }
}
