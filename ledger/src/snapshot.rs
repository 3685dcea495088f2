//! Snapshots in bounded pieces: no message grows with the contract state.
//!
//! A Raft snapshot's `data` is a small [`Descriptor`] (the body's size and SHA3-256), never the
//! body itself, so raft-rs's `MsgSnapshot` stays tiny however large the state. The body — the
//! postcard encoding of the contract state at the snapshot's index — moves beside Raft:
//!
//! 1. The leader's `MsgSnapshot` reaches a follower. The follower does not step it into Raft yet;
//!    it starts a [`Download`] and asks the leader for pieces (`Transfer::Request`), a few at a
//!    time, each at most [`SNAPSHOT_PIECE_BYTES`].
//! 2. The leader answers from the bodies it [`Holds`] (its latest snapshot and the one before),
//!    or says `Unavailable` and lets Raft offer its newer snapshot.
//! 3. With every piece in, the follower checks the body against the descriptor's hash and decodes
//!    it. Only then does it step the `MsgSnapshot`; Raft hands the snapshot back in a `Ready` and
//!    the replica installs the decoded state and writes descriptor and body in one redb
//!    transaction — atomically, or not at all.
//!
//! A piece that never comes is asked for again; a body that does not match its hash or does not
//! decode is refused and fetched again (a bounded number of times); a transfer that stalls or
//! keeps failing is aborted (`Transfer::Abort`), and the leader reports the snapshot failed to
//! raft-rs, which offers it again. Nothing here ends the replica: every failure is an `Err` for the
//! caller to log, and the transfer goes on.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use raft::eraftpb::Message;
use sha3::{Digest, Sha3_256};

use crate::error::Error;
use crate::limits::SNAPSHOT_PIECE_BYTES;

/// Pieces a receiver keeps requested at once.
const WINDOW_PIECES: u32 = 4;
/// A requested piece not received after this long is requested again.
pub(crate) const PIECE_RETRY_MS: u64 = 2_000;
/// A transfer that received nothing for this long is aborted.
pub(crate) const STALL_MS: u64 = 20_000;
/// Whole-body failures (hash or decoding) before a transfer is aborted.
const MAX_BODY_FAILURES: u32 = 3;
/// Largest body a descriptor may announce: a receiver holds the pieces in memory until the whole
/// body is checked. A larger claim is refused before a transfer starts.
const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Snapshot bodies a replica keeps for serving: a follower mid-transfer can finish after the
/// sender took one newer snapshot.
const HELD_BODIES: usize = 2;

/// What a Raft snapshot's `data` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Descriptor {
    /// Size of the body.
    pub(crate) body_bytes: u64,
    /// SHA3-256 of the body.
    pub(crate) body_hash: [u8; 32],
}

impl Descriptor {
    /// The descriptor of `body`.
    pub(crate) fn of(body: &[u8]) -> Self {
        Self {
            body_bytes: body.len() as u64,
            body_hash: Sha3_256::digest(body).into(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a descriptor from a snapshot's data (untrusted when it came from a peer).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let (descriptor, rest): (Self, _) =
            postcard::take_from_bytes(bytes).map_err(|e| Error::BadMessage {
                reason: format!("snapshot descriptor does not decode: {e}"),
            })?;
        if !rest.is_empty() {
            return Err(Error::BadMessage {
                reason: format!("{} bytes after the snapshot descriptor", rest.len()),
            });
        }
        if descriptor.body_bytes > MAX_BODY_BYTES {
            return Err(Error::BadMessage {
                reason: format!(
                    "snapshot body of {} bytes announced, limit {MAX_BODY_BYTES}",
                    descriptor.body_bytes
                ),
            });
        }
        Ok(descriptor)
    }

    /// Pieces the body travels in (at least one, so an empty body is still a transfer).
    pub(crate) fn piece_count(&self) -> u32 {
        let pieces = self.body_bytes.div_ceil(SNAPSHOT_PIECE_BYTES as u64).max(1);
        u32::try_from(pieces).unwrap_or(u32::MAX)
    }

    /// Size of piece `piece`.
    fn piece_bytes(&self, piece: u32) -> u64 {
        let start = u64::from(piece) * SNAPSHOT_PIECE_BYTES as u64;
        self.body_bytes
            .saturating_sub(start)
            .min(SNAPSHOT_PIECE_BYTES as u64)
    }

    /// Whether `body` is the body described.
    pub(crate) fn matches(&self, body: &[u8]) -> bool {
        *self == Self::of(body)
    }
}

/// A snapshot body and where it belongs.
#[derive(Clone, Debug)]
pub(crate) struct Body {
    /// Raft index of the snapshot.
    pub(crate) index: u64,
    pub(crate) descriptor: Descriptor,
    pub(crate) bytes: Bytes,
}

impl Body {
    pub(crate) fn new(index: u64, bytes: Bytes) -> Self {
        Self {
            index,
            descriptor: Descriptor::of(&bytes),
            bytes,
        }
    }

    /// Piece `piece`, if the body has it.
    pub(crate) fn piece(&self, piece: u32) -> Option<Bytes> {
        if piece >= self.descriptor.piece_count() {
            return None;
        }
        let start = piece as usize * SNAPSHOT_PIECE_BYTES;
        let end = (start + SNAPSHOT_PIECE_BYTES).min(self.bytes.len());
        Some(self.bytes.slice(start.min(end)..end))
    }
}

/// The bodies a replica can serve, newest last.
#[derive(Default)]
pub(crate) struct Holds {
    bodies: VecDeque<Body>,
}

impl Holds {
    /// Keeps `body`, forgetting the oldest beyond [`HELD_BODIES`].
    pub(crate) fn hold(&mut self, body: Body) {
        self.bodies.retain(|held| held.index != body.index);
        self.bodies.push_back(body);
        while self.bodies.len() > HELD_BODIES {
            self.bodies.pop_front();
        }
    }

    /// Piece `piece` of the body at `index`, if held.
    pub(crate) fn piece(&self, index: u64, piece: u32) -> Option<Bytes> {
        let body = self.bodies.iter().find(|body| body.index == index)?;
        body.piece(piece)
    }

    /// The newest body.
    pub(crate) fn latest(&self) -> Option<&Body> {
        self.bodies.back()
    }
}

/// The receiving side of one transfer.
pub(crate) struct Download {
    /// Who offered the snapshot (and serves its pieces).
    pub(crate) from: u64,
    pub(crate) index: u64,
    pub(crate) descriptor: Descriptor,
    /// The `MsgSnapshot` to step into Raft once the body is here.
    pub(crate) message: Message,
    /// Received pieces (a map, not a vector sized by the descriptor: the size is a peer's claim).
    pieces: BTreeMap<u32, Bytes>,
    /// Requested, not received: piece → when requested.
    in_flight: BTreeMap<u32, u64>,
    next_piece: u32,
    last_progress_ms: u64,
    body_failures: u32,
}

/// What became of a piece.
pub(crate) enum Progress {
    /// More pieces are needed.
    Pending,
    /// The whole body arrived and matches the descriptor.
    Complete(Bytes),
}

impl Download {
    pub(crate) fn new(
        from: u64,
        index: u64,
        descriptor: Descriptor,
        message: Message,
        now_ms: u64,
    ) -> Self {
        Self {
            from,
            index,
            descriptor,
            message,
            pieces: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_piece: 0,
            last_progress_ms: now_ms,
            body_failures: 0,
        }
    }

    /// Whether this is the transfer of `descriptor` at `index` from `from`.
    pub(crate) fn is_for(&self, from: u64, index: u64, descriptor: &Descriptor) -> bool {
        self.from == from && self.index == index && self.descriptor == *descriptor
    }

    /// The pieces to request now: overdue ones again (only once nothing at all arrived for a
    /// retry interval, so a slow link is not flooded with duplicates), then new ones up to the
    /// window.
    pub(crate) fn requests(&mut self, now_ms: u64) -> Vec<u32> {
        let mut requests = Vec::new();
        let quiet = now_ms.saturating_sub(self.last_progress_ms) >= PIECE_RETRY_MS;
        for (piece, requested_ms) in &mut self.in_flight {
            if quiet && now_ms.saturating_sub(*requested_ms) >= PIECE_RETRY_MS {
                *requested_ms = now_ms;
                requests.push(*piece);
            }
        }
        let count = self.descriptor.piece_count();
        while self.in_flight.len() < WINDOW_PIECES as usize && self.next_piece < count {
            let piece = self.next_piece;
            self.next_piece += 1;
            if !self.pieces.contains_key(&piece) {
                self.in_flight.insert(piece, now_ms);
                requests.push(piece);
            }
        }
        requests
    }

    /// Whether nothing arrived for [`STALL_MS`].
    pub(crate) fn stalled(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_progress_ms) >= STALL_MS
    }

    /// Takes one piece. A piece out of range or of the wrong size is refused; a duplicate is
    /// ignored. When the last piece arrives the body is joined and checked: a body that does not
    /// match its hash is refused and the transfer starts over (`Err`), until it has failed
    /// [`MAX_BODY_FAILURES`] times (`Err` with [`Download::exhausted`] true).
    pub(crate) fn accept(
        &mut self,
        piece: u32,
        bytes: Bytes,
        now_ms: u64,
    ) -> Result<Progress, Error> {
        if piece >= self.descriptor.piece_count() {
            return Err(Error::BadMessage {
                reason: format!("snapshot piece {piece} beyond the body"),
            });
        }
        let expected = self.descriptor.piece_bytes(piece);
        if bytes.len() as u64 != expected {
            return Err(Error::BadMessage {
                reason: format!(
                    "snapshot piece {piece} is {} bytes, expected {expected}",
                    bytes.len()
                ),
            });
        }
        self.in_flight.remove(&piece);
        if self.pieces.contains_key(&piece) {
            return Ok(Progress::Pending);
        }
        self.pieces.insert(piece, bytes);
        self.last_progress_ms = now_ms;
        if self.pieces.len() < self.descriptor.piece_count() as usize {
            return Ok(Progress::Pending);
        }
        // Every piece is here and each had its exact size, so the body is `body_bytes` long.
        let mut body = Vec::with_capacity(usize::try_from(self.descriptor.body_bytes).unwrap_or(0));
        for piece in self.pieces.values() {
            body.extend_from_slice(piece);
        }
        if self.descriptor.matches(&body) {
            return Ok(Progress::Complete(body.into()));
        }
        self.refused_body();
        Err(Error::BadMessage {
            reason: format!(
                "snapshot body at index {} does not match its hash",
                self.index
            ),
        })
    }

    /// The body arrived but was refused (a hash mismatch, or it did not decode): drop every
    /// piece and fetch them again.
    pub(crate) fn refused_body(&mut self) {
        self.body_failures += 1;
        self.pieces.clear();
        self.in_flight.clear();
        self.next_piece = 0;
    }

    /// Whether the body failed too often to try again.
    pub(crate) fn exhausted(&self) -> bool {
        self.body_failures >= MAX_BODY_FAILURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    fn download(body: &Body) -> Download {
        Download::new(1, body.index, body.descriptor, Message::default(), 0)
    }

    #[test]
    fn descriptor_round_trips_and_refuses_garbage() {
        let descriptor = Descriptor::of(b"state");
        assert_eq!(
            Descriptor::decode(&descriptor.encode()).unwrap(),
            descriptor
        );
        assert!(Descriptor::decode(b"").is_err());
        let mut trailing = descriptor.encode();
        trailing.push(0);
        assert!(Descriptor::decode(&trailing).is_err());
        let huge = Descriptor {
            body_bytes: MAX_BODY_BYTES + 1,
            ..descriptor
        };
        assert!(Descriptor::decode(&huge.encode()).is_err());
    }

    #[test]
    fn a_body_moves_in_bounded_pieces_in_any_order() {
        let held = Body::new(7, body(3 * SNAPSHOT_PIECE_BYTES + 5));
        assert_eq!(held.descriptor.piece_count(), 4);
        let mut download = download(&held);
        let mut requested = download.requests(0);
        assert_eq!(requested, vec![0, 1, 2, 3]);
        requested.reverse();
        let mut complete = None;
        for piece in requested {
            let bytes = held.piece(piece).unwrap();
            assert!(bytes.len() <= SNAPSHOT_PIECE_BYTES);
            if let Progress::Complete(body) = download.accept(piece, bytes, 1).unwrap() {
                complete = Some(body);
            }
        }
        assert_eq!(complete.unwrap(), held.bytes);
    }

    #[test]
    fn an_empty_body_is_one_empty_piece() {
        let held = Body::new(3, Bytes::new());
        let mut download = download(&held);
        assert_eq!(download.requests(0), vec![0]);
        let piece = held.piece(0).unwrap();
        assert!(matches!(
            download.accept(0, piece, 0).unwrap(),
            Progress::Complete(body) if body.is_empty()
        ));
    }

    #[test]
    fn wrong_pieces_are_refused_and_a_bad_body_is_fetched_again() {
        let held = Body::new(9, body(SNAPSHOT_PIECE_BYTES + 10));
        let mut download = download(&held);
        assert_eq!(download.requests(0), vec![0, 1]);
        assert!(download.accept(2, Bytes::new(), 0).is_err(), "out of range");
        assert!(download.accept(1, body(9), 0).is_err(), "wrong size");
        assert!(matches!(
            download.accept(0, held.piece(0).unwrap(), 0).unwrap(),
            Progress::Pending
        ));
        let mut corrupt = held.piece(1).unwrap().to_vec();
        corrupt[3] ^= 1;
        assert!(
            download.accept(1, corrupt.into(), 0).is_err(),
            "hash mismatch"
        );
        assert!(!download.exhausted());
        // Everything is asked for again, and the good body completes.
        assert_eq!(download.requests(0), vec![0, 1]);
        download.accept(0, held.piece(0).unwrap(), 0).unwrap();
        assert!(matches!(
            download.accept(1, held.piece(1).unwrap(), 0).unwrap(),
            Progress::Complete(_)
        ));
    }

    #[test]
    fn overdue_pieces_are_requested_again_and_silence_stalls() {
        let held = Body::new(1, body(10));
        let mut download = download(&held);
        assert_eq!(download.requests(0), vec![0]);
        assert!(download.requests(PIECE_RETRY_MS - 1).is_empty());
        assert_eq!(download.requests(PIECE_RETRY_MS), vec![0]);
        assert!(!download.stalled(STALL_MS - 1));
        assert!(download.stalled(STALL_MS));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Whatever pieces a peer sends, in whatever order and size, the download never panics
        /// and completes only with the body the descriptor names.
        #[test]
        fn any_piece_sequence_is_survived(
            body_bytes in 0..(2 * SNAPSHOT_PIECE_BYTES + 3),
            steps in proptest::collection::vec((0u32..4, 0u8..4, proptest::prelude::any::<bool>()), 0..12),
        ) {
            let held = Body::new(5, body(body_bytes));
            let mut download = download(&held);
            for (piece, size_choice, corrupt) in steps {
                let mut bytes = held.piece(piece).map(|b| b.to_vec()).unwrap_or_default();
                match size_choice {
                    0 => {}
                    1 => bytes.push(0),
                    2 => bytes.truncate(bytes.len() / 2),
                    _ => bytes.clear(),
                }
                if corrupt && let Some(first) = bytes.first_mut() {
                    *first ^= 1;
                }
                let _ = download.requests(0);
                if let Ok(Progress::Complete(done)) = download.accept(piece, bytes.into(), 0) {
                    proptest::prop_assert!(held.descriptor.matches(&done));
                }
            }
        }
    }

    #[test]
    fn holds_keeps_the_newest_bodies() {
        let mut holds = Holds::default();
        for index in 1..=3 {
            holds.hold(Body::new(index, body(4)));
        }
        assert!(holds.piece(1, 0).is_none());
        assert!(holds.piece(2, 0).is_some());
        assert!(holds.piece(3, 1).is_none(), "beyond the body");
        assert_eq!(holds.latest().unwrap().index, 3);
    }
}
