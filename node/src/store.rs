//! The store flow (DESIGN.md "Store"): private record → encrypted chunks on their owners →
//! master table and sealed shares on the ledger.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chacha20::ChaCha20Rng;
use keyshare::{
    ChunkHash, ChunkLayout, EncryptedChunk, FileId, FileKey, FileSecret, SealContext, SealPurpose,
    StreamEncryptor, seal_share, split,
};
use ledger::{Body, FileRecord, MasterTable, MemberId, Rejection, TxResult};
use overlay::{PeerId, PushItem, Transport, place, push};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;
use zeroize::Zeroize;

use crate::error::Error;
use crate::private::{Intent, RecordKey, RecordMeta, SharedRecord};
use crate::shared::Shared;

/// The stream `blocktorrent store` and the admin API write to.
pub const FILES_STREAM: &str = "files";

/// Plaintext bytes encrypted ahead of the push (one window is pushed while the next is
/// encrypted).
const WINDOW_BYTES: usize = 16 << 20;
/// Pushes in flight at once while storing.
const PUSH_IN_FLIGHT: usize = 32;
/// Deadline for one chunk push.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for the liveness ping before placement.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the ingest task retries records it could not share.
const INGEST_RETRY: Duration = Duration::from_secs(5);

/// What `store` reports (the CLI's `--json` fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoreReceipt {
    /// The new file's id.
    pub file_id: FileId,
    /// Plaintext bytes.
    pub bytes: u64,
    /// Chunks pushed.
    pub chunks: u32,
    /// Block height that registered the master table.
    pub height: u64,
}

impl From<SharedRecord> for StoreReceipt {
    fn from(record: SharedRecord) -> Self {
        Self {
            file_id: record.file_id,
            bytes: record.bytes,
            chunks: record.chunks,
            height: record.height,
        }
    }
}

/// How far a store or a fetch has come (the admin API streams these to the CLI's progress bar).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Progress {
    /// Chunks pushed (store) or delivered (fetch).
    pub chunks_done: u32,
    /// Chunks in the file.
    pub chunks_total: u32,
    /// Plaintext bytes behind those chunks.
    pub bytes_done: u64,
    /// Plaintext bytes in the file.
    pub bytes_total: u64,
    /// Distinct peers that acknowledged (store) or served (fetch) so far.
    pub peers: usize,
}

/// Where progress goes; called after each window of chunks.
pub type ProgressSink<'a> = &'a mut (dyn FnMut(Progress) + Send);

/// Writes a record to `stream` for the ingest task to share.
pub(crate) fn ingest<T>(
    shared: &Shared<T>,
    stream: &str,
    bytes: &[u8],
) -> Result<RecordKey, Error> {
    let key = shared.private.append(stream, bytes)?;
    shared.ingest.notify_one();
    Ok(key)
}

/// Shares every record not yet shared: at start, when notified, and periodically after a
/// failure (peers may come up later). A record whose share was under way when the node stopped
/// is resumed from its intent, so it still becomes one file.
pub(crate) async fn run_ingest<T: Transport>(
    shared: Arc<Shared<T>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let pending = match shared.private.unshared() {
            Ok(pending) => pending,
            Err(error) => {
                tracing::error!(%error, "cannot read the private database");
                Vec::new()
            }
        };
        // A record that fails holds back the rest of its stream (records are shared in stream
        // order), not the other streams.
        let mut held_back = BTreeSet::new();
        for key in pending {
            if *stopped.borrow() {
                return;
            }
            if held_back.contains(&key.stream) {
                continue;
            }
            match share_record(&shared, &key, &mut |_| {}).await {
                Ok(receipt) => {
                    tracing::info!(stream = %key.stream, seq = key.seq, file = %receipt.file_id, "record shared")
                }
                Err(error) => {
                    tracing::warn!(stream = %key.stream, seq = key.seq, %error, "could not share record; will retry");
                    held_back.insert(key.stream);
                }
            }
        }
        if let Err(error) = reconcile_claimed(&shared).await {
            tracing::debug!(%error, "could not check stores reported as failed");
        }
        tokio::select! {
            biased;
            _ = stopped.changed() => return,
            () = shared.ingest.notified() => {}
            () = tokio::time::sleep(INGEST_RETRY) => {}
        }
    }
}

/// What one share of a record is, derived from its intent alone: every attempt for the record
/// computes the same plan.
struct Plan {
    file_id: FileId,
    layout: ChunkLayout,
    owners: Vec<Vec<PeerId>>,
    key: FileKey,
    secret: FileSecret,
    /// Draws the share polynomial and the sealing randomness.
    rng: ChaCha20Rng,
    timestamp_ms: u64,
}

/// The file id an intent's share registers, and the RNG positioned after drawing it.
/// ChaCha20, not rand's `StdRng`: its output is fixed by the algorithm, while `StdRng` may
/// change between rand versions — and a share resumed after an upgrade must derive the same
/// file id, key and transactions as before it.
fn intent_file(me: &MemberId, intent: &Intent) -> (FileId, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::from_seed(intent.seed);
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    (
        FileId::derive(me.as_bytes(), &nonce, intent.timestamp_ms),
        rng,
    )
}

impl Plan {
    fn derive<T>(shared: &Shared<T>, intent: &Intent, layout: ChunkLayout) -> Result<Self, Error> {
        let me = shared.me.id;
        let (file_id, mut rng) = intent_file(&me, intent);
        let secret = FileSecret::random(&mut rng);
        let online: Vec<PeerId> = intent
            .online
            .iter()
            .map(|p| PeerId::from_bytes(*p))
            .collect();
        let owners = place(
            &file_id,
            layout.chunk_count(),
            &online,
            &PeerId::from_bytes(*me.as_bytes()),
            shared.consortium.replication as usize,
        )
        .map_err(overlay::Error::from)?;
        Ok(Self {
            file_id,
            layout,
            owners,
            key: secret.derive_key(),
            secret,
            rng,
            timestamp_ms: intent.timestamp_ms,
        })
    }
}

/// Shares one record, at most once whatever fails or restarts:
/// 1. the first attempt records an [`Intent`] (seed, timestamp, members online) before any
///    chunk leaves the node;
/// 2. file id, key, placement, chunks, shares and transactions are all derived from it, so a
///    retry — after an error or a restart — rebuilds the very same ones;
/// 3. the ledger registers a file id once, so however the transactions of several attempts
///    interleave, the chain holds one master table for the record; a transaction refused
///    because an earlier attempt's twin was applied first is not an error;
/// 4. the record counts as shared once this replica shows the table complete, as this attempt
///    built it, with its shares deposited.
pub(crate) async fn share_record<T: Transport>(
    shared: &Shared<T>,
    key: &RecordKey,
    progress: ProgressSink<'_>,
) -> Result<StoreReceipt, Error> {
    let _guard = shared.store_lock.lock().await;
    if let Some(done) = shared.private.shared(key)? {
        return Ok(done.into());
    }
    let consortium = &shared.consortium;
    let meta = shared
        .private
        .meta(key)?
        .ok_or_else(|| Error::Invalid(format!("no record {}/{}", key.stream, key.seq)))?;
    // A table the ledger would refuse is refused now, before anything is encrypted or pushed.
    let layout = ledger::check_table_plan(
        meta.bytes,
        consortium.chunk_size_bytes,
        consortium.replication,
    )
    .map_err(|error| Error::Invalid(format!("cannot store {} bytes: {error}", meta.bytes)))?;
    let (mut intent, fresh) = match shared.private.intent(key)? {
        Some(intent) => (intent, false),
        None => {
            // Placement over the members online now, before any byte is encrypted: too few
            // owners fails here, cheaply, and leaves no intent behind.
            let online: Vec<[u8; 32]> = shared
                .online_peers(PING_TIMEOUT)
                .await
                .iter()
                .map(|(entry, _)| *entry.id.as_bytes())
                .collect();
            let mut seed = [0u8; 32];
            shared.with_rng(|rng| rng.fill_bytes(&mut seed));
            let intent = Intent {
                seed,
                timestamp_ms: (shared.clock)(),
                online,
                submitted: false,
            };
            seed.zeroize();
            (intent, true)
        }
    };
    // A plan that cannot be made (too few owners online) leaves no intent behind.
    let mut plan = Plan::derive(shared, &intent, layout)?;
    if fresh {
        shared.private.put_intent(key, &intent)?;
    }
    // An earlier attempt may have got its file onto the chain and died before marking it.
    if intent.submitted
        && let Some(record) = completed(shared, plan.file_id).await?
    {
        return mark(shared, key, meta, &record);
    }
    let chunk_hashes = match push_record(shared, key, &plan, meta, progress).await {
        Ok(hashes) => hashes,
        Err(error) => {
            // Nothing of this attempt can be on the chain: the next one may place afresh (an
            // owner that stays away would otherwise fail every retry).
            if !intent.submitted {
                shared.private.drop_intent(key)?;
            }
            return Err(error);
        }
    };
    let (table, bodies) = plan_bodies(shared, &mut plan, chunk_hashes)?;
    if !intent.submitted {
        intent.submitted = true;
        shared.private.put_intent(key, &intent)?;
    }
    drop(intent);
    let receipts = shared.submit_all(bodies).await?;
    let record = match shared.file(plan.file_id).await {
        Ok(record) => Some(record),
        Err(Error::UnknownFile { .. }) => None,
        Err(error) => return Err(error),
    };
    match record {
        Some(record)
            if record.owner == shared.me.id
                && record.table == table
                && record.deposits.is_some() =>
        {
            mark(shared, key, meta, &record)
        }
        _ => {
            // A rejection because an earlier attempt's twin applied first is expected; any
            // other one says what went wrong.
            let refused = receipts.iter().find_map(|receipt| match &receipt.result {
                TxResult::Rejected(
                    Rejection::FileExists { .. }
                    | Rejection::ChunksOutOfOrder { .. }
                    | Rejection::SharesAlreadyDeposited { .. },
                )
                | TxResult::Applied => None,
                TxResult::Rejected(rejection) => Some(rejection.clone()),
            });
            Err(match refused {
                Some(rejection) => Error::Rejected(rejection),
                None => Error::Invalid(format!(
                    "file {} is not complete on the ledger after its transactions applied",
                    plan.file_id
                )),
            })
        }
    }
}

/// The file's record if the chain shows it registered by this member, complete, with its
/// shares deposited. (Its id comes from this member's secret seed, so nobody else can have
/// registered it.)
async fn completed<T>(shared: &Shared<T>, file: FileId) -> Result<Option<FileRecord>, Error> {
    match shared.file(file).await {
        Ok(record)
            if record.owner == shared.me.id
                && record.is_complete()
                && record.deposits.is_some() =>
        {
            Ok(Some(record))
        }
        Ok(_) | Err(Error::UnknownFile { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Marks the record shared as `record` and returns the receipt.
fn mark<T>(
    shared: &Shared<T>,
    key: &RecordKey,
    meta: RecordMeta,
    record: &FileRecord,
) -> Result<StoreReceipt, Error> {
    let receipt = StoreReceipt {
        file_id: record.table.file_id,
        bytes: meta.bytes,
        chunks: record.table.chunk_hashes.len() as u32,
        height: record.height,
    };
    shared.private.mark_shared(
        key,
        &SharedRecord {
            file_id: receipt.file_id,
            bytes: receipt.bytes,
            chunks: receipt.chunks,
            height: receipt.height,
        },
    )?;
    Ok(receipt)
}

/// Shares a record its caller wrote and will be told about. On failure the record is not left
/// for anyone to share later: if no transaction of it was submitted, it is removed (its bytes
/// with it); if some were, the error names the file, which may still complete on the ledger
/// (the ingest task then marks it shared — it never pushes or submits for it).
pub(crate) async fn share_claimed<T: Transport>(
    shared: &Shared<T>,
    key: &RecordKey,
    progress: ProgressSink<'_>,
) -> Result<StoreReceipt, Error> {
    let error = match share_record(shared, key, progress).await {
        Ok(receipt) => return Ok(receipt),
        Err(error) => error,
    };
    let submitted = match shared.private.intent(key) {
        Ok(Some(intent)) if intent.submitted => Some(intent_file(&shared.me.id, &intent).0),
        _ => None,
    };
    if submitted.is_none()
        && let Err(cleanup) = shared.private.remove_record(key)
    {
        tracing::warn!(stream = %key.stream, seq = key.seq, %cleanup, "could not remove a record whose store failed");
    }
    Err(Error::StoreFailed {
        record: format!("{}/{}", key.stream, key.seq),
        file: submitted,
        source: Box::new(error),
    })
}

/// Claimed records whose share was submitted but not seen complete (their caller was told it
/// failed): marked shared once the chain shows them complete. Nothing is pushed or submitted.
async fn reconcile_claimed<T: Transport>(shared: &Shared<T>) -> Result<(), Error> {
    for (key, intent) in shared.private.claimed_in_flight()? {
        let Some(meta) = shared.private.meta(&key)? else {
            continue;
        };
        let file = intent_file(&shared.me.id, &intent).0;
        if let Some(record) = completed(shared, file).await? {
            mark(shared, &key, meta, &record)?;
            tracing::info!(stream = %key.stream, seq = key.seq, %file, "a store reported as failed completed on the ledger");
        }
    }
    Ok(())
}

/// Reads the record piece by piece, encrypts it chunk by chunk on the compute seam and pushes a
/// window of chunks to their owners while the next window is encrypted. Memory holds about two
/// windows, whatever the record's size. Returns the chunk hashes in order.
async fn push_record<T: Transport>(
    shared: &Shared<T>,
    key: &RecordKey,
    plan: &Plan,
    meta: RecordMeta,
    progress: ProgressSink<'_>,
) -> Result<Vec<ChunkHash>, Error> {
    let chunk_size = plan.layout.chunk_size_bytes() as usize;
    let window = (WINDOW_BYTES / chunk_size.max(1)).max(1);
    let mut source = ChunkSource {
        encryptor: Some(StreamEncryptor::new(&plan.key, plan.file_id, plan.layout)),
        next_piece: 0,
        pieces: meta.pieces,
        ready: VecDeque::new(),
    };
    let total = plan.layout.chunk_count();
    let mut hashes = Vec::with_capacity(total as usize);
    let mut peers = BTreeSet::new();
    let mut bytes_done = 0u64;
    let mut chunks = source.next_window(shared, key, window).await?;
    while !chunks.is_empty() {
        let base = chunks[0].index as usize;
        let items: Vec<PushItem> = chunks
            .into_iter()
            .map(|chunk| PushItem {
                hash: chunk.hash,
                bytes: Arc::new(chunk.bytes),
                owners: plan.owners[chunk.index as usize].clone(),
            })
            .collect();
        hashes.extend(items.iter().map(|item| item.hash));
        let (report, next) = tokio::join!(
            push(
                shared.transport.clone(),
                &items,
                PUSH_IN_FLIGHT,
                PUSH_TIMEOUT
            ),
            source.next_window(shared, key, window)
        );
        if let Some((position, peer, reason)) = report.failed.first() {
            return Err(Error::PushFailed {
                failed: report.failed.len(),
                first: format!(
                    "chunk {} to {}: {reason}",
                    base + position,
                    member_name(shared, peer)
                ),
            });
        }
        peers.extend(report.acknowledged.iter().map(|(_, peer)| *peer));
        for index in base..base + items.len() {
            bytes_done += u64::from(
                plan.layout
                    .plaintext_len(index as u32)
                    .map_err(keyshare::Error::from)?,
            );
        }
        progress(Progress {
            chunks_done: hashes.len() as u32,
            chunks_total: total,
            bytes_done,
            bytes_total: meta.bytes,
            peers: peers.len(),
        });
        chunks = next?;
    }
    if hashes.len() != total as usize {
        return Err(Error::CorruptRecord {
            reason: format!(
                "record {}/{} yielded {} chunks, {total} expected",
                key.stream,
                key.seq,
                hashes.len()
            ),
        });
    }
    Ok(hashes)
}

/// Encrypted chunks of a record, read and encrypted on demand.
struct ChunkSource {
    encryptor: Option<StreamEncryptor>,
    next_piece: u32,
    pieces: u32,
    ready: VecDeque<EncryptedChunk>,
}

impl ChunkSource {
    /// The next `want` chunks (fewer at the end of the record, none after it).
    async fn next_window<T>(
        &mut self,
        shared: &Shared<T>,
        key: &RecordKey,
        want: usize,
    ) -> Result<Vec<EncryptedChunk>, Error> {
        while self.ready.len() < want
            && let Some(mut encryptor) = self.encryptor.take()
        {
            if self.next_piece < self.pieces {
                let piece = shared.private.piece(key, self.next_piece)?;
                self.next_piece += 1;
                let (encryptor, chunks) = shared
                    .compute
                    .run(move || {
                        let chunks = encryptor.update(&piece);
                        (encryptor, chunks)
                    })
                    .await?;
                self.ready.extend(chunks.map_err(keyshare::Error::from)?);
                self.encryptor = Some(encryptor);
            } else {
                let last = shared.compute.run(move || encryptor.finish()).await?;
                self.ready.extend(last.map_err(keyshare::Error::from)?);
            }
        }
        let take = want.min(self.ready.len());
        Ok(self.ready.drain(..take).collect())
    }
}

/// The master table of one share and its transactions (header and chunk records, then the
/// sealed shares), derived from the plan's seed.
fn plan_bodies<T>(
    shared: &Shared<T>,
    plan: &mut Plan,
    chunk_hashes: Vec<ChunkHash>,
) -> Result<(MasterTable, Vec<Body>), Error> {
    let consortium = &shared.consortium;
    let me = shared.me.id;
    let file_id = plan.file_id;
    let holders = consortium.holders_of(&me);
    let (shares, commitments) = split(
        &plan.secret,
        consortium.threshold,
        holders.len() as u32,
        &mut plan.rng,
    )?;
    let mut sealed = Vec::with_capacity(shares.len());
    for (position, (share, holder)) in shares.iter().zip(&holders).enumerate() {
        let entry = consortium
            .members
            .iter()
            .find(|m| m.id == *holder)
            .ok_or_else(|| Error::Invalid("holder vanished from the consortium".into()))?;
        let context = SealContext {
            file_id,
            holder: *holder.as_bytes(),
            share_index: position as u32 + 1,
            purpose: SealPurpose::Deposit,
        };
        sealed.push(seal_share(
            share,
            &entry.sealing_key,
            &context,
            &mut plan.rng,
        )?);
    }
    let table = MasterTable {
        file_id,
        size_bytes: plan.layout.file_size_bytes(),
        chunk_size_bytes: consortium.chunk_size_bytes,
        chunk_hashes,
        chunk_owners: chunk_owner_ids(&plan.owners),
        timestamp_ms: plan.timestamp_ms,
        threshold: consortium.threshold,
        holders,
        commitments,
    };
    // The table's header and chunk records, over as many transactions as they need, then the
    // shares (which the ledger takes only once the table is complete).
    let mut bodies = table
        .bodies()
        .map_err(|error| Error::Invalid(format!("master table of file {file_id}: {error}")))?;
    bodies.push(Body::DepositShares {
        file: file_id,
        shares: sealed,
    });
    Ok((table, bodies))
}

/// A placement's owners (overlay peers) as the master table lists them (ledger members).
pub fn chunk_owner_ids(owners: &[Vec<PeerId>]) -> Vec<Vec<MemberId>> {
    owners
        .iter()
        .map(|set| {
            set.iter()
                .map(|peer| MemberId::from_bytes(*peer.as_bytes()))
                .collect()
        })
        .collect()
}

pub(crate) fn member_name<T>(shared: &Shared<T>, peer: &PeerId) -> String {
    shared
        .consortium
        .members
        .iter()
        .find(|m| m.id.as_bytes() == peer.as_bytes())
        .map_or_else(|| peer.to_string(), |m| m.name.clone())
}
