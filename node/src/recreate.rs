//! The recreate flow (DESIGN.md "Recreate"): request access on the ledger, gather released
//! shares that verify, rebuild the key, fetch and verify every chunk from its owners, decrypt,
//! and stream the plaintext to the caller. The owner takes no part.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use keyshare::{ChunkCipher, ChunkLayout, FileId, Share, combine, open_share, verify};
use ledger::{AccessRecord, Body, FileRecord, MemberId, RequestId};
use overlay::{ChunkSpec, Outcome, PeerId, SchedulerConfig, Transport, fetch};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::error::Error;
use crate::node::Node;
use crate::shared::{Shared, release_context};
use crate::store::Progress;

/// Deadline for one chunk request.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(15);

/// What `request` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestReceipt {
    /// The access request's id (its transaction id).
    pub request_id: RequestId,
    /// The block that holds it.
    pub height: u64,
}

/// What `fetch` reports (the CLI's `--json` fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FetchReceipt {
    /// The file.
    pub file_id: FileId,
    /// Plaintext bytes written.
    pub bytes: u64,
    /// Chunks fetched.
    pub chunks: u32,
    /// Distinct peers that served chunks.
    pub peers_used: usize,
    /// Chunks that needed a second request.
    pub chunks_refetched: u32,
    /// Wall time of the whole recreate.
    pub seconds: f64,
    /// Peers that served corrupt chunks (names).
    #[serde(default)]
    pub lying_peers: Vec<String>,
    /// Holders whose released share did not verify (names).
    #[serde(default)]
    pub bad_shares: Vec<String>,
}

/// What [`Node::fetch`] streams to its caller, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchEvent {
    /// The next plaintext bytes of the file.
    Data(Vec<u8>),
    /// How far the fetch has come.
    Progress(Progress),
}

impl<T: Transport> Node<T> {
    /// Files an access request for `file`.
    pub async fn request(&self, file: FileId, reason: String) -> Result<RequestReceipt, Error> {
        self.shared.file(file).await?;
        match self
            .shared
            .submit_applied(Body::RequestAccess { file, reason })
            .await
        {
            Ok(receipt) => Ok(RequestReceipt {
                request_id: receipt.tx,
                height: receipt.height,
            }),
            // Settled in blocks this replica skipped by installing a snapshot: the contract
            // state says whether the request was recorded, and in which block.
            Err(Error::OutcomeUnknown { tx }) => {
                let recorded = self
                    .shared
                    .query(move |replica| replica.state().request(&tx).map(|r| r.height))
                    .await?;
                match recorded {
                    Some(height) => Ok(RequestReceipt {
                        request_id: tx,
                        height,
                    }),
                    None => Err(Error::OutcomeUnknown { tx }),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Recreates `file` using this member's latest access request for it, waiting up to
    /// `timeout` for enough shares, and streams the plaintext to `sink` in order. The node writes
    /// no file: the caller does (the CLI writes `--out` itself, so the daemon never writes where
    /// a client chose). Chunks are fetched a window at a time — every owner of the window's
    /// chunks in parallel — and the window is decrypted and streamed while the next one is
    /// fetched, so memory holds about two windows whatever the file's size. A caller that closes
    /// `sink` stops the fetch.
    pub async fn fetch(
        &self,
        file: FileId,
        timeout: Duration,
        sink: mpsc::Sender<FetchEvent>,
    ) -> Result<FetchReceipt, Error> {
        self.fetch_from(file, timeout, sink, None).await
    }

    /// [`Self::fetch`], asking only member `only_from` for chunks when given: the client–server
    /// baseline `blocktorrent bench overlay` measures the swarm against. Every chunk must have
    /// that member among its owners.
    pub async fn fetch_from(
        &self,
        file: FileId,
        timeout: Duration,
        sink: mpsc::Sender<FetchEvent>,
        only_from: Option<ledger::MemberId>,
    ) -> Result<FetchReceipt, Error> {
        let start = tokio::time::Instant::now();
        let shared = &self.shared;
        let _active = crate::metrics::GaugeGuard::new(&shared.metrics.fetches_active);
        let record = shared.file(file).await?;
        if let Some(member) = only_from
            && let Some(index) = record
                .table
                .chunk_owners
                .iter()
                .position(|owners| !owners.contains(&member))
        {
            return Err(Error::Invalid(format!(
                "member {member} holds no copy of chunk {index} of file {file}"
            )));
        }
        // The ledger refuses deposits (so releases) until the table is complete; check anyway
        // before indexing it chunk by chunk.
        if !record.is_complete() {
            return Err(Error::Invalid(format!(
                "the master table of file {file} is incomplete ({} chunks listed)",
                record.table.chunk_hashes.len()
            )));
        }
        let (shares, bad_shares) = gather_shares(shared, &record, timeout).await?;
        let secret = combine(&shares, &record.table.commitments)?;
        let table = &record.table;
        let layout = ChunkLayout::new(table.size_bytes, table.chunk_size_bytes)
            .map_err(|error| Error::Invalid(error.to_string()))?;
        let cipher = Arc::new(ChunkCipher::new(&secret.derive_key(), file, layout));
        drop(secret);
        let total = layout.chunk_count();
        let window = (WINDOW_BYTES / table.chunk_size_bytes.max(1) as usize).max(1) as u32;
        let mut account = Account::default();
        let mut next = 0u32;
        let mut fetched = None;
        loop {
            let upcoming = (next < total).then(|| next..(next + window).min(total));
            next = upcoming.as_ref().map_or(total, |range| range.end);
            // Peers caught lying or found dead are not asked again in later windows.
            let excluded: BTreeSet<PeerId> = account
                .outcome
                .lying_peers
                .union(&account.outcome.dead_peers)
                .copied()
                .collect();
            let (streamed, arrived) = tokio::join!(
                async {
                    match fetched.take() {
                        Some(window) => {
                            stream_window(
                                shared,
                                &cipher,
                                window,
                                &sink,
                                &mut account,
                                total,
                                &layout,
                            )
                            .await
                        }
                        None => Ok(()),
                    }
                },
                async {
                    match upcoming {
                        Some(range) => {
                            fetch_window(shared, table, &layout, range, &excluded, only_from)
                                .await
                                .map(Some)
                        }
                        None => Ok(None),
                    }
                }
            );
            streamed?;
            match arrived? {
                Some(window) => fetched = Some(window),
                None => break,
            }
        }
        Ok(FetchReceipt {
            file_id: file,
            bytes: table.size_bytes,
            chunks: total,
            peers_used: account.outcome.peers_used.len(),
            chunks_refetched: account.outcome.chunks_refetched,
            seconds: start.elapsed().as_secs_f64(),
            lying_peers: names(shared, &account.outcome.lying_peers),
            bad_shares,
        })
    }
}

impl<T: Transport> Node<T> {
    /// [`Self::fetch`] into memory, for files known to be small (the demo, tests).
    pub async fn fetch_bytes(
        &self,
        file: FileId,
        timeout: Duration,
    ) -> Result<(FetchReceipt, Vec<u8>), Error> {
        let (sink, mut events) = mpsc::channel(16);
        let collect = async {
            let mut bytes = Vec::new();
            while let Some(event) = events.recv().await {
                if let FetchEvent::Data(data) = event {
                    bytes.extend_from_slice(&data);
                }
            }
            bytes
        };
        let (receipt, bytes) = tokio::join!(self.fetch(file, timeout, sink), collect);
        Ok((receipt?, bytes))
    }
}

/// Plaintext bytes fetched per window.
const WINDOW_BYTES: usize = 32 << 20;

/// One window's verified ciphertext chunks by index, and how fetching them went.
struct Fetched {
    chunks: BTreeMap<u32, Vec<u8>>,
    outcome: Outcome,
}

/// What the windows so far add up to.
#[derive(Default)]
struct Account {
    outcome: Outcome,
    chunks_done: u32,
    bytes_done: u64,
}

/// Fetches the chunks in `range` from their owners (never from a peer already caught lying or
/// found dead, unless every owner of a chunk was).
async fn fetch_window<T: Transport>(
    shared: &Shared<T>,
    table: &ledger::MasterTable,
    layout: &ChunkLayout,
    range: std::ops::Range<u32>,
    excluded: &BTreeSet<PeerId>,
    only_from: Option<ledger::MemberId>,
) -> Result<Fetched, Error> {
    let specs: Vec<ChunkSpec> = range
        .map(|index| {
            let owners: Vec<PeerId> = table.chunk_owners[index as usize]
                .iter()
                .filter(|m| only_from.is_none_or(|only| only == **m))
                .map(|m| PeerId::from_bytes(*m.as_bytes()))
                .collect();
            let honest: Vec<PeerId> = owners
                .iter()
                .copied()
                .filter(|peer| !excluded.contains(peer))
                .collect();
            Ok(ChunkSpec {
                index,
                hash: table.chunk_hashes[index as usize],
                size_bytes: layout.ciphertext_len(index)?,
                owners: if honest.is_empty() { owners } else { honest },
            })
        })
        .collect::<Result<_, keyshare::ChunkError>>()
        .map_err(keyshare::Error::from)?;
    let mut chunks = BTreeMap::new();
    let outcome = fetch(
        shared.transport.clone(),
        shared.compute.clone(),
        specs,
        SchedulerConfig::default(),
        CHUNK_TIMEOUT,
        |index, bytes| {
            crate::metrics::Metrics::add(&shared.metrics.fetch_bytes, bytes.len() as u64);
            chunks.insert(index, bytes);
            Ok::<(), std::convert::Infallible>(())
        },
    )
    .await
    .unwrap_or_else(|never| match never {});
    let report = outcome.map_err(overlay::Error::from)?;
    Ok(Fetched {
        chunks,
        outcome: report.outcome,
    })
}

/// Decrypts a fetched window on the compute seam and streams it to `sink` in order.
async fn stream_window<T>(
    shared: &Shared<T>,
    cipher: &Arc<ChunkCipher>,
    window: Fetched,
    sink: &mpsc::Sender<FetchEvent>,
    account: &mut Account,
    total: u32,
    layout: &ChunkLayout,
) -> Result<(), Error> {
    let Fetched { chunks, outcome } = window;
    let cipher = cipher.clone();
    let plaintext = shared
        .compute
        .run(move || {
            chunks
                .into_iter()
                .map(|(index, mut bytes)| {
                    cipher
                        .open_hashed_chunk_in_place(index, &mut bytes)
                        .map(|()| (index, bytes))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
    let closed = |_| Error::Invalid("the fetch's reader went away".into());
    for (index, bytes) in plaintext {
        account.chunks_done += 1;
        account.bytes_done +=
            u64::from(layout.plaintext_len(index).map_err(keyshare::Error::from)?);
        sink.send(FetchEvent::Data(bytes)).await.map_err(closed)?;
    }
    let Outcome {
        peers_used,
        lying_peers,
        dead_peers,
        chunks_refetched,
    } = outcome;
    account.outcome.peers_used.extend(peers_used);
    account.outcome.lying_peers.extend(lying_peers);
    account.outcome.dead_peers.extend(dead_peers);
    account.outcome.chunks_refetched += chunks_refetched;
    sink.send(FetchEvent::Progress(Progress {
        chunks_done: account.chunks_done,
        chunks_total: total,
        bytes_done: account.bytes_done,
        bytes_total: layout.file_size_bytes(),
        peers: account.outcome.peers_used.len(),
    }))
    .await
    .map_err(closed)?;
    Ok(())
}

fn names<T>(shared: &Shared<T>, peers: &BTreeSet<PeerId>) -> Vec<String> {
    peers
        .iter()
        .map(|peer| crate::store::member_name(shared, peer))
        .collect()
}

/// This member's latest access request for `file`.
fn my_request(
    state: &ledger::State,
    me: &ledger::MemberId,
    file: &FileId,
) -> Option<(RequestId, AccessRecord)> {
    state
        .requests()
        .filter(|(_, access)| access.file == *file && access.requester == *me)
        .max_by_key(|(_, access)| access.height)
        .map(|(id, access)| (*id, access.clone()))
}

/// Waits for `threshold` released shares that open and verify. Returns them, and the names of
/// holders whose release did not verify.
async fn gather_shares<T: Transport>(
    shared: &Shared<T>,
    record: &FileRecord,
    timeout: Duration,
) -> Result<(Vec<Share>, Vec<String>), Error> {
    let file = record.table.file_id;
    let need = record.table.threshold;
    let me = shared.me.id;
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400));
    let mut blocks = shared.blocks.subscribe();
    // Each release is opened and verified once, however many blocks the wait spans: a check is
    // a multiscalar multiplication over the threshold's commitments, and checking every release
    // again at every block made the wait quadratic in the holders.
    let mut checked: BTreeMap<(RequestId, MemberId), Option<Share>> = BTreeMap::new();
    loop {
        let Some((request, access)) = shared
            .query(move |replica| my_request(replica.state(), &me, &file))
            .await?
        else {
            return Err(Error::NoAccessRequest { file });
        };
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (holder, sealed) in access.released() {
            let name =
                || crate::store::member_name(shared, &PeerId::from_bytes(*holder.as_bytes()));
            let share = checked.entry((request, *holder)).or_insert_with(|| {
                let opened = release_context(record, holder, &request)
                    .ok_or_else(|| "not a holder".to_owned())
                    .and_then(|context| {
                        open_share(sealed, &shared.sealing, &context).map_err(|e| e.to_string())
                    })
                    .and_then(|share| {
                        verify(&share, &record.table.commitments)
                            .map(|()| share)
                            .map_err(|e| e.to_string())
                    });
                opened
                    .inspect_err(|reason| {
                        tracing::warn!(holder = %name(), %reason, "released share does not verify; skipping it");
                    })
                    .ok()
            });
            match share {
                Some(share) => good.push(share.clone()),
                None => bad.push(name()),
            }
        }
        if good.len() >= need as usize {
            return Ok((good, bad));
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(Error::NotEnoughShares {
                file,
                have: good.len(),
                need,
            });
        }
        match tokio::time::timeout(remaining, blocks.recv()).await {
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => return Err(Error::Stopped),
        }
    }
}
