//! BlockTorrent's chunk overlay: where encrypted chunks live and how they are fetched back.
//!
//! What it does:
//! - [`place`]: rendezvous hashing of (file, chunk, member) to pick `r` owner peers per chunk.
//! - [`ChunkStore`]: chunks on redb keyed by SHA3-256, verified on put and re-checked by a
//!   scrubber the node paces ([`ChunkStore::scrub`]), with a quota per pushing peer.
//! - [`wire`]: the `blocktorrent/1` protocol — length-prefixed postcard frames, one request per
//!   stream, plus opaque messages (the node carries Raft on them).
//! - [`FetchScheduler`]: a sans-IO scheduler that picks, per chunk, the owner with the best
//!   expected completion time, bounds in-flight requests, duplicates the last chunks, and moves
//!   on from slow, dead or lying peers. [`fetch`] and [`push`] drive it over any [`Transport`].
//! - [`QuicTransport`]: quinn + rustls with RFC 7250 raw ed25519 keys checked against the member
//!   set; [`MemoryTransport`] is the in-process seam for tests and the simulator.
//!
//! What it does not do: it knows nothing of the ledger. Members and chunk lists come in as plain
//! values; the node decides what to store and fetch, and decrypts.

mod error;
mod fetch;
mod peer;
mod placement;
mod quic;
mod reopen;
mod scheduler;
mod service;
mod store;
mod transport;
pub mod wire;

pub use error::{
    Error, FetchError, FrameError, PlacementError, QuicError, StoreError, TransportError,
};
pub use fetch::{FetchReport, InTask, Offload, PushItem, PushReport, fetch, push};
pub use peer::PeerId;
pub use placement::place;
pub use quic::{
    INBOUND_BUDGET_BYTES_PER_PEER, MAX_CONNECTIONS_PER_PEER, QuicTransport,
    REQUESTS_IN_SERVICE_PER_PEER,
};
pub use reopen::ReopeningDb;
pub use scheduler::{AskId, ChunkAsk, ChunkSpec, Event, FetchScheduler, Outcome, SchedulerConfig};
pub use service::{Allowance, ChunkService, Handler, serve_message_stream, serve_request_stream};
pub use store::{ChunkStore, MAX_STORED_CHUNK_BYTES, ScrubReport};
pub use transport::{MemoryNetwork, MemoryTransport, TraceEvent, Transport, within};
