//! Entry points for the fuzz targets in `fuzz/` and the regression runs of their inputs in
//! `fuzzing/`, for decoders that are not public: what a replica does with snapshot bytes a peer
//! sent. Behind the `fuzzing` feature; not part of the ledger's API.

use crate::replica::{Checkpoint, checkpoint_bytes};
use crate::snapshot::Descriptor;

/// A snapshot descriptor and a snapshot body, decoded as a replica decodes them from a peer. A
/// body that decodes must encode back to a body that decodes to the same state.
pub fn snapshot(data: &[u8]) {
    let _ = Descriptor::decode(data);
    if let Ok(contract) = Checkpoint::decode(data) {
        let again = checkpoint_bytes(&contract);
        let decoded = Checkpoint::decode(&again).ok();
        assert!(
            decoded.as_ref() == Some(&contract),
            "a snapshot body does not survive its own encoding"
        );
    }
}

/// The snapshot body a replica would take of `state`: a well-formed start for the fuzzer.
pub fn snapshot_body(state: &crate::State) -> Vec<u8> {
    checkpoint_bytes(state.contract())
}
