//! Configuration files: the consortium's `genesis.toml` (shared by every member) and each
//! member's `node.toml`, plus its key files. `blocktorrent init` writes them all.
//!
//! Layout written by `init --dir DIR`:
//! ```text
//! DIR/genesis.toml               chain id, members (keys, role, addresses), threshold, replication
//! DIR/member-K/node.toml         name, data dir, addresses, paths (relative to this file)
//! DIR/member-K/keys/signing.key  ed25519 secret key, hex (mode 0600)
//! DIR/member-K/keys/sealing.key  X25519 secret key, hex (mode 0600)
//! DIR/member-K/keys/admin.token  admin API bearer token (mode 0600)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use keyshare::{SealingPublicKey, SealingSecretKey};
use ledger::{Genesis, Member, MemberId, Policy, Role};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::Error;

/// One member as listed in `genesis.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// Unique name, e.g. `member-1`.
    pub name: String,
    /// ed25519 public key (hex): ledger identity and TLS identity.
    pub id: MemberId,
    /// X25519 public key (hex) that shares are sealed to.
    pub sealing_key: SealingPublicKey,
    /// Participant or auditor.
    pub role: Role,
    /// Overlay (QUIC) address.
    pub listen: SocketAddr,
}

/// The consortium: everything every member must agree on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consortium {
    /// Chain id, signed into every transaction.
    pub chain_id: String,
    /// How many members (the first ones) vote in Raft.
    pub voters: u32,
    /// Shares needed to rebuild a file key.
    pub threshold: u32,
    /// Owner peers per chunk.
    pub replication: u32,
    /// Chunk size for new files.
    pub chunk_size_bytes: u32,
    /// Who may request access.
    pub policy: Policy,
    /// The members, in Raft id order (member K has Raft id K).
    pub members: Vec<MemberEntry>,
}

impl Consortium {
    /// Reads and validates `genesis.toml`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::io(path, error))?;
        let consortium: Self = toml::from_str(&text).map_err(|error| Error::config(path, error))?;
        consortium
            .validate()
            .map_err(|reason| Error::config(path, reason))?;
        Ok(consortium)
    }

    /// Checks the values the ledger does not: threshold and replication against the member count.
    pub fn validate(&self) -> Result<(), String> {
        self.genesis()
            .validate()
            .map_err(|error| error.to_string())?;
        let holders = self.members.len().saturating_sub(1) as u32;
        if self.threshold == 0 || self.threshold > holders {
            return Err(format!(
                "threshold must be 1..={holders} (members minus the owner), got {}",
                self.threshold
            ));
        }
        let replication_max = holders.min(ledger::MAX_CHUNK_OWNERS);
        if self.replication == 0 || self.replication > replication_max {
            return Err(format!(
                "replication must be 1..={replication_max}, got {}",
                self.replication
            ));
        }
        keyshare::ChunkLayout::new(0, self.chunk_size_bytes).map_err(|error| error.to_string())?;
        Ok(())
    }

    /// The ledger's genesis.
    pub fn genesis(&self) -> Genesis {
        Genesis {
            chain_id: self.chain_id.clone(),
            members: self
                .members
                .iter()
                .map(|entry| Member {
                    name: entry.name.clone(),
                    id: entry.id,
                    sealing_key: entry.sealing_key,
                    role: entry.role,
                })
                .collect(),
            voters: self.voters,
            policy: self.policy.clone(),
        }
    }

    /// A consortium of `members` with the default parameters: up to 5 voters, a majority of the
    /// holders (members other than a file's owner) as threshold, min(3, holders) owners per chunk.
    pub fn with_defaults(
        chain_id: String,
        members: Vec<MemberEntry>,
        threshold: Option<u32>,
        replication: Option<u32>,
        chunk_size_bytes: u32,
    ) -> Self {
        let count = members.len() as u32;
        let holders = count.saturating_sub(1);
        Self {
            chain_id,
            voters: count.min(5),
            threshold: threshold.unwrap_or(holders / 2 + 1),
            replication: replication.unwrap_or(holders.min(3)),
            chunk_size_bytes,
            policy: Policy::default(),
            members,
        }
    }

    /// A file's share holders: every member but its owner, in member order (share `j` goes to
    /// holder `j`).
    pub fn holders_of(&self, owner: &MemberId) -> Vec<MemberId> {
        self.members
            .iter()
            .filter(|m| m.id != *owner)
            .map(|m| m.id)
            .collect()
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// What a member may do when asked to release a share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePolicy {
    /// Roles whose access requests this member answers with its share; others are denied.
    pub release_to_roles: Vec<Role>,
    /// Simulation only, never read from a file: release a random share (sealed as a good one
    /// would be) instead of the deposited one. A Byzantine holder, so the simulator can check
    /// that the auditor catches the share and names its holder.
    #[serde(skip)]
    pub release_bad_shares: bool,
}

impl Default for ReleasePolicy {
    fn default() -> Self {
        Self {
            release_to_roles: vec![Role::Auditor],
            release_bad_shares: false,
        }
    }
}

/// One member's `node.toml`. Relative paths are relative to the file's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// This member's name in the genesis.
    pub name: String,
    /// Where the node keeps its databases.
    pub data_dir: PathBuf,
    /// The consortium file.
    pub genesis: PathBuf,
    /// Directory holding `signing.key`, `sealing.key`, `admin.token`.
    pub keys_dir: PathBuf,
    /// Overlay (QUIC) listen address; defaults to the genesis entry.
    pub listen: Option<SocketAddr>,
    /// Admin API address (keep it on loopback).
    pub admin: SocketAddr,
    /// Share release policy.
    #[serde(default)]
    pub policy: ReleasePolicy,
    /// Storage quota granted to each pushing member, in bytes.
    #[serde(default = "default_quota")]
    pub quota_bytes_per_member: u64,
}

fn default_quota() -> u64 {
    64 << 30
}

/// A loaded, resolved member configuration.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The config as written, with paths made absolute.
    pub config: NodeConfig,
    /// The consortium.
    pub consortium: Consortium,
    /// Where the config came from.
    pub path: PathBuf,
}

impl LoadedConfig {
    /// Reads `node.toml`, resolves its paths and loads the genesis it names.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::io(path, error))?;
        let mut config: NodeConfig =
            toml::from_str(&text).map_err(|error| Error::config(path, error))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for field in [
            &mut config.data_dir,
            &mut config.genesis,
            &mut config.keys_dir,
        ] {
            if field.is_relative() {
                *field = base.join(&*field);
            }
        }
        let consortium = Consortium::load(&config.genesis)?;
        if consortium.member(&config.name).is_none() {
            return Err(Error::config(
                path,
                format!(
                    "member {} is not in {}",
                    config.name,
                    config.genesis.display()
                ),
            ));
        }
        Ok(Self {
            config,
            consortium,
            path: path.to_owned(),
        })
    }

    /// This member's genesis entry.
    pub fn me(&self) -> &MemberEntry {
        // `load` checked that the name is present.
        self.consortium
            .members
            .iter()
            .find(|m| m.name == self.config.name)
            .unwrap_or(&self.consortium.members[0])
    }

    /// The overlay address to bind.
    pub fn listen(&self) -> SocketAddr {
        self.config.listen.unwrap_or(self.me().listen)
    }

    /// Reads the member's keys and checks them against the genesis.
    pub fn keys(&self) -> Result<Keys, Error> {
        let keys = Keys::load(&self.config.keys_dir)?;
        let me = self.me();
        if MemberId::from(keys.signing.verifying_key()) != me.id {
            return Err(Error::config(
                self.config.keys_dir.join(SIGNING_KEY_FILE),
                format!("this key is not {}'s key in the genesis", me.name),
            ));
        }
        if keys.sealing.public_key() != me.sealing_key {
            return Err(Error::config(
                self.config.keys_dir.join(SEALING_KEY_FILE),
                format!("this key is not {}'s sealing key in the genesis", me.name),
            ));
        }
        Ok(keys)
    }

    /// The admin token. Refuses one shorter than [`MIN_TOKEN_CHARS`]: an empty token would let
    /// any request without an `Authorization` header through.
    pub fn token(&self) -> Result<String, Error> {
        let path = self.config.keys_dir.join(TOKEN_FILE);
        let token = read_secret(&path)?.trim().to_owned();
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(Error::config(
                &path,
                format!(
                    "the admin token must be at least {MIN_TOKEN_CHARS} characters \
                     (`init` writes 64 hex digits)"
                ),
            ));
        }
        Ok(token)
    }
}

const SIGNING_KEY_FILE: &str = "signing.key";
const SEALING_KEY_FILE: &str = "sealing.key";
const TOKEN_FILE: &str = "admin.token";
/// Shortest admin token a node accepts.
pub const MIN_TOKEN_CHARS: usize = 16;

/// A member's secret keys.
pub struct Keys {
    /// ed25519: transactions and TLS.
    pub signing: SigningKey,
    /// X25519: opening sealed shares.
    pub sealing: SealingSecretKey,
}

impl Keys {
    /// Fresh keys from `rng`.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self {
            signing: SigningKey::from_bytes(&seed),
            sealing: SealingSecretKey::generate(rng),
        }
    }

    fn load(dir: &Path) -> Result<Self, Error> {
        let signing = read_key(&dir.join(SIGNING_KEY_FILE))?;
        let sealing = read_key(&dir.join(SEALING_KEY_FILE))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&signing),
            sealing: SealingSecretKey::from_bytes(&sealing),
        })
    }

    fn save(&self, dir: &Path, token: &str) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|error| Error::io(dir, error))?;
        let hex = |bytes: &[u8]| Zeroizing::new(to_hex(bytes));
        write_secret(&dir.join(SIGNING_KEY_FILE), &hex(self.signing.as_bytes()))?;
        write_secret(
            &dir.join(SEALING_KEY_FILE),
            &hex(&self.sealing.to_bytes()[..]),
        )?;
        write_secret(&dir.join(TOKEN_FILE), token)
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_secret(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|error| Error::io(path, error))
}

fn read_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, Error> {
    let text = Zeroizing::new(read_secret(path)?);
    let bytes = keyshare::hex::parse_hex::<32>(text.trim())
        .map_err(|error| Error::config(path, format!("not a 32-byte hex key: {error}")))?;
    Ok(Zeroizing::new(bytes))
}

fn write_secret(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| Error::io(path, error))?;
    file.write_all(text.as_bytes())
        .map_err(|error| Error::io(path, error))
}

fn write_text(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|error| Error::io(path, error))
}

/// Parameters of `blocktorrent init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Number of members.
    pub members: u32,
    /// Shares needed; default: a majority of the holders.
    pub threshold: Option<u32>,
    /// Owners per chunk; default: min(3, members − 1).
    pub replication: Option<u32>,
    /// First port; member K uses `base + K` (QUIC) and `base + 100 + K` (admin).
    pub base_port: u16,
    /// Host per member (cycled); default 127.0.0.1.
    pub hosts: Vec<String>,
    /// The auditor's name; default the last member.
    pub auditor: Option<String>,
    /// Chunk size for new files.
    pub chunk_size_bytes: u32,
}

/// Writes a whole consortium into `dir`; returns the path of each member's `node.toml`.
pub fn init<R: rand::CryptoRng + ?Sized>(
    dir: &Path,
    options: &InitOptions,
    rng: &mut R,
) -> Result<Vec<PathBuf>, Error> {
    let count = options.members;
    if !(2..=ledger::MAX_MEMBERS as u32).contains(&count) {
        return Err(Error::Invalid(format!(
            "--members must be 2..={}, got {count}",
            ledger::MAX_MEMBERS
        )));
    }
    let auditor = options
        .auditor
        .clone()
        .unwrap_or_else(|| format!("member-{count}"));
    let hosts = if options.hosts.is_empty() {
        vec!["127.0.0.1".to_owned()]
    } else {
        options.hosts.clone()
    };
    let port = |offset: u32| -> Result<u16, Error> {
        u16::try_from(u32::from(options.base_port) + offset)
            .map_err(|_| Error::Invalid(format!("--base-port {} is too high", options.base_port)))
    };
    let address = |k: u32, offset: u32| -> Result<SocketAddr, Error> {
        let host = &hosts[(k as usize - 1) % hosts.len()];
        format!("{host}:{}", port(offset + k)?)
            .parse()
            .map_err(|_| Error::Invalid(format!("--hosts: {host} is not an IP address")))
    };
    std::fs::create_dir_all(dir).map_err(|error| Error::io(dir, error))?;
    let mut members = Vec::new();
    let mut configs = Vec::new();
    for k in 1..=count {
        let name = format!("member-{k}");
        let keys = Keys::generate(rng);
        let mut token = [0u8; 32];
        rng.fill_bytes(&mut token);
        let member_dir = dir.join(&name);
        keys.save(&member_dir.join("keys"), &to_hex(&token))?;
        let config = NodeConfig {
            name: name.clone(),
            data_dir: PathBuf::from("data"),
            genesis: PathBuf::from("../genesis.toml"),
            keys_dir: PathBuf::from("keys"),
            listen: None,
            admin: address(k, 100)?,
            policy: ReleasePolicy::default(),
            quota_bytes_per_member: default_quota(),
        };
        let path = member_dir.join("node.toml");
        write_text(
            &path,
            &toml::to_string(&config).map_err(|e| Error::config(&path, e))?,
        )?;
        configs.push(path);
        members.push(MemberEntry {
            role: if name == auditor {
                Role::Auditor
            } else {
                Role::Participant
            },
            name,
            id: MemberId::from(keys.signing.verifying_key()),
            sealing_key: keys.sealing.public_key(),
            listen: address(k, 0)?,
        });
    }
    if !members.iter().any(|m| m.role == Role::Auditor) {
        return Err(Error::Invalid(format!(
            "--auditor {auditor} is not a member"
        )));
    }
    let mut chain_id = [0u8; 8];
    rng.fill_bytes(&mut chain_id);
    let consortium = Consortium::with_defaults(
        format!("blocktorrent-{}", to_hex(&chain_id)),
        members,
        options.threshold,
        options.replication,
        options.chunk_size_bytes,
    );
    consortium.validate().map_err(Error::Invalid)?;
    let path = dir.join("genesis.toml");
    write_text(
        &path,
        &toml::to_string(&consortium).map_err(|e| Error::config(&path, e))?,
    )?;
    Ok(configs)
}
