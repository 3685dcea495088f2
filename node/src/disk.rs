//! An in-memory disk for redb, for tests and the simulator: it outlives the databases opened on
//! it (so a node can be restarted on what it left), keeps what was synced apart from what was
//! only written (so a crash can lose the latter), and can be made to fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::StorageBackend;

/// An in-memory disk that outlives the databases on it: writes land in `live` at once, and
/// until `sync_data` each keeps the bytes it overwrote, so [`MemoryDisk::crash`] can put back
/// exactly what was synced, as a power cut would. One copy of the data plus what changed since the
/// last sync, in pages allocated when first written (redb grows its files in large steps it
/// does not fill at once): a simulator runs a thousand of these. Its writes (and syncs) can be
/// made to fail, and its power cut after a given number of them
/// ([`MemoryDisk::cut_power_after`]), for crash-consistency runs over every cut point.
#[derive(Debug, Clone)]
pub struct MemoryDisk {
    state: Arc<Mutex<DiskState>>,
    /// While set, writes, resizes and syncs fail (an injected I/O error).
    pub failing: Arc<AtomicBool>,
    /// Writes, resizes and syncs still allowed before the power is cut ([`NO_CUT`]: never).
    power_left: Arc<AtomicU64>,
    /// Writes, resizes and syncs done so far.
    ops: Arc<AtomicU64>,
}

impl Default for MemoryDisk {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            failing: Arc::default(),
            power_left: Arc::new(AtomicU64::new(NO_CUT)),
            ops: Arc::default(),
        }
    }
}

/// `power_left` when no cut is planned.
const NO_CUT: u64 = u64::MAX;

const PAGE: usize = 4096;

/// What a failing [`MemoryDisk`]'s writes and syncs report.
pub const INJECTED_FAILURE: &str = "injected write failure";

/// What a [`MemoryDisk`] whose power was cut reports.
pub const POWER_CUT: &str = "power cut";

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
    /// Whether a write, resize or sync may go ahead; counts it if so.
    fn check(&self) -> Result<(), std::io::Error> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other(INJECTED_FAILURE));
        }
        let powered = self
            .power_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                NO_CUT => Some(NO_CUT),
                0 => None,
                left => Some(left - 1),
            })
            .is_ok();
        if !powered {
            self.failing.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other(POWER_CUT));
        }
        self.ops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Cuts the power once `ops` more writes, resizes or syncs have been done: the next one, and
    /// every one after it, fails. Then [`Self::after_crash`] or [`Self::after_torn_crash`] gives
    /// the disk a restarted machine finds.
    pub fn cut_power_after(&self, ops: u64) {
        self.power_left.store(ops, Ordering::SeqCst);
    }

    /// Writes, resizes and syncs done on this disk so far (to choose cut points).
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
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
            ..Self::default()
        }
    }

    /// [`Self::after_crash`], but each write, resize or truncation made since the last sync may
    /// have reached the disk or not, each as `rng` decides, in any order: a power cut on a disk
    /// that reorders what it was not yet told to make durable. Only what was synced is certain.
    pub fn after_torn_crash<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Self {
        self.failing.store(true, Ordering::SeqCst);
        let state = self.state();
        let mut pages = state.live.clone();
        for undo in state.undo.iter().rev() {
            if rand::RngExt::random_bool(rng, 0.5) {
                continue;
            }
            match undo {
                Undo::Bytes(offset, old) => {
                    // A write past a length already put back has nothing left to undo.
                    let end = (*offset + old.len()).min(pages.len);
                    if *offset < end {
                        pages.write(*offset, &old[..end - offset]);
                    }
                }
                Undo::Len(len) => pages.set_len(*len),
            }
        }
        drop(state);
        Self {
            state: Arc::new(Mutex::new(DiskState {
                live: pages,
                undo: Vec::new(),
            })),
            ..Self::default()
        }
    }

    /// Loses every write not yet synced.
    pub fn crash(&self) {
        let mut state = self.state();
        state.live = state.durable();
        state.undo.clear();
    }
}

/// Length of the magic number redb writes at the start of a database it has finished creating.
const REDB_MAGIC_LEN: u64 = 9;

/// Empties a database whose creation a crash interrupted, so that redb creates it again; says
/// whether it did.
///
/// redb creates a database by sizing the file, writing and syncing its structures, and only
/// then writing its magic number, so a crash in between is detectable: the file has a length
/// but zeros where the magic goes. redb then refuses it as "not a redb database", and a node
/// whose machine lost power while it first started could never start again. Such a file never
/// held a commit (every commit goes through a header that already carries the magic), so
/// emptying it loses nothing. A file with anything else there is left alone: not ours to erase.
pub fn discard_unfinished_database(backend: &impl StorageBackend) -> std::io::Result<bool> {
    let len = backend.len()?;
    if len == 0 {
        return Ok(false);
    }
    let mut magic = [0u8; REDB_MAGIC_LEN as usize];
    let readable = len.min(REDB_MAGIC_LEN) as usize;
    backend.read(0, &mut magic[..readable])?;
    if magic.iter().any(|&byte| byte != 0) {
        return Ok(false);
    }
    backend.set_len(0)?;
    backend.sync_data()?;
    Ok(true)
}

/// [`discard_unfinished_database`] for the database file at `path`, if there is one.
pub fn discard_unfinished_database_file(path: &std::path::Path) -> std::io::Result<bool> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    // Another process holding the file (a second node started on the same directory, perhaps
    // creating it this moment) decides for itself; this one leaves the file alone.
    if file.try_lock().is_err() {
        return Ok(false);
    }
    let backend = redb::backends::FileBackend::new(file).map_err(|error| match error {
        redb::DatabaseError::Storage(redb::StorageError::Io(error)) => error,
        other => std::io::Error::other(other.to_string()),
    })?;
    discard_unfinished_database(&backend)
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

    #[test]
    fn a_power_cut_fails_every_later_write_and_a_torn_crash_keeps_any_unsynced_subset() {
        let disk = MemoryDisk::default();
        disk.write(0, &[0u8; 300]).unwrap_or(());
        disk.sync_data().unwrap_or(());
        disk.cut_power_after(3);
        for region in 0..3u8 {
            assert!(
                disk.write(u64::from(region) * 100, &[region + 1; 100])
                    .is_ok()
            );
        }
        assert!(
            disk.sync_data().is_err(),
            "the fourth operation meets the cut"
        );
        assert!(disk.write(0, b"late").is_err());
        assert_eq!(disk.ops(), 5, "the first write and sync, then three writes");
        let mut seen = [[false; 2]; 3];
        for seed in 0..64 {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
            let torn = disk.after_torn_crash(&mut rng);
            let mut bytes = vec![0u8; 300];
            torn.read(0, &mut bytes).unwrap_or(());
            for region in 0..3usize {
                let part = &bytes[region * 100..(region + 1) * 100];
                let written = part.iter().all(|&b| b == region as u8 + 1);
                assert!(
                    written || part.iter().all(|&b| b == 0),
                    "a region is torn inside"
                );
                seen[region][usize::from(written)] = true;
            }
        }
        assert_eq!(
            seen, [[true; 2]; 3],
            "each unsynced write was both kept and lost"
        );
    }

    #[test]
    fn only_a_database_file_without_its_magic_number_is_emptied() {
        let dir = std::env::temp_dir().join(format!("bt-unborn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or(());
        let unborn = dir.join("unborn.redb");
        std::fs::write(&unborn, vec![0u8; 8192]).unwrap_or(());
        let foreign = dir.join("foreign.redb");
        std::fs::write(&foreign, b"not a database of ours").unwrap_or(());
        assert!(matches!(
            discard_unfinished_database_file(&unborn),
            Ok(true)
        ));
        assert_eq!(std::fs::metadata(&unborn).map(|m| m.len()).ok(), Some(0));
        assert!(matches!(
            discard_unfinished_database_file(&foreign),
            Ok(false)
        ));
        assert_eq!(std::fs::metadata(&foreign).map(|m| m.len()).ok(), Some(22));
        assert!(matches!(
            discard_unfinished_database_file(&dir.join("absent.redb")),
            Ok(false)
        ));
        // What it emptied, redb creates again.
        assert!(redb::Database::create(&unborn).is_ok());
        std::fs::remove_dir_all(&dir).unwrap_or(());
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
