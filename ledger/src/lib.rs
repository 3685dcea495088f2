//! The consortium ledger (not built yet; see issue 3 and `DESIGN.md` § Ledger).
//!
//! Will hold: signed transactions and hash-chained blocks; the master-table, key-management and
//! access contracts as a pure `apply`; a sans-IO Raft replica on raft-rs that batches transactions
//! into blocks; and redb persistence for the Raft log, blocks and contract state.
