//! The recreate flow (DESIGN.md "Recreate"): request access on the ledger, gather released
//! shares that verify, rebuild the key, fetch and verify every chunk from its owners, decrypt,
//! and write the file atomically. The owner takes no part.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyshare::{ChunkCipher, ChunkLayout, FileId, Share, combine, open_share, verify};
use ledger::{AccessRecord, Body, FileRecord, RequestId};
use overlay::{ChunkSpec, PeerId, SchedulerConfig, Transport, fetch};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::Error;
use crate::node::Node;
use crate::shared::{Shared, release_context};

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

/// Progress callback: (chunks done, chunks total).
pub type Progress = Box<dyn FnMut(u32, u32) + Send>;

impl<T: Transport> Node<T> {
    /// Files an access request for `file`.
    pub async fn request(&self, file: FileId, reason: String) -> Result<RequestReceipt, Error> {
        self.shared.file(file).await?;
        let receipt = self
            .shared
            .submit_applied(Body::RequestAccess { file, reason })
            .await?;
        Ok(RequestReceipt {
            request_id: receipt.tx,
            height: receipt.height,
        })
    }

    /// Recreates `file` into `out` using this member's latest access request for it, waiting
    /// up to `timeout` for enough shares.
    pub async fn fetch(
        &self,
        file: FileId,
        out: &Path,
        timeout: Duration,
        mut progress: Option<Progress>,
    ) -> Result<FetchReceipt, Error> {
        let start = tokio::time::Instant::now();
        let shared = &self.shared;
        let record = shared.file(file).await?;
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
        let key = secret.derive_key();
        let table = &record.table;
        let layout = ChunkLayout::new(table.size_bytes, table.chunk_size_bytes)
            .map_err(|error| Error::Invalid(error.to_string()))?;
        let cipher = ChunkCipher::new(&key, file, layout);
        let specs: Vec<ChunkSpec> = (0..layout.chunk_count())
            .map(|index| {
                Ok(ChunkSpec {
                    index,
                    hash: table.chunk_hashes[index as usize],
                    size_bytes: layout.ciphertext_len(index)?,
                    owners: table.chunk_owners[index as usize]
                        .iter()
                        .map(|m| PeerId::from_bytes(*m.as_bytes()))
                        .collect(),
                })
            })
            .collect::<Result<_, keyshare::ChunkError>>()
            .map_err(keyshare::Error::from)?;

        let partial = PartialFile::create(out)?;
        let total = layout.chunk_count();
        let mut done = 0u32;
        let outcome = fetch(
            shared.transport.clone(),
            specs,
            SchedulerConfig::default(),
            CHUNK_TIMEOUT,
            |index, mut bytes| {
                crate::metrics::Metrics::add(&shared.metrics.fetch_bytes, bytes.len() as u64);
                cipher.open_hashed_chunk_in_place(index, &mut bytes)?;
                partial.write_at(&bytes, layout.plaintext_offset(index))?;
                done += 1;
                if let Some(progress) = progress.as_mut() {
                    progress(done, total);
                }
                Ok::<(), Error>(())
            },
        )
        .await?;
        let report = outcome.map_err(overlay::Error::from)?;
        partial.commit(table.size_bytes)?;
        let names = |peers: &std::collections::BTreeSet<PeerId>| {
            peers
                .iter()
                .map(|peer| crate::store::member_name(shared, peer))
                .collect()
        };
        Ok(FetchReceipt {
            file_id: file,
            bytes: table.size_bytes,
            chunks: total,
            peers_used: report.outcome.peers_used.len(),
            chunks_refetched: report.outcome.chunks_refetched,
            seconds: start.elapsed().as_secs_f64(),
            lying_peers: names(&report.outcome.lying_peers),
            bad_shares,
        })
    }
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
    let deadline = tokio::time::Instant::now() + timeout;
    let mut blocks = shared.blocks.subscribe();
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
            match opened {
                Ok(share) => good.push(share),
                Err(reason) => {
                    let name =
                        crate::store::member_name(shared, &PeerId::from_bytes(*holder.as_bytes()));
                    tracing::warn!(holder = %name, %reason, "released share does not verify; skipping it");
                    bad.push(name);
                }
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

/// A file written under a temporary name next to its destination and renamed into place only
/// when complete, so a reader never sees half a file.
struct PartialFile {
    file: std::fs::File,
    temp: PathBuf,
    out: PathBuf,
}

impl PartialFile {
    fn create(out: &Path) -> Result<Self, Error> {
        let name = out
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} is not a file path", out.display())))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(".partial");
        let temp = out.with_file_name(temp_name);
        let file = std::fs::File::create(&temp).map_err(|error| Error::io(&temp, error))?;
        Ok(Self {
            file,
            temp,
            out: out.to_owned(),
        })
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), Error> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|error| Error::io(&self.temp, error))
    }

    fn commit(mut self, size_bytes: u64) -> Result<(), Error> {
        let io = |error| Error::io(&self.temp, error);
        self.file.set_len(size_bytes).map_err(io)?;
        self.file.flush().map_err(io)?;
        self.file.sync_all().map_err(io)?;
        std::fs::rename(&self.temp, &self.out).map_err(|error| Error::io(&self.out, error))?;
        if let Some(dir) = self.out.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
