//! Benchmarks for BlockTorrent. The criterion micro-benchmarks and the macro drivers live in
//! `benches/`; this library holds only the fixtures they share, so heavy benchmark-only
//! dependencies never enter the normal build.

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use keyshare::SealingSecretKey;
use ledger::{Genesis, Member, MemberId, Policy, Role};
use rand_core::CryptoRng;

/// A genesis for chain `"bench"` in which every member holds one of `keys`, all vote, and all
/// (participants) may request access, so load can come from any member.
pub fn genesis<R: CryptoRng + ?Sized>(keys: &[SigningKey], rng: &mut R) -> Genesis {
    Genesis {
        chain_id: "bench".into(),
        members: keys
            .iter()
            .enumerate()
            .map(|(i, key)| Member {
                name: format!("m{i}"),
                id: MemberId::from(key.verifying_key()),
                sealing_key: SealingSecretKey::generate(rng).public_key(),
                role: Role::Participant,
            })
            .collect(),
        voters: keys.len() as u32,
        policy: Policy {
            request_roles: BTreeSet::from([Role::Participant]),
            reason_max_bytes: 1024,
        },
    }
}

/// A redb backend in memory whose pages are allocated when first written. redb grows its file by
/// doubling; redb's own `InMemoryBackend` zero-fills the whole new length at once (tens of
/// milliseconds at tens of MiB), which a file backend does not pay (the file is sparse). The
/// benchmarks measure the ledger, not that artefact.
#[derive(Debug, Default)]
pub struct SparseMemoryBackend {
    inner: std::sync::RwLock<Sparse>,
}

#[derive(Debug, Default)]
struct Sparse {
    len: u64,
    pages: Vec<Option<Box<[u8]>>>,
}

const PAGE_BYTES: u64 = 64 * 1024;

impl SparseMemoryBackend {
    fn out_of_range() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "beyond the end")
    }
}

/// Splits `offset..offset + len` into (page, offset in page, bytes) pieces.
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut at = offset;
    let end = offset + len as u64;
    std::iter::from_fn(move || {
        (at < end).then(|| {
            let page = (at / PAGE_BYTES) as usize;
            let within = (at % PAGE_BYTES) as usize;
            let take = (PAGE_BYTES as usize - within).min((end - at) as usize);
            at += take as u64;
            (page, within, take)
        })
    })
}

impl redb::StorageBackend for SparseMemoryBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.inner.read().map_err(|_| Self::out_of_range())?.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let inner = self.inner.read().map_err(|_| Self::out_of_range())?;
        if offset + out.len() as u64 > inner.len {
            return Err(Self::out_of_range());
        }
        let mut filled = 0;
        for (page, within, take) in pieces(offset, out.len()) {
            let target = &mut out[filled..filled + take];
            match inner.pages.get(page).and_then(Option::as_ref) {
                Some(bytes) => target.copy_from_slice(&bytes[within..within + take]),
                None => target.fill(0),
            }
            filled += take;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut inner = self.inner.write().map_err(|_| Self::out_of_range())?;
        inner.len = len;
        inner.pages.truncate(len.div_ceil(PAGE_BYTES) as usize);
        // Like a file: bytes cut off and later grown back read as zeros.
        let within = (len % PAGE_BYTES) as usize;
        if let Some(Some(last)) = inner.pages.last_mut().filter(|_| within != 0) {
            last[within..].fill(0);
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut inner = self.inner.write().map_err(|_| Self::out_of_range())?;
        if offset + data.len() as u64 > inner.len {
            return Err(Self::out_of_range());
        }
        let mut taken = 0;
        for (page, within, take) in pieces(offset, data.len()) {
            if inner.pages.len() <= page {
                inner.pages.resize_with(page + 1, || None);
            }
            let bytes = inner.pages[page]
                .get_or_insert_with(|| vec![0; PAGE_BYTES as usize].into_boxed_slice());
            bytes[within..within + take].copy_from_slice(&data[taken..taken + take]);
            taken += take;
        }
        Ok(())
    }
}
