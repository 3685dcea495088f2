//! Signature verdicts shared by the replicas of one consortium that run in one process.
//!
//! In the simulator a thousand replicas apply the same blocks, and each would check the same
//! signatures: the work grows with the square of the consortium while telling nothing new,
//! since a verdict is a pure function of the transaction's bytes (ZIP-215, see `signature`:
//! never of the batch it is checked in) and of the genesis (chain id and member keys). So the
//! first replica to find a transaction's signature good records its id here and the others
//! skip the check. Likewise the member keys: the first replica to open decodes them for all.
//!
//! Why this cannot hide a bug: a [`TxId`] is the SHA3-256 of the whole encoded transaction
//! (sender, nonce, body, signature), so a recorded id stands for exactly the bytes that were
//! checked, by the same code a replica runs alone; the memo is bound to one genesis and refuses
//! any other ([`SharedVerdicts::serves`]); only good verdicts are recorded, so a bad signature
//! is checked, and rejected, by every replica; and everything after the verdict (nonces,
//! contracts, block hashes) each replica still computes for itself. A production node runs one
//! replica per process and never shares.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use sha3::{Digest, Sha3_256};

use crate::contract::{MemberKeys, checked_member_keys};
use crate::member::Genesis;
use crate::tx::TxId;

/// Good verdicts kept; the oldest are forgotten first (a forgotten one is checked again).
const CAPACITY: usize = 1 << 20;

/// Ids of transactions whose signatures a replica of this genesis found good. Cloning shares it.
#[derive(Clone)]
pub struct SharedVerdicts {
    genesis: [u8; 32],
    good: Arc<Mutex<Good>>,
    /// The genesis's member keys, decoded by the first replica to open (or why they cannot be).
    keys: Arc<OnceLock<Result<MemberKeys, String>>>,
}

#[derive(Default)]
struct Good {
    ids: HashSet<TxId>,
    order: VecDeque<TxId>,
}

impl std::fmt::Debug for SharedVerdicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedVerdicts")
            .field("good", &self.lock().ids.len())
            .finish()
    }
}

fn fingerprint(genesis: &Genesis) -> [u8; 32] {
    let encoded = postcard::to_allocvec(genesis).unwrap_or_default();
    Sha3_256::digest(encoded).into()
}

impl SharedVerdicts {
    /// An empty memo for the replicas of `genesis`.
    pub fn new(genesis: &Genesis) -> Self {
        Self {
            genesis: fingerprint(genesis),
            good: Arc::default(),
            keys: Arc::default(),
        }
    }

    /// Whether this memo was made for `genesis` (a verdict depends on its chain id and keys).
    pub fn serves(&self, genesis: &Genesis) -> bool {
        self.genesis == fingerprint(genesis)
    }

    /// How many good verdicts are held.
    pub fn len(&self) -> usize {
        self.lock().ids.len()
    }

    /// Whether no verdict is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Good> {
        self.good.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The member keys of the genesis this memo serves, decoded once for all its replicas.
    pub(crate) fn member_keys(&self, genesis: &Genesis) -> Result<MemberKeys, String> {
        self.keys
            .get_or_init(|| checked_member_keys(genesis))
            .clone()
    }

    /// Whether a replica found the signature of transaction `id` good.
    pub fn holds(&self, id: &TxId) -> bool {
        self.lock().ids.contains(id)
    }

    pub(crate) fn record_good(&self, ids: impl IntoIterator<Item = TxId>) {
        let mut good = self.lock();
        for id in ids {
            if good.ids.insert(id) {
                good.order.push_back(id);
            }
        }
        while good.order.len() > CAPACITY {
            if let Some(oldest) = good.order.pop_front() {
                good.ids.remove(&oldest);
            }
        }
    }
}
