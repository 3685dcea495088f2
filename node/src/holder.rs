//! Holder duties, driven by committed blocks: check every share deposited to this member and
//! complain if it does not verify; answer every access request for a file this member holds a
//! share of — release the share re-sealed to the requester if the policy allows, deny otherwise.
//!
//! Level-triggered: after each block with a relevant transaction (and once at start) the task
//! looks for duties not yet done, so a node that was down catches up on what it missed.

use std::collections::BTreeSet;
use std::sync::Arc;

use keyshare::{FileId, SealContext, SealedShare, open_share, reseal_share, verify};
use ledger::{AccessRecord, Body, FileRecord, MemberId, RequestId, TxResult};
use overlay::Transport;
use tokio::sync::{broadcast, watch};

use crate::error::Error;
use crate::node::{Shared, deposit_context, release_context};

/// Work the holder found to do.
struct Duties {
    deposits: Vec<FileRecord>,
    requests: Vec<(RequestId, AccessRecord, FileRecord)>,
}

pub(crate) async fn run<T: Transport>(shared: Arc<Shared<T>>, mut stopped: watch::Receiver<bool>) {
    let mut blocks = shared.blocks.subscribe();
    let mut checked: BTreeSet<FileId> = BTreeSet::new();
    let mut answered: BTreeSet<RequestId> = BTreeSet::new();
    let mut due = true;
    loop {
        if due && let Err(error) = perform(&shared, &mut checked, &mut answered).await {
            tracing::warn!(%error, "holder duties failed; will retry on the next block");
        }
        due = tokio::select! {
            biased;
            _ = stopped.changed() => return,
            block = blocks.recv() => match block {
                Ok(block) => block.txs.iter().zip(&block.results).any(|(tx, result)| {
                    *result == TxResult::Applied
                        && matches!(tx.body, Body::DepositShares { .. } | Body::RequestAccess { .. })
                }),
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
    }
}

async fn perform<T: Transport>(
    shared: &Arc<Shared<T>>,
    checked: &mut BTreeSet<FileId>,
    answered: &mut BTreeSet<RequestId>,
) -> Result<(), Error> {
    let me = shared.me.id;
    let skip_files = checked.clone();
    let skip_requests = answered.clone();
    let duties = shared
        .query(move |replica| find_duties(replica.state(), &me, &skip_files, &skip_requests))
        .await?;
    for record in duties.deposits {
        checked.insert(record.table.file_id);
        check_deposit(shared, &record).await?;
    }
    for (request_id, access, record) in duties.requests {
        answered.insert(request_id);
        answer(shared, request_id, &access, &record).await?;
    }
    Ok(())
}

fn find_duties(
    state: &ledger::State,
    me: &MemberId,
    checked: &BTreeSet<FileId>,
    answered: &BTreeSet<RequestId>,
) -> Duties {
    let deposits = state
        .files()
        .filter(|file| !checked.contains(*file))
        .filter_map(|file| state.file(file))
        .filter(|record| record.deposits.is_some() && record.share_index(me).is_some())
        .cloned()
        .collect();
    let requests = state
        .requests()
        .filter(|(id, access)| !answered.contains(*id) && !access.answers.contains_key(me))
        .filter_map(|(id, access)| {
            let record = state.file(&access.file)?;
            record.share_index(me)?;
            record.deposits.as_ref()?;
            Some((*id, access.clone(), record.clone()))
        })
        .collect();
    Duties { deposits, requests }
}

/// Opens this member's deposited share and checks it against the commitments; complains on
/// chain if it does not verify.
async fn check_deposit<T: Transport>(shared: &Shared<T>, record: &FileRecord) -> Result<(), Error> {
    let me = shared.me.id;
    let file = record.table.file_id;
    let problem = match my_deposit(shared, record) {
        Ok(share) => verify(&share, &record.table.commitments)
            .err()
            .map(|error| error.to_string()),
        Err(reason) => Some(reason),
    };
    let Some(reason) = problem else {
        tracing::debug!(%file, "deposited share verifies");
        return Ok(());
    };
    tracing::warn!(%file, %reason, "deposited share does not verify; filing a complaint");
    if record.complaints.contains_key(&me) {
        return Ok(());
    }
    shared
        .submit_applied(Body::ShareComplaint { file, reason })
        .await
        .map(|_| ())
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

fn my_deposit<T>(shared: &Shared<T>, record: &FileRecord) -> Result<keyshare::Share, String> {
    let (context, sealed) = sealed_deposit(record, &shared.me.id)?;
    open_share(sealed, &shared.sealing, &context).map_err(|error| error.to_string())
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
            reseal_share(
                sealed,
                &shared.sealing,
                &deposit,
                &requester.sealing_key,
                &release,
                rng,
            )
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
    shared.submit_applied(body).await.map(|_| ())
}
