//! What a node's tasks share: its identity and keys, its stores, the channel into the ledger
//! task (submissions in order, queries), the block feed, and the ledger's health. The flows
//! (store, holder, recreate) work on this, not on [`crate::Node`], so they do not depend on the
//! module that starts them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use keyshare::{SealContext, SealPurpose, SealingSecretKey};
use ledger::{Block, Body, FileRecord, MemberId, Replica, RequestId, Transaction, TxId, TxResult};
use overlay::wire::{Request, Response};
use overlay::{PeerId, Transport};
use rand::rngs::StdRng;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use crate::config::{Consortium, MemberEntry, ReleasePolicy};
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

pub(crate) type Query = Box<dyn FnOnce(&Replica) + Send>;

pub(crate) enum Command {
    Submit {
        body: Body,
        reply: oneshot::Sender<Result<Receipt, Error>>,
    },
    /// Transactions signed elsewhere (a load generator holding members' keys), submitted in
    /// order; the reply holds, per transaction, the refusal or a receiver for its receipt.
    SubmitSigned {
        txs: Vec<Transaction>,
        reply: oneshot::Sender<Vec<Admission>>,
    },
    Query(Query),
}

/// What submitting one signed transaction came to: refused at once, or a receiver that resolves
/// when its block is applied here.
pub(crate) type Admission = Result<oneshot::Receiver<Result<Receipt, Error>>, Error>;

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
    pub(crate) compute: crate::compute::Compute,
    pub(crate) clock: Clock,
    pub(crate) commands: mpsc::Sender<Command>,
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

    pub(crate) fn set_ledger_error(&self, error: Option<String>) {
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
        self.commands
            .send(Command::Query(query))
            .await
            .map_err(|_| Error::Stopped)?;
        // A query the ledger task dropped because the replica failed says why.
        answer.await.map_err(|_| self.down())
    }

    /// Why the ledger task dropped a command: the replica failed, or the node stopped.
    fn down(&self) -> Error {
        match self.ledger_error() {
            Some(reason) => Error::LedgerDown { reason },
            None => Error::Stopped,
        }
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

    /// Submits transactions signed elsewhere, in order; see [`Command::SubmitSigned`].
    pub(crate) async fn submit_signed(
        &self,
        txs: Vec<Transaction>,
    ) -> Result<Vec<Admission>, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::SubmitSigned { txs, reply })
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| self.down())
    }

    /// Submits `bodies` in order and waits until each is applied, whatever its result. They are
    /// enqueued at once: the replica proposes a member's transactions in the order they were
    /// signed, so their nonces apply in order.
    pub(crate) async fn submit_all(&self, bodies: Vec<Body>) -> Result<Vec<Receipt>, Error> {
        let mut answers = Vec::with_capacity(bodies.len());
        for body in bodies {
            answers.push(self.enqueue(body).await?);
        }
        let mut receipts = Vec::with_capacity(answers.len());
        for answer in answers {
            receipts.push(answer.await.map_err(|_| Error::Stopped)??);
        }
        Ok(receipts)
    }

    /// [`Self::submit_all`], failing with the first rejection (the bodies after it are still
    /// ordered, and fail on their own).
    pub(crate) async fn submit_applied_all(
        &self,
        bodies: Vec<Body>,
    ) -> Result<Vec<Receipt>, Error> {
        let receipts = self.submit_all(bodies).await?;
        if let Some(rejection) = receipts.iter().find_map(|receipt| match &receipt.result {
            TxResult::Rejected(rejection) => Some(rejection.clone()),
            TxResult::Applied => None,
        }) {
            return Err(Error::Rejected(rejection));
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

/// The context a holder's deposited share is sealed under.
pub(crate) fn deposit_context(record: &FileRecord, holder: &MemberId) -> Option<SealContext> {
    Some(SealContext {
        file_id: record.table.file_id,
        holder: *holder.as_bytes(),
        share_index: record.share_index(holder)?,
        purpose: SealPurpose::Deposit,
    })
}

/// The context a holder's released share is sealed under (DESIGN.md: HPKE info binds the file,
/// the holder, the share index and the request).
pub fn release_context(
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
