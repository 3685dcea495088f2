//! The store flow (DESIGN.md "Store"): private record → encrypted chunks on their owners →
//! master table and sealed shares on the ledger.

use std::sync::Arc;
use std::time::Duration;

use keyshare::{FileId, FileSecret, SealContext, SealPurpose, encrypt_file, seal_share, split};
use ledger::{Body, MasterTable, MemberId};
use overlay::{PeerId, PushItem, Transport, place, push};
use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;

use crate::error::Error;
use crate::private::{RecordKey, SharedRecord};
use crate::shared::Shared;

/// The stream `blocktorrent store` and the admin API write to.
pub const FILES_STREAM: &str = "files";

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

/// Writes `bytes` to the private database as a record its caller shares (see
/// [`crate::Node::store`]) and shares it.
pub(crate) async fn store<T: Transport>(
    shared: &Shared<T>,
    bytes: Vec<u8>,
) -> Result<StoreReceipt, Error> {
    let key = shared.private.append_claimed(FILES_STREAM, &bytes)?;
    drop(bytes);
    share_record(shared, &key).await
}

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
/// failure (peers may come up later).
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
        for key in pending {
            if *stopped.borrow() {
                return;
            }
            match share_record(&shared, &key).await {
                Ok(receipt) => {
                    tracing::info!(stream = %key.stream, seq = key.seq, file = %receipt.file_id, "record shared")
                }
                Err(error) => {
                    tracing::warn!(stream = %key.stream, seq = key.seq, %error, "could not share record; will retry");
                    break;
                }
            }
        }
        tokio::select! {
            biased;
            _ = stopped.changed() => return,
            () = shared.ingest.notified() => {}
            () = tokio::time::sleep(INGEST_RETRY) => {}
        }
    }
}

async fn share_record<T: Transport>(
    shared: &Shared<T>,
    key: &RecordKey,
) -> Result<StoreReceipt, Error> {
    let _guard = shared.store_lock.lock().await;
    if let Some(done) = shared.private.shared(key)? {
        return Ok(done.into());
    }
    let plaintext = shared
        .private
        .record(key)?
        .ok_or_else(|| Error::Invalid(format!("no record {}/{}", key.stream, key.seq)))?;
    let receipt = share_bytes(shared, plaintext).await?;
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

async fn share_bytes<T: Transport>(
    shared: &Shared<T>,
    plaintext: Vec<u8>,
) -> Result<StoreReceipt, Error> {
    let consortium = &shared.consortium;
    let me = shared.me.id;
    let now_ms = (shared.clock)();
    let (secret, nonce) = shared.with_rng(|rng| {
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        (FileSecret::random(rng), nonce)
    });
    let file_id = FileId::derive(me.as_bytes(), &nonce, now_ms);
    let size_bytes = plaintext.len() as u64;
    // A table the ledger would refuse is refused now, before anything is encrypted or pushed.
    let layout = ledger::check_table_plan(
        size_bytes,
        consortium.chunk_size_bytes,
        consortium.replication,
    )
    .map_err(|error| Error::Invalid(format!("cannot store {size_bytes} bytes: {error}")))?;
    // Placement over the members online now, before any byte is encrypted: too few owners
    // fails here, cheaply.
    let online: Vec<PeerId> = shared
        .online_peers(PING_TIMEOUT)
        .await
        .iter()
        .map(|(entry, _)| Shared::<T>::peer(entry))
        .collect();
    let owner = PeerId::from_bytes(*me.as_bytes());
    let owners = place(
        &file_id,
        layout.chunk_count(),
        &online,
        &owner,
        consortium.replication as usize,
    )
    .map_err(overlay::Error::from)?;
    let key = secret.derive_key();
    // Encryption and hashing are the CPU-heavy part: off the async workers.
    let encrypted =
        tokio::task::spawn_blocking(move || encrypt_file(&key, file_id, layout, &plaintext))
            .await
            .map_err(|_| Error::Stopped)??;
    let items: Vec<PushItem> = encrypted
        .chunks
        .into_iter()
        .zip(&owners)
        .map(|(chunk, owners)| PushItem {
            hash: chunk.hash,
            bytes: Arc::new(chunk.bytes),
            owners: owners.clone(),
        })
        .collect();
    let chunk_hashes = items.iter().map(|item| item.hash).collect();
    let report = push(
        shared.transport.clone(),
        &items,
        PUSH_IN_FLIGHT,
        PUSH_TIMEOUT,
    )
    .await;
    drop(items);
    if let Some((position, peer, reason)) = report.failed.first() {
        return Err(Error::PushFailed {
            failed: report.failed.len(),
            first: format!(
                "chunk {position} to {}: {reason}",
                member_name(shared, peer)
            ),
        });
    }

    let holders: Vec<MemberId> = consortium
        .members
        .iter()
        .filter(|m| m.id != me)
        .map(|m| m.id)
        .collect();
    let (shares, commitments) =
        shared.with_rng(|rng| split(&secret, consortium.threshold, holders.len() as u32, rng))?;
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
        sealed.push(shared.with_rng(|rng| seal_share(share, &entry.sealing_key, &context, rng))?);
    }
    let table = MasterTable {
        file_id,
        size_bytes,
        chunk_size_bytes: consortium.chunk_size_bytes,
        chunk_hashes,
        chunk_owners: owners
            .iter()
            .map(|set| {
                set.iter()
                    .map(|p| MemberId::from_bytes(*p.as_bytes()))
                    .collect()
            })
            .collect(),
        timestamp_ms: now_ms,
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
    let receipts = shared.submit_applied_all(bodies).await?;
    Ok(StoreReceipt {
        file_id,
        bytes: size_bytes,
        chunks: layout.chunk_count(),
        height: receipts[0].height,
    })
}

pub(crate) fn member_name<T>(shared: &Shared<T>, peer: &PeerId) -> String {
    shared
        .consortium
        .members
        .iter()
        .find(|m| m.id.as_bytes() == peer.as_bytes())
        .map_or_else(|| peer.to_string(), |m| m.name.clone())
}
