//! Byte limits on the whole ledger path, tied together at compile time.
//!
//! A transaction fits in a block, a block in one Raft append, an append (or any other replica
//! message) in one transport frame. Counts alone do not bound bytes: a backlog of large
//! transactions queued during an election must still make blocks that can be sent, so the leader
//! cuts batches by bytes as well as by count, and raft-rs's `max_size_per_msg` leaves room for the
//! message around the entries. Nothing on the path grows with the contract state: snapshots travel
//! as a small descriptor plus pieces of [`SNAPSHOT_PIECE_BYTES`] (see the `snapshot` module).

/// Largest frame the transport carries for the ledger (the overlay's frame cap; the node asserts
/// the two agree).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Room in a message for everything but entry data: the message's own fields and, per entry, its
/// term, index, type and length prefix (postcard writes no more per entry than the protobuf size
/// raft-rs counts, plus two bytes for an empty entry; 64 KiB covers tens of thousands of those).
pub const MESSAGE_ENVELOPE_BYTES: usize = 64 * 1024;

/// raft-rs's `max_size_per_msg`: the entry bytes of one append message.
pub const MAX_ENTRIES_BYTES_PER_MESSAGE: usize = MAX_MESSAGE_BYTES - MESSAGE_ENVELOPE_BYTES;

/// Largest encoded block proposal (the data of one Raft entry): transactions plus a few bytes of
/// header. raft-rs always puts at least one entry in an append, so one block alone must fit.
pub const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// Largest encoded transaction.
pub const MAX_TX_BYTES: usize = 256 * 1024;

/// Bytes a proposal adds around its transactions: the timestamp and the count, as varints.
pub(crate) const PROPOSAL_HEADER_BYTES: usize = 10 + 10;

/// Bytes of snapshot body carried by one piece message.
pub const SNAPSHOT_PIECE_BYTES: usize = 1024 * 1024;

const _: () = assert!(MAX_TX_BYTES < MAX_BLOCK_BYTES);
const _: () = assert!(MAX_TX_BYTES + PROPOSAL_HEADER_BYTES <= MAX_BLOCK_BYTES);
const _: () = assert!(MAX_BLOCK_BYTES <= MAX_ENTRIES_BYTES_PER_MESSAGE);
const _: () = assert!(MAX_ENTRIES_BYTES_PER_MESSAGE <= MAX_MESSAGE_BYTES - MESSAGE_ENVELOPE_BYTES);
const _: () = assert!(SNAPSHOT_PIECE_BYTES <= MAX_MESSAGE_BYTES - MESSAGE_ENVELOPE_BYTES);
