//! The in-memory face of the Raft log that raft-rs reads through its `Storage` trait. It mirrors
//! raft-rs's `MemStorage` semantics but also keeps the snapshot *data* (MemStorage serves empty
//! snapshots), so a lagging replica receives the contract state. Durability is the replica's job:
//! it writes the same changes to the [`crate::LedgerStore`] before acknowledging them.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

#[derive(Default)]
pub(crate) struct LogCore {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot; its metadata index/term name the entry before `entries[0]`.
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl LogCore {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |entry| entry.index)
    }

    pub(crate) fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub(crate) fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    pub(crate) fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Appends entries, replacing any conflicting suffix. Entries must start at or after the
    /// first index and leave no gap (raft-rs guarantees both for what its `Ready` hands out).
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index >= self.first_index(),
            "append below the snapshot"
        );
        assert!(first.index <= self.last_index() + 1, "append leaves a gap");
        let keep = (first.index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Installs a snapshot: the log restarts after it.
    pub(crate) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let metadata = snapshot.get_metadata();
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.hard_state.commit = self.hard_state.commit.max(metadata.index);
        self.conf_state = metadata.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Records a snapshot taken at `index` (which must be in the log) and drops the entries up to
    /// and including it.
    pub(crate) fn compact_to_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        assert!(index <= self.last_index(), "snapshot beyond the log");
        if index < self.first_index() {
            return;
        }
        let drop = (index + 1 - self.first_index()) as usize;
        self.entries.drain(..drop);
        self.snapshot = snapshot;
    }

    pub(crate) fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index() {
            return Some(self.snapshot.get_metadata().term);
        }
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(offset as usize).map(|entry| entry.term)
    }
}

/// Shared handle: raft-rs owns one clone inside its `RawNode`, the replica keeps another to write.
#[derive(Clone, Default)]
pub(crate) struct LogStore(Arc<RwLock<LogCore>>);

impl LogStore {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, LogCore> {
        // A poisoned lock means a panic mid-update on this single-threaded replica; the state is
        // not trustworthy then, and continuing would be worse than stopping.
        self.0.read().unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, LogCore> {
        self.0.write().unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.read();
        Ok(RaftState::new(
            core.hard_state.clone(),
            core.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.read();
        if low < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= core.last_index() + 1, "entries beyond the log");
        let offset = core.first_index();
        let mut entries = core.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let core = self.read();
        if index < core.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        core.term_of(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let core = self.read();
        if core.snapshot_index() < request_index || core.snapshot_index() == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(core.snapshot.clone())
    }
}
