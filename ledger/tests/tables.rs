//! Master tables for files up to 64 GiB: a table too large for one transaction registers over
//! several, in order, reads back whole in one query, and is usable only once complete; a table
//! that is too large or incomplete is refused with a clear error.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::{Cluster, commit_all};
use keyshare::{ChunkHash, FileId, FileSecret, MAX_FILE_SIZE_BYTES, split};
use ledger::{
    Body, MAX_TABLE_CHUNKS, MAX_TX_BYTES, MasterTable, MemberId, Rejection, TableError, TxResult,
    check_table_plan,
};

const SEED: u64 = 0x7ab1e;
const CHUNK_BYTES: u32 = 256 * 1024;

/// A complete synthetic table: `size_bytes` at 256 KiB chunks, three owners per chunk among
/// members 1..=3, held by members 1..=3 with threshold 2.
fn table(cluster: &mut Cluster, size_bytes: u64) -> MasterTable {
    let chunks = size_bytes.div_ceil(u64::from(CHUNK_BYTES)) as u32;
    let ids: Vec<MemberId> = cluster.genesis.members.iter().map(|m| m.id).collect();
    let secret = FileSecret::random(&mut cluster.rng);
    let (_, commitments) = split(&secret, 2, 3, &mut cluster.rng).unwrap();
    MasterTable {
        file_id: FileId::from_bytes([size_bytes as u8; 32]),
        size_bytes,
        chunk_size_bytes: CHUNK_BYTES,
        chunk_hashes: (0..chunks)
            .map(|i| ChunkHash::of(&i.to_le_bytes()))
            .collect(),
        chunk_owners: (0..chunks as usize)
            .map(|i| (0..3).map(|k| ids[(i + k) % 3]).collect())
            .collect(),
        timestamp_ms: 1,
        threshold: 2,
        holders: ids[..3].to_vec(),
        commitments,
    }
}

#[test]
fn a_64_gib_table_registers_over_many_transactions_and_reads_back_whole() {
    let mut cluster = Cluster::new(4, 3, SEED);
    let leader = cluster.elect();
    let table = table(&mut cluster, MAX_FILE_SIZE_BYTES);
    assert_eq!(table.chunk_hashes.len(), MAX_TABLE_CHUNKS as usize);
    let bodies = table.bodies().unwrap();
    assert!(bodies.len() > 100, "{} transactions", bodies.len());
    let mut bodies = bodies.into_iter();
    let first = cluster.sign(1, bodies.next().unwrap());
    commit_all(&mut cluster, leader, vec![first]);
    // The shares cannot be deposited (so no access requested) before the table is complete.
    let early = cluster.sign(
        1,
        Body::DepositShares {
            file: table.file_id,
            shares: vec![],
        },
    );
    let early_id = commit_all(&mut cluster, leader, vec![early])[0];
    assert!(matches!(
        cluster.result_of(&early_id),
        TxResult::Rejected(Rejection::TableIncomplete { chunks, .. }) if chunks == MAX_TABLE_CHUNKS
    ));
    assert!(
        !cluster
            .replica(leader)
            .state()
            .file(&table.file_id)
            .unwrap()
            .is_complete()
    );
    let rest: Vec<_> = bodies.map(|body| cluster.sign(1, body)).collect();
    for tx in &rest {
        assert!(tx.encode().len() <= MAX_TX_BYTES);
    }
    let ids = commit_all(&mut cluster, leader, rest);
    for id in &ids {
        assert_eq!(cluster.result_of(id), TxResult::Applied);
    }
    let height = cluster.replica(leader).state().height();
    cluster.run_until_all_reach(500, height);
    cluster.assert_agree();
    // One query returns the whole table, on every replica.
    for id in cluster.live() {
        let record = cluster
            .replica(id)
            .state()
            .file(&table.file_id)
            .unwrap()
            .clone();
        assert!(record.is_complete());
        assert_eq!(record.table, table);
    }
}

#[test]
fn tables_too_large_or_incomplete_are_refused_before_anything_is_pushed() {
    let mut cluster = Cluster::new(4, 3, SEED);
    // Larger than 64 GiB; too many chunks for a table; impossible owner counts.
    assert!(matches!(
        check_table_plan(MAX_FILE_SIZE_BYTES + 1, CHUNK_BYTES, 3),
        Err(TableError::Layout { .. })
    ));
    let error = check_table_plan(1 << 30, 1024, 3).unwrap_err();
    assert!(matches!(
        error,
        TableError::TooManyChunks {
            chunks: 1_048_576,
            ..
        }
    ));
    assert!(error.to_string().contains("use larger chunks"), "{error}");
    assert!(matches!(
        check_table_plan(1 << 20, CHUNK_BYTES, 0),
        Err(TableError::OwnerCount { .. })
    ));
    assert!(matches!(
        check_table_plan(1 << 20, CHUNK_BYTES, 17),
        Err(TableError::OwnerCount { .. })
    ));
    assert_eq!(
        check_table_plan(MAX_FILE_SIZE_BYTES, CHUNK_BYTES, 3)
            .unwrap()
            .chunk_count(),
        MAX_TABLE_CHUNKS
    );
    // A table missing records cannot be made into transactions.
    let mut incomplete = table(&mut cluster, 10 * u64::from(CHUNK_BYTES));
    incomplete.chunk_hashes.pop();
    assert_eq!(
        incomplete.bodies(),
        Err(TableError::Incomplete {
            chunks: 10,
            hashes: 9,
            owner_lists: 10
        })
    );
}

#[test]
fn chunk_records_come_in_order_from_the_owner_and_stop_at_the_last_chunk() {
    let mut cluster = Cluster::new(4, 3, SEED);
    let leader = cluster.elect();
    let table = table(&mut cluster, 8 * u64::from(CHUNK_BYTES));
    let records = |from: usize, to: usize| {
        (
            table.chunk_hashes[from..to].to_vec(),
            table.chunk_owners[from..to].to_vec(),
        )
    };
    let header = MasterTable {
        chunk_hashes: table.chunk_hashes[..2].to_vec(),
        chunk_owners: table.chunk_owners[..2].to_vec(),
        ..table.clone()
    };
    let append =
        |first_chunk: u32, (chunk_hashes, chunk_owners): (Vec<ChunkHash>, Vec<Vec<MemberId>>)| {
            Body::AppendChunks {
                file: table.file_id,
                first_chunk,
                chunk_hashes,
                chunk_owners,
            }
        };
    let register = cluster.sign(1, Body::RegisterFile(header));
    let gap = cluster.sign(1, append(3, records(3, 5)));
    let stranger = cluster.sign(2, append(2, records(2, 4)));
    let in_order = cluster.sign(1, append(2, records(2, 5)));
    let overlap = cluster.sign(1, append(4, records(4, 6)));
    let mut too_many = records(5, 8);
    too_many.0.push(table.chunk_hashes[0]);
    too_many.1.push(table.chunk_owners[0].clone());
    let beyond = cluster.sign(1, append(5, too_many));
    let last = cluster.sign(1, append(5, records(5, 8)));
    let ids = commit_all(
        &mut cluster,
        leader,
        vec![register, gap, stranger, in_order, overlap, beyond, last],
    );
    let results: Vec<TxResult> = ids.iter().map(|id| cluster.result_of(id)).collect();
    let file = table.file_id;
    assert_eq!(results[0], TxResult::Applied);
    assert_eq!(
        results[1],
        TxResult::Rejected(Rejection::ChunksOutOfOrder {
            file,
            expected: 2,
            first_chunk: 3
        })
    );
    assert_eq!(results[2], TxResult::Rejected(Rejection::NotOwner { file }));
    assert_eq!(results[3], TxResult::Applied);
    assert_eq!(
        results[4],
        TxResult::Rejected(Rejection::ChunksOutOfOrder {
            file,
            expected: 5,
            first_chunk: 4
        })
    );
    assert!(
        matches!(&results[5], TxResult::Rejected(Rejection::InvalidMasterTable { reason }) if reason.contains("beyond the last chunk"))
    );
    assert_eq!(results[6], TxResult::Applied);
    let record = cluster.replica(leader).state().file(&file).unwrap().clone();
    assert!(record.is_complete());
    assert_eq!(record.table, table);
}
