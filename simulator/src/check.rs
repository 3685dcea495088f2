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

/// The chain as the running members store it, by height. A member that caught up from a
/// snapshot stores no block below it, so blocks are gathered from several members; two members
/// holding different blocks at one height is a fork.
pub struct Chain {
    blocks: BTreeMap<u64, Block>,
    /// The first height at which two members' blocks differed: (height, member, member).
    fork: Option<(u64, usize, usize)>,
    /// Members that did not answer, or whose stored block at their head height is missing or
    /// is not their head.
    unreadable: Vec<String>,
}

/// Members whose whole stored chains are read (the rest are checked by their heads).
const FULL_READS: usize = 5;

/// Every running member's (height, head), and the chain gathered from the longest members until
/// every height is covered and at least [`FULL_READS`] members were read.
pub async fn read_chains(world: &World) -> (Vec<(usize, u64, BlockHash)>, Chain) {
    let mut chain = Chain {
        blocks: BTreeMap::new(),
        fork: None,
        unreadable: Vec::new(),
    };
    let mut heads = Vec::new();
    for index in 0..world.len() {
        match world.node(index) {
            Some(node) => match node.head().await {
                Ok((height, head)) => heads.push((index, height, head)),
                Err(error) => chain
                    .unreadable
                    .push(format!("member-{}: {error}", index + 1)),
            },
            None => chain
                .unreadable
                .push(format!("member-{} is not running", index + 1)),
        }
    }
    let mut by_height: Vec<(usize, u64)> = heads.iter().map(|(i, h, _)| (*i, *h)).collect();
    by_height.sort_by_key(|(index, height)| (std::cmp::Reverse(*height), *index));
    let top = by_height.first().map_or(0, |(_, height)| *height);
    let mut owners: BTreeMap<u64, usize> = BTreeMap::new();
    let covered = |chain: &Chain| chain.blocks.range(1..=top).count() as u64 >= top;
    for (read, (index, _)) in by_height.iter().enumerate() {
        if read >= FULL_READS && covered(&chain) {
            break;
        }
        let Some(node) = world.node(*index) else {
            continue;
        };
        let mut from = 1;
        loop {
            let Ok(batch) = node.blocks(from, BLOCK_BATCH).await else {
                break;
            };
            let Some(last) = batch.last().map(|block| block.height) else {
                break;
            };
            for block in batch {
                merge(&mut chain, &mut owners, *index, block);
            }
            from = last + 1;
        }
    }
    // Every member, read in full or not, stores the block at its head height, and it is its
    // head: its stored chain is not judged by its state alone (unless a snapshot brought it
    // there).
    for (index, height, head) in &heads {
        if *height == 0 {
            continue;
        }
        let Some(node) = world.node(*index) else {
            continue;
        };
        match node.blocks(*height, 1).await {
            Ok(blocks)
                if blocks
                    .first()
                    .is_some_and(|b| b.height == *height && b.hash() == *head) =>
            {
                if let Some(block) = blocks.into_iter().next() {
                    merge(&mut chain, &mut owners, *index, block);
                }
            }
            // It installed a snapshot at its head and has applied nothing since: it stores no
            // block there by design. Its head is still compared with the gathered chain's
            // block at that height (`chains_agree`). Seed 1248 of the long sweep.
            Ok(blocks) if blocks.is_empty() => {}
            _ => chain.unreadable.push(format!(
                "member-{} does not store its head block {height}",
                index + 1
            )),
        }
    }
    (heads, chain)
}

/// Adds `block`, read from member `index`, noting a fork if another member's differs.
fn merge(chain: &mut Chain, owners: &mut BTreeMap<u64, usize>, index: usize, block: Block) {
    let height = block.height;
    match chain.blocks.get(&height) {
        Some(known) if known.hash() != block.hash() => {
            let other = owners.get(&height).copied().unwrap_or(index);
            chain.fork.get_or_insert((height, other, index));
        }
        Some(_) => {}
        None => {
            owners.insert(height, index);
            chain.blocks.insert(height, block);
        }
    }
}

/// Every member's chain is a prefix of one chain: no two members hold different blocks at a
/// height, the gathered blocks link up from genesis with none missing, and every member's head
/// is that chain's block at its height (blocks are hash-chained, so that covers the members
/// whose blocks were not read).
pub fn chains_agree(heads: &[(usize, u64, BlockHash)], chain: &Chain) -> Check {
    let name = "chains are prefixes of one another";
    if let Some(first) = chain.unreadable.first() {
        return Check::new(name, false, first.clone());
    }
    if heads.is_empty() {
        return Check::new(name, false, "no member answered".into());
    }
    if let Some((height, a, b)) = chain.fork {
        return Check::new(
            name,
            false,
            format!(
                "member-{} and member-{} hold different blocks at height {height}",
                a + 1,
                b + 1
            ),
        );
    }
    let mut previous = ledger::GENESIS_PREV_HASH;
    let top = heads
        .iter()
        .map(|(_, height, _)| *height)
        .max()
        .unwrap_or(0);
    for height in 1..=top {
        let Some(block) = chain.blocks.get(&height) else {
            return Check::new(
                name,
                false,
                format!("no running member stores block {height}"),
            );
        };
        if block.prev_hash != previous {
            return Check::new(
                name,
                false,
                format!("block {height} does not link to block {}", height - 1),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(timestamps: &[u64]) -> Vec<Block> {
        let mut previous = ledger::GENESIS_PREV_HASH;
        timestamps
            .iter()
            .enumerate()
            .map(|(i, timestamp_ms)| {
                let block = Block {
                    height: i as u64 + 1,
                    prev_hash: previous,
                    timestamp_ms: *timestamp_ms,
                    txs: Vec::new(),
                    results: Vec::new(),
                };
                previous = block.hash();
                block
            })
            .collect()
    }

    fn gathered(blocks: &[Block]) -> Chain {
        Chain {
            blocks: blocks.iter().map(|b| (b.height, b.clone())).collect(),
            fork: None,
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn agreeing_heads_pass_and_a_head_off_the_chain_fails() {
        let blocks = chain_of(&[1, 2, 3]);
        let chain = gathered(&blocks);
        let heads = vec![
            (0, 3, blocks[2].hash()),
            (1, 2, blocks[1].hash()),
            (2, 0, ledger::GENESIS_PREV_HASH),
        ];
        assert!(chains_agree(&heads, &chain).ok);
        let other = chain_of(&[1, 2, 99]);
        let diverged = vec![(0, 3, blocks[2].hash()), (1, 3, other[2].hash())];
        let check = chains_agree(&diverged, &chain);
        assert!(
            !check.ok && check.detail.contains("member-2"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn a_missing_or_unlinked_block_or_a_fork_fails() {
        let blocks = chain_of(&[1, 2, 3]);
        let heads = vec![(0, 3, blocks[2].hash())];
        let mut missing = gathered(&blocks);
        missing.blocks.remove(&2);
        assert!(!chains_agree(&heads, &missing).ok);
        let mut unlinked = gathered(&blocks);
        unlinked.blocks.insert(2, chain_of(&[7, 8])[1].clone());
        assert!(!chains_agree(&heads, &unlinked).ok);
        let mut forked = gathered(&blocks);
        forked.fork = Some((2, 0, 1));
        assert!(!chains_agree(&heads, &forked).ok);
        let mut unread = gathered(&blocks);
        unread.unreadable.push("member-4 is not running".into());
        assert!(!chains_agree(&heads, &unread).ok);
        assert!(!chains_agree(&[], &gathered(&blocks)).ok);
    }

    #[test]
    fn an_acknowledged_transaction_absent_from_its_block_fails() {
        let chain = gathered(&chain_of(&[1]));
        let absent = TxId::from_bytes([7; 32]);
        assert!(acknowledged_on_chain(&[], &chain).ok);
        assert!(!acknowledged_on_chain(&[(absent, 1)], &chain).ok);
    }
}
