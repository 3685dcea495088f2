//! The contracts: master tables, key management and access, as one deterministic state machine.
//!
//! [`State::apply`] takes the transactions of a block and the verdicts of their signature checks
//! and returns one [`TxResult`] per transaction. It reads no clock and no randomness, so every
//! replica that applies the same blocks holds the same state. An invalid transaction is kept in
//! its block with a [`Rejection`] and changes nothing except, once its signature is known good,
//! its sender's nonce (so a rejected transaction cannot be replayed later when it would succeed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::OrdMap;

use keyshare::{
    ChunkHash, ChunkLayout, FileId, MAX_SHARE_COUNT, SHARE_SIZE_BYTES, SealedShare, TAG_SIZE_BYTES,
};

use crate::block::{Block, BlockHash, GENESIS_PREV_HASH};
use crate::member::{Genesis, Member, MemberId, Role};
use crate::signature::{self, Item, PublicKey};
use crate::table::{MAX_CHUNK_OWNERS, MAX_TABLE_CHUNKS};
use crate::tx::{Body, MasterTable, RequestId, Transaction, TxId};

/// Ciphertext size of a sealed share: the encoded share plus the AES-GCM tag.
const SEALED_SHARE_SIZE_BYTES: usize = SHARE_SIZE_BYTES + TAG_SIZE_BYTES as usize;

/// The outcome of one transaction in a block.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TxResult {
    /// Applied to the state.
    Applied,
    /// Kept in the block, not applied.
    Rejected(Rejection),
}

/// Why a transaction was rejected. The same reasons refuse a transaction at submission.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Rejection {
    /// The sender is not a member of the consortium.
    #[error("sender {sender} is not a member")]
    UnknownSender {
        /// The claimed sender.
        sender: MemberId,
    },
    /// The signature does not verify over this chain's id (forged, tampered, or another chain's).
    #[error("signature does not verify for this chain")]
    BadSignature,
    /// The nonce is not above the sender's last one: a replay or a reordering.
    #[error("nonce {nonce} is not above the sender's last nonce {last}")]
    StaleNonce {
        /// The transaction's nonce.
        nonce: u64,
        /// The last nonce the sender used.
        last: u64,
    },
    /// A master table for this file id exists already.
    #[error("file {file} is already registered")]
    FileExists {
        /// The file.
        file: FileId,
    },
    /// No master table for this file id.
    #[error("file {file} is not registered")]
    UnknownFile {
        /// The file.
        file: FileId,
    },
    /// Only the file's owner may do this.
    #[error("only the owner of file {file} may do this")]
    NotOwner {
        /// The file.
        file: FileId,
    },
    /// The master table is inconsistent.
    #[error("invalid master table: {reason}")]
    InvalidMasterTable {
        /// What is wrong.
        reason: String,
    },
    /// A share deposit does not carry one share per holder.
    #[error("{expected} sealed shares expected, got {actual}")]
    ShareCount {
        /// Holders of the file.
        expected: u32,
        /// Shares given.
        actual: u32,
    },
    /// A sealed share has the wrong size.
    #[error("sealed share at position {position} is malformed")]
    MalformedShare {
        /// 0-based position in the transaction.
        position: u32,
    },
    /// The file's shares were deposited already.
    #[error("shares of file {file} are already deposited")]
    SharesAlreadyDeposited {
        /// The file.
        file: FileId,
    },
    /// The file's shares have not been deposited yet.
    #[error("shares of file {file} are not deposited yet")]
    SharesNotDeposited {
        /// The file.
        file: FileId,
    },
    /// The sender holds no share of the file.
    #[error("sender holds no share of file {file}")]
    NotHolder {
        /// The file.
        file: FileId,
    },
    /// The sender already complained about this file's share.
    #[error("sender already complained about file {file}")]
    AlreadyComplained {
        /// The file.
        file: FileId,
    },
    /// The sender's role may not file access requests.
    #[error("role {role:?} may not request access")]
    RoleNotAllowed {
        /// The sender's role.
        role: Role,
    },
    /// No access request with this id.
    #[error("access request {request} is unknown")]
    UnknownRequest {
        /// The request id.
        request: RequestId,
    },
    /// The sender already released or denied for this request.
    #[error("sender already answered request {request}")]
    AlreadyAnswered {
        /// The request id.
        request: RequestId,
    },
    /// The free-text reason exceeds the policy limit.
    #[error("reason is {size_bytes} bytes, limit {limit_bytes}")]
    ReasonTooLong {
        /// Its size.
        size_bytes: u32,
        /// The limit.
        limit_bytes: u32,
    },
    /// The file's master table does not list every chunk yet; the file is not usable.
    #[error("master table of file {file} lists {listed} of {chunks} chunks")]
    TableIncomplete {
        /// The file.
        file: FileId,
        /// Chunks listed so far.
        listed: u32,
        /// Chunks of the file.
        chunks: u32,
    },
    /// Chunk records must continue the table where it stops.
    #[error("master table of file {file} continues at chunk {expected}, not {first_chunk}")]
    ChunksOutOfOrder {
        /// The file.
        file: FileId,
        /// The next chunk the table needs.
        expected: u32,
        /// The first chunk the transaction lists.
        first_chunk: u32,
    },
}

/// A registered file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    /// Who registered it.
    pub owner: MemberId,
    /// The master table.
    pub table: MasterTable,
    /// Height of the block that registered it.
    pub height: u64,
    /// Sealed shares in holder order, once deposited.
    pub deposits: Option<Vec<SealedShare>>,
    /// Holders that said their share does not verify, with their reasons.
    pub complaints: BTreeMap<MemberId, String>,
}

impl FileRecord {
    /// Whether the master table lists every chunk; only then is the file usable.
    pub fn is_complete(&self) -> bool {
        self.table.is_complete()
    }

    /// Whether any holder complained about its share.
    pub fn disputed(&self) -> bool {
        !self.complaints.is_empty()
    }

    /// 1-based share index of `holder`, if it holds one.
    pub fn share_index(&self, holder: &MemberId) -> Option<u32> {
        let position = self.table.holders.iter().position(|h| h == holder)?;
        u32::try_from(position + 1).ok()
    }
}

/// A holder's answer to an access request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Answer {
    /// The share, sealed to the requester.
    Released(SealedShare),
    /// A refusal with its reason.
    Denied(String),
}

/// An access request and its answers so far.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessRecord {
    /// The file asked for.
    pub file: FileId,
    /// Who asked.
    pub requester: MemberId,
    /// Why.
    pub reason: String,
    /// Height of the block that recorded it.
    pub height: u64,
    /// Answers by holder.
    pub answers: BTreeMap<MemberId, Answer>,
}

impl AccessRecord {
    /// The released shares, in holder order of the file.
    pub fn released(&self) -> impl Iterator<Item = (&MemberId, &SealedShare)> {
        self.answers
            .iter()
            .filter_map(|(holder, answer)| match answer {
                Answer::Released(share) => Some((holder, share)),
                Answer::Denied(_) => None,
            })
    }
}

/// Where a committed transaction landed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxStatus {
    /// Block height.
    pub height: u64,
    /// Position in the block.
    pub position: u32,
    /// Outcome.
    pub result: TxResult,
}

/// The contract state every replica holds; serialized whole into Raft snapshots.
///
/// The maps that grow with the chain are persistent B-trees (`imbl`) of shared records, so a
/// snapshot takes the state at its index with an O(1) clone and encodes it off the ledger path
/// while blocks go on applying: a write copies only the tree nodes the clone still shares (record
/// pointers), and the one record it changes. They encode exactly as `BTreeMap`s of records do, so
/// a snapshot body is what it was before.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ContractState {
    pub(crate) height: u64,
    pub(crate) head: Option<BlockHash>,
    pub(crate) nonces: BTreeMap<MemberId, u64>,
    #[serde(deserialize_with = "persistent_map")]
    pub(crate) files: OrdMap<FileId, Arc<FileRecord>>,
    #[serde(deserialize_with = "persistent_map")]
    pub(crate) requests: OrdMap<RequestId, Arc<AccessRecord>>,
}

/// Decodes a map entry by entry. imbl's own decoder reserves room for as many entries as the
/// input claims, so a hostile snapshot body of a few bytes could make a replica allocate
/// terabytes and abort.
fn persistent_map<'de, D, K, V>(deserializer: D) -> Result<OrdMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: serde::Deserialize<'de> + Ord + Clone,
    V: serde::Deserialize<'de> + Clone,
{
    <BTreeMap<K, V> as serde::Deserialize>::deserialize(deserializer).map(OrdMap::from_iter)
}

/// Decoded member keys of one genesis.
pub(crate) type MemberKeys = Arc<BTreeMap<MemberId, PublicKey>>;

/// Every member's key of `genesis`, decoded; why the genesis is invalid if one is unusable
/// (does not decode, small order, non-canonical).
pub(crate) fn checked_member_keys(genesis: &Genesis) -> Result<MemberKeys, String> {
    let mut keys = BTreeMap::new();
    for ((id, key), member) in decode_member_keys(genesis)
        .into_iter()
        .zip(&genesis.members)
    {
        let key = key.map_err(|error| {
            format!(
                "member {} has an unusable ed25519 key: {error}",
                member.name
            )
        })?;
        keys.insert(id, key);
    }
    Ok(Arc::new(keys))
}

/// Every member's key of `genesis`, decoded or why not (the costly part of opening a replica: a
/// decompression per member).
pub(crate) fn decode_member_keys(
    genesis: &Genesis,
) -> Vec<(MemberId, Result<PublicKey, crate::signature::KeyError>)> {
    genesis
        .members
        .iter()
        .map(|m| (m.id, PublicKey::from_bytes(*m.id.as_bytes())))
        .collect()
}

/// The ledger state: genesis facts plus the contract state built from every block.
#[derive(Clone, Debug)]
pub struct State {
    genesis: Genesis,
    /// Member keys decoded once; a key that does not decode (refused by a valid genesis) is
    /// absent, so its transactions get `BadSignature`. Shared by every state of this chain.
    keys: MemberKeys,
    contract: ContractState,
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.genesis == other.genesis && self.contract == other.contract
    }
}

impl State {
    /// The state before the first block. The genesis must be valid.
    pub fn new(genesis: Genesis) -> Self {
        Self::from_contract(genesis, ContractState::default())
    }

    pub(crate) fn from_contract(genesis: Genesis, contract: ContractState) -> Self {
        let keys = decode_member_keys(&genesis)
            .into_iter()
            .filter_map(|(id, key)| Some((id, key.ok()?)))
            .collect();
        Self::with_keys(genesis, Arc::new(keys), contract)
    }

    /// A state of `genesis` whose member keys are already decoded.
    pub(crate) fn with_keys(genesis: Genesis, keys: MemberKeys, contract: ContractState) -> Self {
        Self {
            genesis,
            keys,
            contract,
        }
    }

    /// This chain's state holding `contract` instead (after a snapshot install).
    pub(crate) fn replaced(&self, contract: ContractState) -> Self {
        Self::with_keys(self.genesis.clone(), self.keys.clone(), contract)
    }

    pub(crate) fn contract(&self) -> &ContractState {
        &self.contract
    }

    /// The genesis this chain started from.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// Height of the last applied block (0 before the first).
    pub fn height(&self) -> u64 {
        self.contract.height
    }

    /// Hash of the last applied block, or [`GENESIS_PREV_HASH`].
    pub fn head(&self) -> BlockHash {
        self.contract.head.unwrap_or(GENESIS_PREV_HASH)
    }

    /// A registered file.
    pub fn file(&self, id: &FileId) -> Option<&FileRecord> {
        self.contract.files.get(id).map(Arc::as_ref)
    }

    /// Every registered file id, ascending.
    pub fn files(&self) -> impl Iterator<Item = &FileId> {
        self.contract.files.keys()
    }

    /// An access request and its answers.
    pub fn request(&self, id: &RequestId) -> Option<&AccessRecord> {
        self.contract.requests.get(id).map(Arc::as_ref)
    }

    /// Every access request, ascending by id.
    pub fn requests(&self) -> impl Iterator<Item = (&RequestId, &AccessRecord)> {
        self.contract
            .requests
            .iter()
            .map(|(id, record)| (id, record.as_ref()))
    }

    /// The last nonce `member` used (0 if none).
    pub fn nonce(&self, member: &MemberId) -> u64 {
        self.contract.nonces.get(member).copied().unwrap_or(0)
    }

    /// Checks what can be checked before ordering: membership, signature verdict, nonce, and the
    /// parts of the body that do not depend on other transactions (a master table's consistency,
    /// sizes, the sender's role). Checks against state wait for the block: the transaction it
    /// depends on (a registration before its deposit) may be in the same batch.
    pub fn precheck(&self, tx: &Transaction, signature_ok: bool) -> Result<(), Rejection> {
        let role = self.check_sender(tx, signature_ok)?.role;
        check_stateless(&self.genesis, role, &tx.body)
    }

    /// Applies the transactions of one block; `signature_ok[i]` is the verdict on `txs[i]`.
    /// Returns one result per transaction and makes the block, chaining it to the head.
    pub fn apply(
        &mut self,
        timestamp_ms: u64,
        txs: Vec<Transaction>,
        signature_ok: &[bool],
    ) -> Block {
        let ids = Transaction::ids(&txs);
        self.apply_identified(timestamp_ms, txs, &ids, signature_ok)
    }

    /// [`State::apply`] for a caller that already has the ids (`ids[i] == txs[i].id()`).
    pub(crate) fn apply_identified(
        &mut self,
        timestamp_ms: u64,
        txs: Vec<Transaction>,
        ids: &[TxId],
        signature_ok: &[bool],
    ) -> Block {
        assert_eq!(txs.len(), signature_ok.len(), "one verdict per transaction");
        assert_eq!(txs.len(), ids.len(), "one id per transaction");
        let height = self.contract.height + 1;
        let results = txs
            .iter()
            .zip(ids)
            .zip(signature_ok)
            .map(|((tx, id), ok)| match self.apply_one(height, tx, id, *ok) {
                Ok(()) => TxResult::Applied,
                Err(rejection) => TxResult::Rejected(rejection),
            })
            .collect();
        let block = Block {
            height,
            prev_hash: self.head(),
            timestamp_ms,
            txs,
            results,
        };
        self.contract.height = height;
        self.contract.head = Some(block.hash_with_ids(ids));
        block
    }

    fn check_sender(&self, tx: &Transaction, signature_ok: bool) -> Result<&Member, Rejection> {
        let member = self
            .genesis
            .member(&tx.sender)
            .ok_or(Rejection::UnknownSender { sender: tx.sender })?;
        if !signature_ok {
            return Err(Rejection::BadSignature);
        }
        let last = self.nonce(&tx.sender);
        if tx.nonce <= last {
            return Err(Rejection::StaleNonce {
                nonce: tx.nonce,
                last,
            });
        }
        Ok(member)
    }

    fn apply_one(
        &mut self,
        height: u64,
        tx: &Transaction,
        id: &TxId,
        signature_ok: bool,
    ) -> Result<(), Rejection> {
        let role = self.check_sender(tx, signature_ok)?.role;
        self.contract.nonces.insert(tx.sender, tx.nonce);
        execute(&self.genesis, &mut self.contract, height, role, tx, id)
    }
}

/// The checks of a body that read nothing but the genesis.
fn check_stateless(genesis: &Genesis, role: Role, body: &Body) -> Result<(), Rejection> {
    let limit_bytes = genesis.policy.reason_max_bytes;
    let check_reason = |reason: &str| {
        let size_bytes = u32::try_from(reason.len()).unwrap_or(u32::MAX);
        if size_bytes > limit_bytes {
            return Err(Rejection::ReasonTooLong {
                size_bytes,
                limit_bytes,
            });
        }
        Ok(())
    };
    match body {
        Body::RegisterFile(table) => validate_table(genesis, table)
            .map_err(|reason| Rejection::InvalidMasterTable { reason }),
        Body::DepositShares { shares, .. } => {
            for (position, sealed) in (0..).zip(shares) {
                check_sealed(position, sealed)?;
            }
            Ok(())
        }
        Body::ShareComplaint { reason, .. } | Body::DenyAccess { reason, .. } => {
            check_reason(reason)
        }
        Body::RequestAccess { reason, .. } => {
            check_reason(reason)?;
            if !genesis.policy.request_roles.contains(&role) {
                return Err(Rejection::RoleNotAllowed { role });
            }
            Ok(())
        }
        Body::ReleaseShare {
            sealed_to_requester,
            ..
        } => check_sealed(0, sealed_to_requester),
        Body::AppendChunks {
            first_chunk,
            chunk_hashes,
            chunk_owners,
            ..
        } => {
            let records = u32::try_from(chunk_hashes.len()).unwrap_or(u32::MAX);
            if records == 0 || first_chunk.saturating_add(records) > MAX_TABLE_CHUNKS {
                return Err(Rejection::InvalidMasterTable {
                    reason: format!("1..={MAX_TABLE_CHUNKS} chunk records needed"),
                });
            }
            check_records(
                &member_set(genesis),
                *first_chunk,
                chunk_hashes,
                chunk_owners,
            )
            .map_err(|reason| Rejection::InvalidMasterTable { reason })
        }
    }
}

fn execute(
    genesis: &Genesis,
    contract: &mut ContractState,
    height: u64,
    role: Role,
    tx: &Transaction,
    id: &TxId,
) -> Result<(), Rejection> {
    check_stateless(genesis, role, &tx.body)?;
    match &tx.body {
        Body::RegisterFile(table) => register_file(contract, height, tx.sender, table),
        Body::DepositShares { file, shares } => deposit_shares(contract, tx.sender, file, shares),
        Body::ShareComplaint { file, reason } => {
            let record = file_mut(contract, file)?;
            if record.share_index(&tx.sender).is_none() {
                return Err(Rejection::NotHolder { file: *file });
            }
            if record.complaints.contains_key(&tx.sender) {
                return Err(Rejection::AlreadyComplained { file: *file });
            }
            record.complaints.insert(tx.sender, reason.clone());
            Ok(())
        }
        Body::RequestAccess { file, reason } => {
            let record = contract
                .files
                .get(file)
                .ok_or(Rejection::UnknownFile { file: *file })?;
            if record.deposits.is_none() {
                return Err(Rejection::SharesNotDeposited { file: *file });
            }
            let record = AccessRecord {
                file: *file,
                requester: tx.sender,
                reason: reason.clone(),
                height,
                answers: BTreeMap::new(),
            };
            // The request is named by its transaction's id.
            contract.requests.insert(*id, Arc::new(record));
            Ok(())
        }
        Body::ReleaseShare {
            request,
            sealed_to_requester,
        } => {
            let answer = Answer::Released(sealed_to_requester.clone());
            answer_request(contract, tx.sender, request, answer)
        }
        Body::DenyAccess { request, reason } => {
            answer_request(contract, tx.sender, request, Answer::Denied(reason.clone()))
        }
        Body::AppendChunks {
            file,
            first_chunk,
            chunk_hashes,
            chunk_owners,
        } => {
            let record = file_mut(contract, file)?;
            if record.owner != tx.sender {
                return Err(Rejection::NotOwner { file: *file });
            }
            let table = &mut record.table;
            let listed = u32::try_from(table.chunk_hashes.len()).unwrap_or(u32::MAX);
            if *first_chunk != listed {
                return Err(Rejection::ChunksOutOfOrder {
                    file: *file,
                    expected: listed,
                    first_chunk: *first_chunk,
                });
            }
            let chunks = table
                .chunk_count()
                .map_err(|e| Rejection::InvalidMasterTable {
                    reason: e.to_string(),
                })?;
            if chunk_hashes.len() > chunks.saturating_sub(listed) as usize {
                return Err(Rejection::InvalidMasterTable {
                    reason: format!("records beyond the last chunk ({chunks})"),
                });
            }
            table.chunk_hashes.extend_from_slice(chunk_hashes);
            table.chunk_owners.extend_from_slice(chunk_owners);
            Ok(())
        }
    }
}

fn file_mut<'a>(
    contract: &'a mut ContractState,
    file: &FileId,
) -> Result<&'a mut FileRecord, Rejection> {
    contract
        .files
        .get_mut(file)
        .map(Arc::make_mut)
        .ok_or(Rejection::UnknownFile { file: *file })
}

fn register_file(
    contract: &mut ContractState,
    height: u64,
    owner: MemberId,
    table: &MasterTable,
) -> Result<(), Rejection> {
    if contract.files.contains_key(&table.file_id) {
        return Err(Rejection::FileExists {
            file: table.file_id,
        });
    }
    let record = FileRecord {
        owner,
        table: table.clone(),
        height,
        deposits: None,
        complaints: BTreeMap::new(),
    };
    contract.files.insert(table.file_id, Arc::new(record));
    Ok(())
}

/// Checks a `RegisterFile` table: its header, and the chunk records it starts with (the rest may
/// follow in `AppendChunks`).
fn validate_table(genesis: &Genesis, table: &MasterTable) -> Result<(), String> {
    let layout =
        ChunkLayout::new(table.size_bytes, table.chunk_size_bytes).map_err(|e| e.to_string())?;
    let chunk_count = layout.chunk_count();
    if chunk_count > MAX_TABLE_CHUNKS {
        return Err(format!(
            "{chunk_count} chunks, a master table lists at most {MAX_TABLE_CHUNKS}"
        ));
    }
    if table.chunk_hashes.len() > chunk_count as usize {
        return Err(format!(
            "{} chunk records for {chunk_count} chunks",
            table.chunk_hashes.len()
        ));
    }
    let members = member_set(genesis);
    check_records(&members, 0, &table.chunk_hashes, &table.chunk_owners)?;
    let is_member = |id: &MemberId| members.contains(id);
    let holders = &table.holders;
    if holders.is_empty() || holders.len() > MAX_SHARE_COUNT as usize {
        return Err(format!("holder count must be 1..={MAX_SHARE_COUNT}"));
    }
    if !holders.iter().all(is_member) || !all_distinct(holders) {
        return Err("holders must be distinct members".into());
    }
    if table.threshold == 0 || table.threshold as usize > holders.len() {
        return Err(format!("threshold must be 1..={}", holders.len()));
    }
    if table.commitments.threshold() != table.threshold {
        return Err("commitment count differs from the threshold".into());
    }
    Ok(())
}

/// Checks chunk records starting at chunk `first_chunk`: one owner list per hash, each of
/// 1..=`MAX_CHUNK_OWNERS` distinct members.
fn check_records(
    members: &BTreeSet<&MemberId>,
    first_chunk: u32,
    hashes: &[ChunkHash],
    owners: &[Vec<MemberId>],
) -> Result<(), String> {
    if hashes.len() != owners.len() {
        return Err(format!(
            "{} chunk hashes but {} owner lists",
            hashes.len(),
            owners.len()
        ));
    }
    let is_member = |id: &MemberId| members.contains(id);
    for (index, owners) in (first_chunk..).zip(owners) {
        let count_ok = (1..=MAX_CHUNK_OWNERS as usize).contains(&owners.len());
        if !count_ok || !owners.iter().all(is_member) || !all_distinct(owners) {
            return Err(format!(
                "chunk {index} needs 1..={MAX_CHUNK_OWNERS} distinct member owners"
            ));
        }
    }
    Ok(())
}

/// The members' keys, for lookups: a table names up to a thousand holders and three owners for
/// each of up to 262,144 chunks, too many for a scan of the genesis each.
fn member_set(genesis: &Genesis) -> BTreeSet<&MemberId> {
    genesis.members.iter().map(|m| &m.id).collect()
}

fn all_distinct(ids: &[MemberId]) -> bool {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).all(|pair| pair[0] != pair[1])
}

fn check_sealed(position: u32, sealed: &SealedShare) -> Result<(), Rejection> {
    if sealed.ciphertext.len() != SEALED_SHARE_SIZE_BYTES {
        return Err(Rejection::MalformedShare { position });
    }
    Ok(())
}

fn deposit_shares(
    contract: &mut ContractState,
    sender: MemberId,
    file: &FileId,
    shares: &[SealedShare],
) -> Result<(), Rejection> {
    let record = file_mut(contract, file)?;
    if record.owner != sender {
        return Err(Rejection::NotOwner { file: *file });
    }
    if record.deposits.is_some() {
        return Err(Rejection::SharesAlreadyDeposited { file: *file });
    }
    if !record.is_complete() {
        let chunks = record.table.chunk_count().unwrap_or(0);
        return Err(Rejection::TableIncomplete {
            file: *file,
            listed: u32::try_from(record.table.chunk_hashes.len()).unwrap_or(u32::MAX),
            chunks,
        });
    }
    let expected = record.table.holders.len();
    if shares.len() != expected {
        return Err(Rejection::ShareCount {
            expected: expected as u32,
            actual: u32::try_from(shares.len()).unwrap_or(u32::MAX),
        });
    }
    record.deposits = Some(shares.to_vec());
    Ok(())
}

fn answer_request(
    contract: &mut ContractState,
    sender: MemberId,
    request: &RequestId,
    answer: Answer,
) -> Result<(), Rejection> {
    let ContractState {
        files, requests, ..
    } = contract;
    let access = requests
        .get_mut(request)
        .map(Arc::make_mut)
        .ok_or(Rejection::UnknownRequest { request: *request })?;
    let file = files
        .get(&access.file)
        .ok_or(Rejection::UnknownFile { file: access.file })?;
    if file.share_index(&sender).is_none() {
        return Err(Rejection::NotHolder { file: access.file });
    }
    if access.answers.contains_key(&sender) {
        return Err(Rejection::AlreadyAnswered { request: *request });
    }
    access.answers.insert(sender, answer);
    Ok(())
}

/// Checks the signatures of `txs` against `state`'s chain id and member keys under ZIP-215 (see
/// the `signature` module): one batch equation, split further only where it fails. Each
/// verdict depends on its transaction alone, never on the others in `txs`. Senders that are not
/// members get `false`.
pub fn verify_signatures(state: &State, txs: &[&Transaction]) -> Vec<bool> {
    let chain_id = state.genesis.chain_id.as_str();
    let known: Vec<(usize, &PublicKey, Vec<u8>)> = txs
        .iter()
        .enumerate()
        .filter_map(|(i, tx)| {
            let key = state.keys.get(&tx.sender)?;
            Some((i, key, tx.signing_bytes(chain_id)))
        })
        .collect();
    let items: Vec<Item<'_>> = known
        .iter()
        .map(|(i, key, message)| Item {
            key,
            message,
            signature: &txs[*i].signature,
        })
        .collect();
    let mut verdicts = vec![false; txs.len()];
    for ((i, _, _), ok) in known.iter().zip(signature::verify_each(&items)) {
        verdicts[*i] = ok;
    }
    verdicts
}
