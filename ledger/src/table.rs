//! Master tables larger than one transaction.
//!
//! A master table lists every chunk's hash and owners: about 129 bytes per chunk with three
//! owners, so a 64 GiB file at 256 KiB chunks (262,144 chunks) needs ~33 MiB — far beyond one
//! transaction ([`MAX_TX_BYTES`]). The chunk records stay on chain, as in the paper, split over as
//! many transactions as needed:
//!
//! 1. `RegisterFile(table)`: the header (file id, sizes, timestamp, threshold, holders,
//!    commitments) and the first chunk records that fit;
//! 2. `AppendChunks { file, first_chunk, .. }`: the next records, strictly in order (a gap, an
//!    overlap or a record past the last chunk is refused), only by the owner;
//! 3. the table is complete when it holds one record per chunk. Only then may shares be
//!    deposited (and so access be requested): an incomplete table is never usable.
//!
//! [`MasterTable::bodies`] makes the transactions' bodies from a complete table, and
//! [`check_table_plan`] refuses a file whose table could never be registered before any chunk is
//! encrypted or pushed. A table reads back whole in one query ([`crate::State::file`]).

use keyshare::ChunkLayout;

use crate::limits::MAX_TX_BYTES;
use crate::member::MemberId;
use crate::tx::{Body, MasterTable};

/// Most chunks one master table lists: a 64 GiB file at the default 256 KiB chunks. A file cut
/// into smaller chunks is limited to fewer bytes.
pub const MAX_TABLE_CHUNKS: u32 = 262_144;

/// Most owners one chunk may have.
pub const MAX_CHUNK_OWNERS: u32 = 16;

/// Encoded size of a hash, file id or member id (raw bytes in postcard).
const ID_BYTES: usize = 32;

/// Bytes of a transaction that are not its body's chunk records: sender, nonce, signature, the
/// body's tag and fixed fields, and the two list lengths.
const TX_ENVELOPE_BYTES: usize = 256;

/// Why a master table cannot be registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The file size and chunk size do not make a valid layout.
    #[error("invalid chunk layout: {reason}")]
    Layout {
        /// The layout's complaint.
        reason: String,
    },
    /// More chunks than a master table may list.
    #[error(
        "the file needs {chunks} chunks, a master table lists at most {limit}: use larger chunks"
    )]
    TooManyChunks {
        /// Chunks the file needs.
        chunks: u64,
        /// [`MAX_TABLE_CHUNKS`].
        limit: u32,
    },
    /// A chunk would have no owner or more than [`MAX_CHUNK_OWNERS`].
    #[error("each chunk needs 1..={limit} owners, asked for {owners}")]
    OwnerCount {
        /// Owners asked for.
        owners: u32,
        /// [`MAX_CHUNK_OWNERS`].
        limit: u32,
    },
    /// The table does not list exactly one hash and one owner list per chunk.
    #[error(
        "{chunks} chunks need {chunks} hashes and owner lists, the table has {hashes} and {owner_lists}"
    )]
    Incomplete {
        /// Chunks of the layout.
        chunks: u32,
        /// Hashes listed.
        hashes: usize,
        /// Owner lists listed.
        owner_lists: usize,
    },
    /// The header alone (holders and commitments) does not fit in one transaction.
    #[error("the table's header is {size_bytes} bytes, more than a transaction holds")]
    HeaderTooLarge {
        /// Encoded header size.
        size_bytes: usize,
    },
}

/// Checks, before anything is encrypted or pushed, that a file of `file_size_bytes` cut into
/// `chunk_size_bytes` chunks with `owners_per_chunk` owners each makes a table the ledger accepts.
pub fn check_table_plan(
    file_size_bytes: u64,
    chunk_size_bytes: u32,
    owners_per_chunk: u32,
) -> Result<ChunkLayout, TableError> {
    if owners_per_chunk == 0 || owners_per_chunk > MAX_CHUNK_OWNERS {
        return Err(TableError::OwnerCount {
            owners: owners_per_chunk,
            limit: MAX_CHUNK_OWNERS,
        });
    }
    let layout = ChunkLayout::new(file_size_bytes, chunk_size_bytes).map_err(|error| {
        TableError::Layout {
            reason: error.to_string(),
        }
    })?;
    if layout.chunk_count() > MAX_TABLE_CHUNKS {
        return Err(TableError::TooManyChunks {
            chunks: u64::from(layout.chunk_count()),
            limit: MAX_TABLE_CHUNKS,
        });
    }
    Ok(layout)
}

impl MasterTable {
    /// The chunk count this table's layout calls for.
    pub fn chunk_count(&self) -> Result<u32, TableError> {
        let layout = ChunkLayout::new(self.size_bytes, self.chunk_size_bytes).map_err(|error| {
            TableError::Layout {
                reason: error.to_string(),
            }
        })?;
        Ok(layout.chunk_count())
    }

    /// Whether the table lists every chunk.
    pub fn is_complete(&self) -> bool {
        self.chunk_count()
            .is_ok_and(|chunks| self.chunk_hashes.len() == chunks as usize)
    }

    /// The bodies that register this complete table: `RegisterFile` with the header and the
    /// first chunk records, then `AppendChunks` in order; each fits in one transaction.
    pub fn bodies(&self) -> Result<Vec<Body>, TableError> {
        let chunks = self.chunk_count()?;
        if chunks > MAX_TABLE_CHUNKS {
            return Err(TableError::TooManyChunks {
                chunks: u64::from(chunks),
                limit: MAX_TABLE_CHUNKS,
            });
        }
        let (hashes, owner_lists) = (self.chunk_hashes.len(), self.chunk_owners.len());
        if hashes != chunks as usize || owner_lists != chunks as usize {
            return Err(TableError::Incomplete {
                chunks,
                hashes,
                owner_lists,
            });
        }
        // Field by field: cloning `self` would copy every chunk record only to drop them.
        let header = MasterTable {
            file_id: self.file_id,
            size_bytes: self.size_bytes,
            chunk_size_bytes: self.chunk_size_bytes,
            chunk_hashes: Vec::new(),
            chunk_owners: Vec::new(),
            timestamp_ms: self.timestamp_ms,
            threshold: self.threshold,
            holders: self.holders.clone(),
            commitments: self.commitments.clone(),
        };
        let header_bytes = postcard::to_allocvec(&header).map_or(usize::MAX, |b| b.len());
        let Some(first_budget) = MAX_TX_BYTES.checked_sub(TX_ENVELOPE_BYTES + header_bytes) else {
            return Err(TableError::HeaderTooLarge {
                size_bytes: header_bytes,
            });
        };
        let record_budget = MAX_TX_BYTES - TX_ENVELOPE_BYTES - ID_BYTES - 8;
        let mut bodies = Vec::new();
        let mut start = 0;
        let mut budget = first_budget;
        loop {
            let end = start + records_within(&self.chunk_owners[start..], budget);
            let (chunk_hashes, chunk_owners) = (
                self.chunk_hashes[start..end].to_vec(),
                self.chunk_owners[start..end].to_vec(),
            );
            bodies.push(if start == 0 {
                Body::RegisterFile(MasterTable {
                    chunk_hashes,
                    chunk_owners,
                    ..header.clone()
                })
            } else {
                Body::AppendChunks {
                    file: self.file_id,
                    first_chunk: start as u32,
                    chunk_hashes,
                    chunk_owners,
                }
            });
            if end == chunks as usize {
                return Ok(bodies);
            }
            if end == start {
                // Not even one record fits a whole transaction: only an owner list far beyond
                // MAX_CHUNK_OWNERS does that.
                return Err(TableError::OwnerCount {
                    owners: u32::try_from(self.chunk_owners[start].len()).unwrap_or(u32::MAX),
                    limit: MAX_CHUNK_OWNERS,
                });
            }
            start = end;
            budget = record_budget;
        }
    }
}

/// How many of the records (given by their owner lists) fit in `budget` bytes.
fn records_within(owner_lists: &[Vec<MemberId>], budget: usize) -> usize {
    let mut used = 0;
    let mut count = 0;
    for owners in owner_lists {
        // A hash, the owner list's length and its ids (raw 32 bytes each in postcard).
        let record = ID_BYTES + 3 + owners.len() * ID_BYTES;
        if used + record > budget {
            break;
        }
        used += record;
        count += 1;
    }
    count
}
