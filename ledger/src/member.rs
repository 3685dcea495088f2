//! Members, roles and the genesis file that fixes them.

use std::collections::BTreeSet;

use ed25519_dalek::VerifyingKey;
use keyshare::SealingPublicKey;

use crate::error::Error;

/// A member's identity: its ed25519 public key, printed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId([u8; 32]);
keyshare::impl_bytes32!(MemberId);

impl MemberId {
    /// The ed25519 verifying key, if the bytes are a valid point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl From<VerifyingKey> for MemberId {
    fn from(key: VerifyingKey) -> Self {
        Self(key.to_bytes())
    }
}

/// What a member may do beyond storing its own files and holding shares.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An ordinary participant (supplier, transporter, retailer).
    Participant,
    /// May file access requests and recreate files.
    Auditor,
}

/// One consortium member as listed in the genesis file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Human-readable name, unique in the consortium.
    pub name: String,
    /// ed25519 key: signs transactions, identifies the node on the overlay.
    pub id: MemberId,
    /// X25519 key shares are sealed to.
    pub sealing_key: SealingPublicKey,
    /// What the member may do.
    pub role: Role,
}

/// Contract parameters fixed at genesis.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Roles allowed to file access requests.
    pub request_roles: BTreeSet<Role>,
    /// Longest free-text reason accepted, in bytes.
    pub reason_max_bytes: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            request_roles: BTreeSet::from([Role::Auditor]),
            reason_max_bytes: 1024,
        }
    }
}

/// The chain's first fact: who the members are and which of them vote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Genesis {
    /// Distinguishes this chain's signatures from any other's.
    pub chain_id: String,
    /// Members in a fixed order; a member's Raft id is its position + 1.
    pub members: Vec<Member>,
    /// How many members (the first ones) vote in Raft; the rest are learners.
    pub voters: u32,
    /// Contract policy.
    pub policy: Policy,
}

/// Largest consortium the ledger accepts.
pub const MAX_MEMBERS: usize = 1000;

impl Genesis {
    /// Checks the genesis for internal consistency: non-empty, bounded, unique names and keys,
    /// ed25519 keys that decode and are not of small order (under ZIP-215's cofactored rule any
    /// signature verifies for a small-order key), `1 <= voters <= members`.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_structure()?;
        crate::contract::checked_member_keys(self)
            .map(|_| ())
            .map_err(|reason| Error::InvalidGenesis { reason })
    }

    /// [`Self::validate`] but for the keys, which [`crate::contract::checked_member_keys`]
    /// checks while decoding them.
    pub(crate) fn validate_structure(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::InvalidGenesis { reason });
        if self.chain_id.is_empty() {
            return invalid("chain id is empty".into());
        }
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return invalid(format!("member count must be 1..={MAX_MEMBERS}"));
        }
        if self.voters == 0 || self.voters as usize > self.members.len() {
            return invalid(format!(
                "voters must be 1..={}, got {}",
                self.members.len(),
                self.voters
            ));
        }
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for member in &self.members {
            if !names.insert(member.name.as_str()) {
                return invalid(format!("member name {} appears twice", member.name));
            }
            if !ids.insert(member.id) {
                return invalid(format!("member key {} appears twice", member.id));
            }
        }
        Ok(())
    }

    /// The member with this key.
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == *id)
    }

    /// Raft ids (1-based) of the voters and of the learners.
    pub fn raft_membership(&self) -> (Vec<u64>, Vec<u64>) {
        let all = 1..=self.members.len() as u64;
        all.partition(|id| *id <= u64::from(self.voters))
    }
}
