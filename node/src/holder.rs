//! Holder duties, driven by committed blocks: check every share deposited to this member and
//! complain if it does not verify; answer every access request for a file this member holds a
//! share of — release the share re-sealed to the requester if the policy allows, deny otherwise.
//!
//! Level-triggered: at start, after it missed blocks and after a failure the task works out
//! all its duties from the chain state, so a node that was down catches up on what it missed;
//! after each block it looks only at the files that block deposited shares for (and the open
//! requests), so the work per block does not grow with the files on chain. A duty is done only when the chain shows it (this member's complaint or answer is
//! applied), or, for a share that verifies, when the check passed. A duty that fails (the ledger
//! restarting, a refused submission) is tried again with backoff; one failure does not hold up the
//! other duties.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use keyshare::{
    FileId, SealContext, SealedShare, Share, open_share, reseal_share, seal_share, verify,
};
use ledger::{AccessRecord, Body, FileRecord, MemberId, RequestId, TxResult};
use overlay::Transport;
use tokio::sync::{broadcast, watch};

use crate::error::Error;
use crate::shared::{Receipt, Shared, deposit_context, release_context};

/// Where to look for duties.
#[derive(Default)]
struct Scope {
    /// Every file on chain.
    all: bool,
    /// The files whose shares were just deposited.
    deposits: BTreeSet<FileId>,
    /// An access request was just filed. (Open requests are looked at whenever anything is: a
    /// deposit can make an earlier request answerable.)
    requests: bool,
}

impl Scope {
    fn everything() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && !self.requests && self.deposits.is_empty()
    }

    /// Adds what `block` asks to look at. A block that does not follow the last one seen means
    /// blocks went by unseen (a snapshot was installed): then everything is looked at.
    /// A block at or below the last height seen was covered by a full scan already.
    fn note(&mut self, block: &ledger::Block, last_height: &mut Option<u64>) {
        match *last_height {
            Some(last) if block.height <= last => return,
            Some(last) if block.height > last + 1 => self.all = true,
            _ => {}
        }
        *last_height = Some(block.height);
        for (tx, result) in block.txs.iter().zip(&block.results) {
            if *result != TxResult::Applied {
                continue;
            }
            match &tx.body {
                Body::DepositShares { file, .. } => {
                    self.deposits.insert(*file);
                }
                Body::RequestAccess { .. } => self.requests = true,
                _ => {}
            }
        }
    }
}

/// Work the holder found to do.
struct Duties {
    deposits: Vec<FileRecord>,
    requests: Vec<(RequestId, AccessRecord, FileRecord)>,
    /// The height of the state they were found in.
    height: u64,
}

/// Bounds of the wait before failed duties are tried again (doubling while they keep failing).
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Deposits one compute job checks.
const CHECKS_PER_JOB: usize = 32;

pub(crate) async fn run<T: Transport>(shared: Arc<Shared<T>>, mut stopped: watch::Receiver<bool>) {
    let mut blocks = shared.blocks.subscribe();
    // Deposited shares that verified: nothing on chain records that, so it is kept here (and
    // worked out again after a restart).
    let mut verified: BTreeSet<FileId> = BTreeSet::new();
    let mut retry = RETRY_MIN;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut scope = Scope::everything();
    // The last block seen: a block that does not follow it means blocks went by unseen (a
    // snapshot installed, a lagging subscription), and only a full scan finds their deposits.
    let mut last_height: Option<u64> = None;
    loop {
        if !scope.is_empty() {
            let full = scope.all;
            match perform(&shared, &mut verified, std::mem::take(&mut scope)).await {
                // Only a full scan that succeeded settles an earlier failure (a narrower one
                // did not look at the duty that failed), and covers every block up to the
                // height it saw (a snapshot installed at start included).
                Ok(height) if full => {
                    retry = RETRY_MIN;
                    retry_at = None;
                    last_height = Some(last_height.map_or(height, |last| last.max(height)));
                }
                Ok(_) => {}
                Err((failed, error)) => {
                    tracing::warn!(%error, failed, "holder duties failed; retrying in {retry:?}");
                    // The earliest deadline stands: later failures must not push it back.
                    let at = tokio::time::Instant::now() + retry;
                    retry_at = Some(retry_at.map_or(at, |earlier| earlier.min(at)));
                    if full {
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        }
        let retry_sleep = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stopped.changed() => return,
            () = retry_sleep => scope = Scope::everything(),
            () = shared.ledger_recovered.notified() => {
                retry = RETRY_MIN;
                scope = Scope::everything();
            }
            block = blocks.recv() => match block {
                Ok(block) => scope.note(&block, &mut last_height),
                Err(broadcast::error::RecvError::Lagged(_)) => scope = Scope::everything(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Does every duty the chain shows as open; returns how many failed and the first error.
/// Does the duties in `scope`; returns the height of the state they were found in, or how many
/// failed and the first error.
async fn perform<T: Transport>(
    shared: &Arc<Shared<T>>,
    verified: &mut BTreeSet<FileId>,
    scope: Scope,
) -> Result<u64, (usize, Error)> {
    let me = shared.me.id;
    // Only a full scan needs the whole set; a block's deposits are sifted here.
    let skip = if scope.all {
        verified.clone()
    } else {
        BTreeSet::new()
    };
    let candidates: Option<Vec<FileId>> = (!scope.all).then(|| {
        scope
            .deposits
            .iter()
            .filter(|file| !verified.contains(*file))
            .copied()
            .collect()
    });
    let duties = shared
        .query(move |replica| find_duties(replica.state(), &me, candidates.as_deref(), &skip))
        .await
        .map_err(|error| (1, error))?;
    let mut failures = Vec::new();
    // Opening and verifying shares is the CPU-heavy part: it runs on the compute pool, in
    // chunks started together so they use every core.
    let mut checks = Vec::new();
    let mut deposits = duties.deposits;
    while !deposits.is_empty() {
        let rest = deposits.split_off(deposits.len().min(CHECKS_PER_JOB));
        let chunk = std::mem::replace(&mut deposits, rest);
        let sealing = shared.sealing.clone();
        checks.push(shared.compute.start(move || {
            chunk
                .into_iter()
                .map(|record| {
                    let problem = deposit_problem(&sealing, &me, &record);
                    (record, problem)
                })
                .collect::<Vec<_>>()
        }));
    }
    for check in checks {
        let checked = match check.await {
            Ok(checked) => checked,
            Err(error) => {
                failures.push(error);
                continue;
            }
        };
        for (record, problem) in checked {
            match problem {
                None => {
                    tracing::debug!(file = %record.table.file_id, "deposited share verifies");
                    verified.insert(record.table.file_id);
                }
                Some(reason) => {
                    // Done once applied: the chain shows the complaint from now on.
                    if let Err(error) = complain(shared, &record, reason).await {
                        failures.push(error);
                    }
                }
            }
        }
    }
    for (request_id, access, record) in duties.requests {
        if let Err(error) = answer(shared, request_id, &access, &record).await {
            failures.push(error);
        }
    }
    let failed = failures.len();
    match failures.into_iter().next() {
        None => Ok(duties.height),
        Some(first) => Err((failed, first)),
    }
}

/// The duties still open: deposits to this member not yet found good and not complained about
/// (among `candidates`, or among every file not in `verified`), and access requests for its files
/// it has not answered on chain.
fn find_duties(
    state: &ledger::State,
    me: &MemberId,
    candidates: Option<&[FileId]>,
    verified: &BTreeSet<FileId>,
) -> Duties {
    let files: Box<dyn Iterator<Item = &FileId>> = match candidates {
        Some(candidates) => Box::new(candidates.iter()),
        None => Box::new(state.files().filter(|file| !verified.contains(*file))),
    };
    let deposits = files
        .filter_map(|file| state.file(file))
        .filter(|record| {
            record.deposits.is_some()
                && record.share_index(me).is_some()
                && !record.complaints.contains_key(me)
        })
        .cloned()
        .collect();
    let requests = state
        .requests()
        .filter(|(_, access)| !access.answers.contains_key(me))
        .filter_map(|(id, access)| {
            let record = state.file(&access.file)?;
            record.share_index(me)?;
            record.deposits.as_ref()?;
            Some((*id, access.clone(), record.clone()))
        })
        .collect();
    Duties {
        deposits,
        requests,
        height: state.height(),
    }
}

/// Why this member's deposited share of `record` is unusable, if it is: it does not open, or
/// it does not verify against the commitments.
fn deposit_problem(
    sealing: &keyshare::SealingSecretKey,
    me: &MemberId,
    record: &FileRecord,
) -> Option<String> {
    let share = match sealed_deposit(record, me).and_then(|(context, sealed)| {
        open_share(sealed, sealing, &context).map_err(|e| e.to_string())
    }) {
        Ok(share) => share,
        Err(reason) => return Some(reason),
    };
    verify(&share, &record.table.commitments)
        .err()
        .map(|error| error.to_string())
}

/// Files a complaint about this member's share of `record`, unless the chain already has one.
async fn complain<T: Transport>(
    shared: &Shared<T>,
    record: &FileRecord,
    reason: String,
) -> Result<(), Error> {
    let file = record.table.file_id;
    tracing::warn!(%file, %reason, "deposited share does not verify; filing a complaint");
    if record.complaints.contains_key(&shared.me.id) {
        return Ok(());
    }
    done_or_answered(
        shared
            .submit_applied(Body::ShareComplaint { file, reason })
            .await,
    )
}

/// A submission's outcome for a duty: applied, or refused because the chain already has this
/// member's answer (a retry of one that did land) — both mean done.
fn done_or_answered(outcome: Result<Receipt, Error>) -> Result<(), Error> {
    match outcome {
        Ok(_)
        | Err(Error::Rejected(
            ledger::Rejection::AlreadyAnswered { .. } | ledger::Rejection::AlreadyComplained { .. },
        )) => Ok(()),
        Err(error) => Err(error),
    }
}

/// `holder`'s deposited share of `record` and the context it is sealed under.
fn sealed_deposit<'a>(
    record: &'a FileRecord,
    holder: &MemberId,
) -> Result<(SealContext, &'a SealedShare), String> {
    let context = deposit_context(record, holder).ok_or("not a holder")?;
    let sealed = record
        .deposits
        .as_ref()
        .and_then(|deposits| deposits.get(context.share_index as usize - 1))
        .ok_or("no deposit for this holder")?;
    Ok((context, sealed))
}

/// Releases or denies one access request, per this member's policy.
async fn answer<T: Transport>(
    shared: &Shared<T>,
    request: RequestId,
    access: &AccessRecord,
    record: &FileRecord,
) -> Result<(), Error> {
    let me = shared.me.id;
    let requester = shared
        .consortium
        .members
        .iter()
        .find(|m| m.id == access.requester)
        .ok_or_else(|| Error::Invalid(format!("requester {} is unknown", access.requester)))?;
    let file = access.file;
    let body = if !shared.policy.release_to_roles.contains(&requester.role) {
        tracing::info!(%file, requester = %requester.name, "policy denies the access request");
        Body::DenyAccess {
            request,
            reason: format!(
                "{} does not release to the {:?} role",
                shared.me.name, requester.role
            ),
        }
    } else {
        let (deposit, sealed) = sealed_deposit(record, &me).map_err(Error::Invalid)?;
        let release =
            release_context(record, &me, &request).ok_or(Error::Invalid("not a holder".into()))?;
        let resealed = shared.with_rng(|rng| {
            if shared.policy.release_bad_shares {
                let share = random_share(release.share_index, rng).map_err(|e| e.to_string())?;
                return seal_share(&share, &requester.sealing_key, &release, rng)
                    .map_err(|e| e.to_string());
            }
            reseal_share(
                sealed,
                &shared.sealing,
                &deposit,
                &requester.sealing_key,
                &release,
                rng,
            )
            .map_err(|e| e.to_string())
        });
        match resealed {
            Ok(sealed_to_requester) => {
                tracing::info!(%file, requester = %requester.name, "releasing share");
                Body::ReleaseShare {
                    request,
                    sealed_to_requester,
                }
            }
            Err(error) => Body::DenyAccess {
                request,
                reason: format!("cannot open the deposited share: {error}"),
            },
        }
    };
    done_or_answered(shared.submit_applied(body).await)
}

/// A share with `index` and a random value: what a Byzantine holder releases
/// ([`crate::config::ReleasePolicy::release_bad_shares`]).
fn random_share(index: u32, rng: &mut impl rand::Rng) -> Result<Share, keyshare::ShareError> {
    let mut bytes = [0u8; keyshare::SHARE_SIZE_BYTES];
    bytes[..4].copy_from_slice(&index.to_be_bytes());
    rng.fill_bytes(&mut bytes[4..]);
    // Below 2^252 < ℓ: canonical.
    bytes[keyshare::SHARE_SIZE_BYTES - 1] &= 0x0f;
    Share::from_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::{Block, BlockHash, Transaction};

    fn block(height: u64, txs: Vec<Transaction>) -> Block {
        Block {
            height,
            prev_hash: BlockHash::from_bytes([0; 32]),
            timestamp_ms: 0,
            results: vec![TxResult::Applied; txs.len()],
            txs,
        }
    }

    fn deposit_of(file: FileId) -> Body {
        Body::DepositShares {
            file,
            shares: Vec::new(),
        }
    }

    #[test]
    fn a_block_names_its_deposits_and_a_gap_asks_for_everything() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let file = FileId::from_bytes([7; 32]);
        let mut last = None;
        let mut scope = Scope::default();
        let first = Transaction::sign(&key, "c", 1, deposit_of(file));
        scope.note(&block(4, vec![first]), &mut last);
        assert!(!scope.all && scope.deposits.contains(&file) && !scope.requests);
        let mut scope = Scope::default();
        scope.note(&block(5, Vec::new()), &mut last);
        assert!(
            scope.is_empty(),
            "the next block, with nothing for a holder"
        );
        // Blocks 6..=8 went by unseen (a snapshot): only a full scan finds their deposits.
        scope.note(&block(9, Vec::new()), &mut last);
        assert!(scope.all);
        assert_eq!(last, Some(9));
        // A full scan saw the state at height 12: blocks up to it are covered.
        let mut last = Some(12);
        let mut scope = Scope::default();
        let late = Transaction::sign(&key, "c", 2, deposit_of(file));
        scope.note(&block(11, vec![late]), &mut last);
        assert!(scope.is_empty(), "a block the full scan covered");
        scope.note(&block(13, Vec::new()), &mut last);
        assert!(scope.is_empty() && last == Some(13));
    }
}
