//! An in-memory disk for redb, for tests and the simulator: it outlives the databases opened on
//! it (so a node can be restarted on what it left), keeps what was synced apart from what was
//! only written (so a crash can lose the latter), and can be made to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::StorageBackend;

/// An in-memory disk that outlives the databases on it: writes land in `live` at once, and
/// until `sync_data` each keeps the bytes it overwrote, so [`MemoryDisk::crash`] can put back
/// exactly what was synced, as a power cut would. One copy of the data plus what changed since the
/// last sync, in pages allocated when first written (redb grows its files in large steps it
/// does not fill at once): a simulator runs a thousand of these. Its writes (and syncs) can be
/// made to fail.
#[derive(Debug, Clone, Default)]
pub struct MemoryDisk {
    state: Arc<Mutex<DiskState>>,
    /// While set, writes, resizes and syncs fail (an injected I/O error).
    pub failing: Arc<AtomicBool>,
}

const PAGE: usize = 4096;

/// What a failing [`MemoryDisk`]'s writes and syncs report.
pub const INJECTED_FAILURE: &str = "injected write failure";

#[derive(Debug, Default)]
struct DiskState {
    live: Pages,
    /// How to go back from `live` to what was last synced, newest last.
    undo: Vec<Undo>,
}

/// A file as pages: one never written reads as zeros and takes no memory.
#[derive(Clone, Debug, Default)]
struct Pages {
    len: usize,
    pages: Vec<Option<Box<[u8; PAGE]>>>,
}

#[derive(Debug)]
enum Undo {
    /// Put these bytes back at this offset.
    Bytes(usize, Vec<u8>),
    /// Set the length back to this.
    Len(usize),
}

impl Pages {
    fn read(&self, offset: usize, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = offset + done;
            let (page, within) = (at / PAGE, at % PAGE);
            let take = (PAGE - within).min(out.len() - done);
            let target = &mut out[done..done + take];
            match self.pages.get(page).and_then(Option::as_ref) {
                Some(bytes) => target.copy_from_slice(&bytes[within..within + take]),
                None => target.fill(0),
            }
            done += take;
        }
    }

    /// Writes inside the current length.
    fn write(&mut self, offset: usize, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let at = offset + done;
            let (page, within) = (at / PAGE, at % PAGE);
            let take = (PAGE - within).min(data.len() - done);
            let bytes = self.pages[page].get_or_insert_with(|| Box::new([0; PAGE]));
            bytes[within..within + take].copy_from_slice(&data[done..done + take]);
            done += take;
        }
    }

    fn set_len(&mut self, len: usize) {
        if len < self.len {
            // What lies past the end must read as zeros if the file grows again.
            if let Some(Some(bytes)) = self.pages.get_mut(len / PAGE) {
                bytes[len % PAGE..].fill(0);
            }
        }
        self.pages.resize(len.div_ceil(PAGE), None);
        self.len = len;
    }
}

impl DiskState {
    /// Resizes `live`, remembering how to undo it.
    fn set_len(&mut self, len: usize) {
        let old = self.live.len;
        if len < old {
            let mut tail = vec![0; old - len];
            self.live.read(len, &mut tail);
            self.undo.push(Undo::Bytes(len, tail));
        }
        self.undo.push(Undo::Len(old));
        self.live.set_len(len);
    }

    /// What was synced last.
    fn durable(&self) -> Pages {
        let mut pages = self.live.clone();
        for undo in self.undo.iter().rev() {
            match undo {
                Undo::Bytes(offset, old) => pages.write(*offset, old),
                Undo::Len(len) => pages.set_len(*len),
            }
        }
        pages
    }
}

impl MemoryDisk {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other(INJECTED_FAILURE));
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
        let durable = self.state().durable();
        Self {
            state: Arc::new(Mutex::new(DiskState {
                live: durable,
                undo: Vec::new(),
            })),
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Loses every write not yet synced.
    pub fn crash(&self) {
        let mut state = self.state();
        state.live = state.durable();
        state.undo.clear();
    }
}

impl StorageBackend for MemoryDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.state().live.len as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let state = self.state();
        if offset as usize + out.len() > state.live.len {
            return Err(std::io::Error::other("read past the end"));
        }
        state.live.read(offset as usize, out);
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.state().set_len(len as usize);
        Ok(())
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.state().undo.clear();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        let mut state = self.state();
        let (start, end) = (offset as usize, offset as usize + data.len());
        if state.live.len < end {
            state.set_len(end);
        }
        let mut old = vec![0; data.len()];
        state.live.read(start, &mut old);
        state.undo.push(Undo::Bytes(start, old));
        state.live.write(start, data);
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

    #[derive(Debug, Clone)]
    enum Op {
        Write(u16, Vec<u8>),
        SetLen(u16),
        Sync,
        Crash,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u16..20_000, proptest::collection::vec(any::<u8>(), 1..9_000))
                .prop_map(|(offset, data)| Op::Write(offset, data)),
            1 => (0u16..24_000).prop_map(Op::SetLen),
            2 => Just(Op::Sync),
            1 => Just(Op::Crash),
        ]
    }

    fn contents(disk: &MemoryDisk) -> Vec<u8> {
        let mut bytes = vec![0; disk.len().unwrap_or(0) as usize];
        disk.read(0, &mut bytes).unwrap_or(());
        bytes
    }

    proptest::proptest! {
        /// Against a model that keeps two full copies (live and synced): reads see every write,
        /// and a crash leaves exactly what was synced.
        #[test]
        fn a_crash_keeps_exactly_what_was_synced(ops in proptest::collection::vec(op(), 1..60)) {
            let disk = MemoryDisk::default();
            let (mut live, mut synced) = (Vec::new(), Vec::new());
            for op in ops {
                match op {
                    Op::Write(offset, data) => {
                        disk.write(u64::from(offset), &data).unwrap_or(());
                        let end = offset as usize + data.len();
                        if live.len() < end {
                            live.resize(end, 0);
                        }
                        live[offset as usize..end].copy_from_slice(&data);
                    }
                    Op::SetLen(len) => {
                        disk.set_len(u64::from(len)).unwrap_or(());
                        live.resize(len as usize, 0);
                    }
                    Op::Sync => {
                        disk.sync_data().unwrap_or(());
                        synced.clone_from(&live);
                    }
                    Op::Crash => {
                        disk.crash();
                        live.clone_from(&synced);
                    }
                }
                proptest::prop_assert_eq!(contents(&disk), live.clone());
            }
            proptest::prop_assert_eq!(contents(&disk.after_crash()), synced);
        }
    }
}
