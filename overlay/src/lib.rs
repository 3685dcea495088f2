//! The chunk overlay (not built yet; see issue 4 and `DESIGN.md` § Overlay).
//!
//! Will hold: rendezvous placement of chunks on owner peers, the redb chunk store keyed by hash,
//! the length-prefixed postcard wire protocol, the sans-IO fetch scheduler, and the quinn transport
//! with members authenticated by their pinned ed25519 keys.
