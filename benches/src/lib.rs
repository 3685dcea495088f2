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
