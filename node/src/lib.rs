//! One BlockTorrent member's node, as a library: the binary `blocktorrent` and the simulator
//! both run it.
//!
//! What it does: wires a [`ledger::Replica`] (ticked on a timer, its Raft messages carried by
//! the overlay), an [`overlay`] peer (serving chunks, pushing and fetching them) and
//! [`keyshare`] into the store flow ([`Node::store`]), the holder's duties (automatic share
//! checks, releases and denials) and the recreate flow ([`Node::request`], [`Node::fetch`]),
//! over a private record database ([`PrivateDb`]). [`api`] is the admin HTTP API; [`config`]
//! the files `blocktorrent init` writes; [`demo`] the one-process demonstration.
//!
//! What it does not do: own the clock, the RNG seed, the transport, the disks or any thread —
//! they are passed in ([`NodeOptions`]; CPU-heavy work runs through [`Compute`], a pool in the
//! binary and inline under a test or the simulator), so the same code runs deterministically
//! under the simulator's virtual time. It writes no file a client names: `fetch` streams the
//! plaintext to its caller ([`FetchEvent`], framed by [`frames`] on the admin API).

pub mod api;
pub mod caliper;
mod compute;
pub mod config;
pub mod demo;
mod disk;
mod error;
pub mod frames;
mod holder;
mod inbound;
mod ledger_task;
pub mod load;
mod metrics;
mod node;
mod ops;
mod private;
mod recreate;
mod scrub;
mod shared;
mod store;

pub use compute::{Compute, Job, Spawner};
pub use disk::{
    INJECTED_FAILURE, MemoryDisk, POWER_CUT, discard_unfinished_database,
    discard_unfinished_database_file,
};
pub use error::Error;
pub use ledger_task::LedgerOpener;
pub use metrics::Metrics;
pub use node::{AdmittedBatch, Node, NodeOptions, Stores};
pub use ops::{ChainReport, Status};
pub use private::{MAX_RECORD_BYTES, PrivateDb, RecordKey, RecordMeta, RecordWriter, SharedRecord};
pub use recreate::{FetchEvent, FetchReceipt, RequestReceipt};
pub use shared::{Clock, Receipt, release_context, system_clock};
pub use store::{FILES_STREAM, Progress, ProgressSink, StoreReceipt, chunk_owner_ids};
