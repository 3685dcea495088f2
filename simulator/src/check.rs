//! Checkers, outside the code under test: they read the members' chains through the node's
//! public API and compare with what the workloads were told.

use std::collections::BTreeMap;

use ledger::{Block, BlockHash, TxId, TxResult};
use serde::Serialize;

use crate::world::World;

/// Blocks read per query.
const BLOCK_BATCH: usize = 256;

/// One checker's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What it checks.
    pub name: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What it saw (the first violation when it failed).
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, ok: bool, detail: String) -> Self {
        Self { name, ok, detail }
    }
}

/// The longest chain among the running members, by height.
pub struct Chain {
    blocks: BTreeMap<u64, Block>,
}

/// Every running member's (height, head), then the chain of one with the greatest height.
pub async fn read_chains(world: &World) -> (Vec<(usize, u64, BlockHash)>, Chain) {
    let mut heads = Vec::new();
    for index in 0..world.len() {
        let Some(node) = world.node(index) else {
            continue;
        };
        if let Ok(status) = node.status().await {
            heads.push((index, status.height, status.head_hash));
        }
    }
    let mut blocks = BTreeMap::new();
    if let Some(&(longest, height, _)) = heads.iter().max_by_key(|(_, height, _)| *height)
        && let Some(node) = world.node(longest)
    {
        let mut from = 1;
        while from <= height {
            let Ok(batch) = node.blocks(from, BLOCK_BATCH).await else {
                break;
            };
            if batch.is_empty() {
                break;
            }
            for block in batch {
                from = block.height + 1;
                blocks.insert(block.height, block);
            }
        }
    }
    (heads, Chain { blocks })
}

/// Every member's chain is a prefix of the longest one: blocks are hash-chained, so a member
/// at height `h` agrees with it when its head is the longest chain's block `h` — and the
/// longest chain itself links up from genesis.
pub fn chains_agree(heads: &[(usize, u64, BlockHash)], chain: &Chain) -> Check {
    let name = "chains are prefixes of one another";
    let mut previous = ledger::GENESIS_PREV_HASH;
    for (height, block) in &chain.blocks {
        if block.prev_hash != previous {
            return Check::new(
                name,
                false,
                format!("the longest chain does not link at height {height}"),
            );
        }
        previous = block.hash();
    }
    for (index, height, head) in heads {
        let agrees = match chain.blocks.get(height) {
            Some(block) => block.hash() == *head,
            None => *height == 0,
        };
        if !agrees {
            return Check::new(
                name,
                false,
                format!(
                    "member-{}'s head at height {height} is not the longest chain's",
                    index + 1
                ),
            );
        }
    }
    let top = chain.blocks.keys().next_back().copied().unwrap_or(0);
    Check::new(
        name,
        true,
        format!("{} members, heights up to {top}", heads.len()),
    )
}

/// Every acknowledged transaction is in the block it was acknowledged in, applied.
pub fn acknowledged_on_chain(acknowledged: &[(TxId, u64)], chain: &Chain) -> Check {
    let name = "no acknowledged transaction is missing";
    let mut index: BTreeMap<u64, Vec<(TxId, bool)>> = BTreeMap::new();
    for (height, block) in &chain.blocks {
        index.insert(
            *height,
            block
                .txs
                .iter()
                .zip(&block.results)
                .map(|(tx, result)| (tx.id(), *result == TxResult::Applied))
                .collect(),
        );
    }
    for (tx, height) in acknowledged {
        let present = index
            .get(height)
            .is_some_and(|txs| txs.iter().any(|(id, applied)| id == tx && *applied));
        if !present {
            return Check::new(
                name,
                false,
                format!("transaction {tx} acknowledged in block {height} is not applied there"),
            );
        }
    }
    Check::new(
        name,
        true,
        format!("{} acknowledged transactions", acknowledged.len()),
    )
}

/// A checker built from a count of good and bad cases.
pub fn counted(name: &'static str, good: usize, bad: usize, first_bad: Option<String>) -> Check {
    match first_bad {
        Some(first) if bad > 0 => {
            Check::new(name, false, format!("{bad} of {}: {first}", good + bad))
        }
        _ => Check::new(name, bad == 0, format!("{good} of {}", good + bad)),
    }
}
