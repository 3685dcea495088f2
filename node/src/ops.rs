//! Read-side operations: status, the master table, and re-verifying the chain from genesis.

use std::time::Duration;

use ledger::{Block, BlockHash, State, verify_signatures};
use overlay::Transport;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::node::Node;

/// What `status` reports (the CLI's `--json` fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This member's name.
    pub member: String,
    /// Height of the last applied block.
    pub height: u64,
    /// Hash of that block.
    pub head_hash: BlockHash,
    /// The Raft leader's name, if known.
    pub leader: Option<String>,
    /// Other members that answered a ping.
    pub peers_online: usize,
    /// Files registered on the ledger (0 while the ledger is down: unknown).
    pub files: usize,
    /// Whether the ledger runs (false while it restarts after an error).
    #[serde(default = "healthy_by_default")]
    pub healthy: bool,
    /// Why the ledger is down, while it is.
    #[serde(default)]
    pub ledger_error: Option<String>,
}

fn healthy_by_default() -> bool {
    true
}

/// What `chain verify` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Whether every check passed.
    pub ok: bool,
    /// Blocks re-checked.
    pub blocks: u64,
    /// Transactions re-checked.
    pub txs: u64,
    /// The head hash after replay.
    pub head_hash: BlockHash,
    /// The first problem found, if any.
    pub problem: Option<String>,
}

/// Blocks read per query while verifying.
const VERIFY_BATCH: usize = 256;

impl<T: Transport> Node<T> {
    /// The node's view of the consortium.
    pub async fn status(&self) -> Result<Status, Error> {
        let members = self.shared.consortium.members.clone();
        let queried = match self.shared.ledger_error() {
            Some(reason) => Err(Error::LedgerDown { reason }),
            None => {
                self.shared
                    .query(|replica| {
                        let state = replica.state();
                        (
                            state.height(),
                            state.head(),
                            replica.leader(),
                            state.files().count(),
                        )
                    })
                    .await
            }
        };
        let peers_online = self.shared.online_peers(Duration::from_secs(1)).await.len();
        let member = self.shared.me.name.clone();
        let (height, head_hash, leader, files) = match queried {
            Ok(answer) => answer,
            // The replica is being reopened: answer from what is known without it (the last
            // applied height and head; leader and file count unknown).
            Err(Error::LedgerDown { reason }) => {
                let head_hash = *self
                    .shared
                    .last_head
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let height = self
                    .shared
                    .metrics
                    .ledger_height
                    .load(std::sync::atomic::Ordering::Relaxed);
                return Ok(Status {
                    member,
                    height,
                    head_hash,
                    leader: None,
                    peers_online,
                    files: 0,
                    healthy: false,
                    ledger_error: Some(reason),
                });
            }
            Err(error) => return Err(error),
        };
        Ok(Status {
            member,
            height,
            head_hash,
            leader: leader
                .and_then(|id| members.get(id.checked_sub(1)? as usize))
                .map(|m| m.name.clone()),
            peers_online,
            files,
            healthy: true,
            ledger_error: None,
        })
    }

    /// Replays the stored chain from genesis: heights, hash links, every signature, and every
    /// contract result (by rebuilding each block from its transactions and comparing hashes).
    pub async fn verify_chain(&self) -> Result<ChainReport, Error> {
        let mut state = State::new(self.shared.consortium.genesis());
        let mut report = ChainReport {
            ok: true,
            blocks: 0,
            txs: 0,
            head_hash: state.head(),
            problem: None,
        };
        let (applied_height, applied_head) = self
            .shared
            .query(|replica| (replica.state().height(), replica.state().head()))
            .await?;
        let mut next = 1u64;
        while next <= applied_height {
            let from = next;
            let blocks: Vec<Block> = self
                .shared
                .query(move |replica| replica.store().blocks_from(from, VERIFY_BATCH))
                .await?
                .map_err(ledger::Error::from)?;
            if blocks.is_empty() {
                report.problem = Some(format!("block {from} is missing from the store"));
                break;
            }
            let checked = self
                .shared
                .compute
                .run(move || {
                    let result = replay(&mut state, &blocks);
                    (state, result)
                })
                .await?;
            state = checked.0;
            let (count, txs) = match checked.1 {
                Ok(counts) => counts,
                Err(problem) => {
                    report.problem = Some(problem);
                    break;
                }
            };
            report.blocks += count;
            report.txs += txs;
            next += count;
        }
        report.head_hash = state.head();
        if report.problem.is_none() && report.head_hash != applied_head {
            report.problem = Some(format!(
                "replayed head {} differs from the replica's head {applied_head}",
                report.head_hash
            ));
        }
        report.ok = report.problem.is_none();
        Ok(report)
    }
}

/// Re-applies `blocks` on `state`; returns (blocks, transactions) or the first problem.
fn replay(state: &mut State, blocks: &[Block]) -> Result<(u64, u64), String> {
    let mut txs = 0u64;
    for block in blocks {
        let expected = state.height() + 1;
        if block.height != expected {
            return Err(format!(
                "block {} found where {expected} was expected",
                block.height
            ));
        }
        if block.prev_hash != state.head() {
            return Err(format!(
                "block {} does not link to its parent",
                block.height
            ));
        }
        let refs: Vec<&ledger::Transaction> = block.txs.iter().collect();
        let verdicts = verify_signatures(state, &refs);
        let rebuilt = state.apply(block.timestamp_ms, block.txs.clone(), &verdicts);
        if rebuilt.hash() != block.hash() {
            return Err(format!(
                "block {} does not replay to the same results (hash {} vs {})",
                block.height,
                rebuilt.hash(),
                block.hash()
            ));
        }
        txs += block.txs.len() as u64;
    }
    Ok((blocks.len() as u64, txs))
}
