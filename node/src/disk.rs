//! An in-memory disk for redb, for tests and the simulator: it outlives the databases opened on
//! it (so a node can be restarted on what it left), keeps what was synced apart from what was
//! only written (so a crash can lose the latter), and can be made to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::StorageBackend;

/// An in-memory disk that outlives the databases on it: writes land in `live`; `sync_data`
/// makes them durable; [`MemoryDisk::crash`] throws away everything not yet synced, as a power cut
/// would. Its writes (and syncs) can be made to fail.
#[derive(Debug, Clone, Default)]
pub struct MemoryDisk {
    state: Arc<Mutex<DiskState>>,
    /// While set, writes, resizes and syncs fail (an injected I/O error).
    pub failing: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct DiskState {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes and resizes since the last sync, in order.
    unsynced: Vec<Unsynced>,
}

#[derive(Debug)]
enum Unsynced {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

impl MemoryDisk {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected write failure"));
        }
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new disk holding what this one synced, as the machine finds it after a power cut. This
    /// one stays with whatever still holds it (a dying process's databases) and is failed, so
    /// nothing written to it afterwards reaches the new one.
    pub fn after_crash(&self) -> Self {
        self.failing.store(true, Ordering::SeqCst);
        let durable = self.state().durable.clone();
        Self {
            state: Arc::new(Mutex::new(DiskState {
                live: durable.clone(),
                durable,
                unsynced: Vec::new(),
            })),
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Loses every write not yet synced.
    pub fn crash(&self) {
        let mut state = self.state();
        state.live = state.durable.clone();
        state.unsynced.clear();
    }
}

fn write_at(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(data);
}

impl StorageBackend for MemoryDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.state().live.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let state = self.state();
        let end = offset as usize + out.len();
        let bytes = state
            .live
            .get(offset as usize..end)
            .ok_or_else(|| std::io::Error::other("read past the end"))?;
        out.copy_from_slice(bytes);
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        let mut state = self.state();
        state.live.resize(len as usize, 0);
        state.unsynced.push(Unsynced::SetLen(len));
        Ok(())
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        let mut state = self.state();
        let DiskState {
            durable, unsynced, ..
        } = &mut *state;
        for change in unsynced.drain(..) {
            match change {
                Unsynced::Write(offset, data) => write_at(durable, offset, &data),
                Unsynced::SetLen(len) => durable.resize(len as usize, 0),
            }
        }
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        let mut state = self.state();
        write_at(&mut state.live, offset, data);
        state.unsynced.push(Unsynced::Write(offset, data.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_crash_only_synced_bytes_remain_and_the_old_disk_is_cut_off() {
        let disk = MemoryDisk::default();
        disk.write(0, b"synced").unwrap_or(());
        disk.sync_data().unwrap_or(());
        disk.write(0, b"SYN").unwrap_or(());
        disk.write(6, b"+tail").unwrap_or(());
        let restarted = disk.after_crash();
        let mut read = vec![0u8; 6];
        restarted.read(0, &mut read).unwrap_or(());
        assert_eq!(&read, b"synced");
        assert_eq!(restarted.len().unwrap_or(0), 6);
        // The dying process's late writes go nowhere.
        assert!(disk.write(0, b"late").is_err());
        restarted.read(0, &mut read).unwrap_or(());
        assert_eq!(&read, b"synced");
    }
}
