//! Raft messages on the wire. raft-rs speaks protobuf types; parsing protobuf from peers is
//! unsafe with protobuf 2.28 (RUSTSEC-2024-0437, stack overflow on crafted input), so replicas
//! exchange these serde mirrors in postcard instead and convert at the edge. Conversion checks the
//! enum fields, so a peer cannot smuggle in an unknown message or entry type.

use bytes::Bytes;
use protobuf::{ProtobufEnum, RepeatedField, SingularPtrField};
use raft::eraftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};

use crate::error::Error;

/// A message between replicas, in a form safe to decode from untrusted bytes: a Raft message, or
/// one step of a snapshot transfer (see the `snapshot` module).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WireMessage(pub(crate) Envelope);

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Envelope {
    Raft(Box<RaftMessage>),
    Transfer {
        from: u64,
        to: u64,
        transfer: Transfer,
    },
}

/// A snapshot body moving in pieces of at most `SNAPSHOT_PIECE_BYTES`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Transfer {
    /// Receiver → sender: send piece `piece` of the body of the snapshot at `index`.
    Request { index: u64, piece: u32 },
    /// Sender → receiver: one piece.
    Piece {
        index: u64,
        piece: u32,
        bytes: Bytes,
    },
    /// Sender → receiver: that body is no longer held (a newer snapshot replaced it).
    Unavailable { index: u64 },
    /// Receiver → sender: the transfer failed; offer a snapshot again.
    Abort { index: u64 },
}

/// A Raft message, mirrored field by field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RaftMessage {
    msg_type: i32,
    to: u64,
    from: u64,
    term: u64,
    log_term: u64,
    index: u64,
    entries: Vec<WireEntry>,
    commit: u64,
    commit_term: u64,
    snapshot: Option<WireSnapshot>,
    request_snapshot: u64,
    reject: bool,
    reject_hint: u64,
    context: Vec<u8>,
    deprecated_priority: u64,
    priority: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct WireEntry {
    pub(crate) entry_type: i32,
    pub(crate) term: u64,
    pub(crate) index: u64,
    /// `Bytes`, as in raft-rs's `Entry`: a block's worth of transactions is shared, not copied,
    /// between the log, the store and the messages to each follower. Encodes like `Vec<u8>`.
    pub(crate) data: Bytes,
    pub(crate) context: Bytes,
    pub(crate) sync_log: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct WireSnapshot {
    pub(crate) data: Vec<u8>,
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) conf_state: WireConfState,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct WireConfState {
    pub(crate) voters: Vec<u64>,
    pub(crate) learners: Vec<u64>,
    pub(crate) voters_outgoing: Vec<u64>,
    pub(crate) learners_next: Vec<u64>,
    pub(crate) auto_leave: bool,
}

impl WireMessage {
    pub(crate) fn transfer(from: u64, to: u64, transfer: Transfer) -> Self {
        Self(Envelope::Transfer { from, to, transfer })
    }

    /// Raft id of the recipient.
    pub fn recipient(&self) -> u64 {
        match &self.0 {
            Envelope::Raft(raft) => raft.to,
            Envelope::Transfer { to, .. } => *to,
        }
    }

    /// Raft id of the sender.
    pub fn sender(&self) -> u64 {
        match &self.0 {
            Envelope::Raft(raft) => raft.from,
            Envelope::Transfer { from, .. } => *from,
        }
    }

    /// What the message is, for logs and tests: `proposal` (Raft's `MsgPropose`: submissions a
    /// follower forwards to its leader), `raft` (any other Raft message), `snapshot-offer`
    /// (Raft's `MsgSnapshot`, carrying a descriptor), `snapshot-request`, `snapshot-piece`,
    /// `snapshot-unavailable` or `snapshot-abort`.
    pub fn kind(&self) -> &'static str {
        match &self.0 {
            Envelope::Raft(raft) if raft.msg_type == MessageType::MsgSnapshot.value() => {
                "snapshot-offer"
            }
            Envelope::Raft(raft) if raft.msg_type == MessageType::MsgPropose.value() => "proposal",
            Envelope::Raft(_) => "raft",
            Envelope::Transfer { transfer, .. } => match transfer {
                Transfer::Request { .. } => "snapshot-request",
                Transfer::Piece { .. } => "snapshot-piece",
                Transfer::Unavailable { .. } => "snapshot-unavailable",
                Transfer::Abort { .. } => "snapshot-abort",
            },
        }
    }

    /// Postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        postcard::from_bytes(bytes).map_err(|e| Error::BadMessage {
            reason: e.to_string(),
        })
    }
}

impl From<Message> for WireMessage {
    fn from(message: Message) -> Self {
        Self(Envelope::Raft(Box::new(RaftMessage::from(message))))
    }
}

impl From<Message> for RaftMessage {
    fn from(mut message: Message) -> Self {
        Self {
            msg_type: message.get_msg_type().value(),
            to: message.to,
            from: message.from,
            term: message.term,
            log_term: message.log_term,
            index: message.index,
            entries: message
                .take_entries()
                .into_iter()
                .map(WireEntry::from)
                .collect(),
            commit: message.commit,
            commit_term: message.commit_term,
            snapshot: message.snapshot.take().map(WireSnapshot::from),
            request_snapshot: message.request_snapshot,
            reject: message.reject,
            reject_hint: message.reject_hint,
            context: message.context.to_vec(),
            deprecated_priority: message.deprecated_priority,
            priority: message.priority,
        }
    }
}

impl TryFrom<RaftMessage> for Message {
    type Error = Error;

    fn try_from(wire: RaftMessage) -> Result<Self, Error> {
        let msg_type = MessageType::from_i32(wire.msg_type).ok_or_else(|| Error::BadMessage {
            reason: format!("unknown message type {}", wire.msg_type),
        })?;
        let entries = wire
            .entries
            .into_iter()
            .map(Entry::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let mut message = Message::default();
        message.set_msg_type(msg_type);
        message.to = wire.to;
        message.from = wire.from;
        message.term = wire.term;
        message.log_term = wire.log_term;
        message.index = wire.index;
        message.entries = RepeatedField::from_vec(entries);
        message.commit = wire.commit;
        message.commit_term = wire.commit_term;
        message.snapshot = SingularPtrField::from_option(wire.snapshot.map(Snapshot::from));
        message.request_snapshot = wire.request_snapshot;
        message.reject = wire.reject;
        message.reject_hint = wire.reject_hint;
        message.context = wire.context.into();
        message.deprecated_priority = wire.deprecated_priority;
        message.priority = wire.priority;
        Ok(message)
    }
}

impl From<Entry> for WireEntry {
    fn from(entry: Entry) -> Self {
        Self {
            entry_type: entry.get_entry_type().value(),
            term: entry.term,
            index: entry.index,
            data: entry.data,
            context: entry.context,
            sync_log: entry.sync_log,
        }
    }
}

impl TryFrom<WireEntry> for Entry {
    type Error = Error;

    fn try_from(wire: WireEntry) -> Result<Self, Error> {
        let entry_type = EntryType::from_i32(wire.entry_type).ok_or_else(|| Error::BadMessage {
            reason: format!("unknown entry type {}", wire.entry_type),
        })?;
        let mut entry = Entry::default();
        entry.set_entry_type(entry_type);
        entry.term = wire.term;
        entry.index = wire.index;
        entry.data = wire.data;
        entry.context = wire.context;
        entry.sync_log = wire.sync_log;
        Ok(entry)
    }
}

impl From<ConfState> for WireConfState {
    fn from(conf: ConfState) -> Self {
        Self {
            voters: conf.voters,
            learners: conf.learners,
            voters_outgoing: conf.voters_outgoing,
            learners_next: conf.learners_next,
            auto_leave: conf.auto_leave,
        }
    }
}

impl From<WireConfState> for ConfState {
    fn from(wire: WireConfState) -> Self {
        ConfState {
            voters: wire.voters,
            learners: wire.learners,
            voters_outgoing: wire.voters_outgoing,
            learners_next: wire.learners_next,
            auto_leave: wire.auto_leave,
            ..ConfState::default()
        }
    }
}

impl From<Snapshot> for WireSnapshot {
    fn from(mut snapshot: Snapshot) -> Self {
        let mut metadata = snapshot.take_metadata();
        Self {
            data: snapshot.data.to_vec(),
            index: metadata.index,
            term: metadata.term,
            conf_state: metadata.take_conf_state().into(),
        }
    }
}

impl From<WireSnapshot> for Snapshot {
    fn from(wire: WireSnapshot) -> Self {
        let mut metadata = SnapshotMetadata {
            index: wire.index,
            term: wire.term,
            ..SnapshotMetadata::default()
        };
        metadata.set_conf_state(wire.conf_state.into());
        let mut snapshot = Snapshot {
            data: wire.data.into(),
            ..Snapshot::default()
        };
        snapshot.set_metadata(metadata);
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(msg_type: i32, entries: Vec<(u64, Vec<u8>)>, snapshot: bool) -> RaftMessage {
        RaftMessage {
            msg_type,
            to: 2,
            from: 1,
            term: 3,
            log_term: 3,
            index: 9,
            entries: entries
                .into_iter()
                .map(|(index, data)| WireEntry {
                    entry_type: 0,
                    term: 3,
                    index,
                    data: data.into(),
                    context: Bytes::new(),
                    sync_log: false,
                })
                .collect(),
            commit: 8,
            commit_term: 3,
            snapshot: snapshot.then(|| WireSnapshot {
                data: vec![1, 2, 3],
                index: 7,
                term: 2,
                conf_state: WireConfState {
                    voters: vec![1, 2, 3],
                    learners: vec![4],
                    ..WireConfState::default()
                },
            }),
            request_snapshot: 0,
            reject: false,
            reject_hint: 0,
            context: vec![],
            deprecated_priority: 0,
            priority: 0,
        }
    }

    proptest! {
        #[test]
        fn raft_conversion_round_trips(
            msg_type in 0i32..=18,
            entries in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
            snapshot in any::<bool>(),
        ) {
            let wire = message(msg_type, entries, snapshot);
            let enveloped = WireMessage(Envelope::Raft(Box::new(wire.clone())));
            let decoded = WireMessage::decode(&enveloped.encode()).unwrap();
            prop_assert_eq!(&decoded, &enveloped);
            let raft = Message::try_from(wire.clone()).unwrap();
            prop_assert_eq!(WireMessage::from(raft), enveloped);
        }

        #[test]
        fn transfers_round_trip(
            index in any::<u64>(),
            piece in any::<u32>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            for transfer in [
                Transfer::Request { index, piece },
                Transfer::Piece { index, piece, bytes: bytes.clone().into() },
                Transfer::Unavailable { index },
                Transfer::Abort { index },
            ] {
                let wire = WireMessage::transfer(1, 2, transfer);
                let decoded = WireMessage::decode(&wire.encode()).unwrap();
                prop_assert_eq!(decoded.sender(), 1);
                prop_assert_eq!(decoded.recipient(), 2);
                prop_assert_eq!(&decoded, &wire);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(WireMessage(Envelope::Raft(wire))) = WireMessage::decode(&bytes) {
                let _ = Message::try_from(*wire);
            }
        }
    }

    #[test]
    fn unknown_types_are_refused() {
        assert!(Message::try_from(message(99, vec![], false)).is_err());
        let mut bad_entry = message(3, vec![(1, vec![])], false);
        bad_entry.entries[0].entry_type = 7;
        assert!(Message::try_from(bad_entry).is_err());
    }
}
