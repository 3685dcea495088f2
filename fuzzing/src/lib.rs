//! The bodies of the fuzz targets: what each does with arbitrary bytes. The fuzzers in `fuzz/`
//! (cargo-fuzz, libFuzzer) call these; `tests/regressions.rs` runs every input kept under
//! `fuzz/regressions/<target>/` through them, so `cargo test` replays each crash ever found.
//!
//! Every target feeds bytes to the code that takes them from a peer, a client or a file, and
//! asserts what must hold whatever the bytes: no panic, and a value that decodes encodes back to
//! itself. The replica targets run a real [`ledger::Replica`] on an in-memory redb, fresh for
//! each input, so a crash reproduces from its input alone.

use ed25519_dalek::SigningKey;
use keyshare::{
    Commitments, FileId, SealContext, SealPurpose, SealedShare, SealingSecretKey, Share,
};
use ledger::{
    Block, Body, Genesis, MemberId, Replica, ReplicaConfig, Role, Transaction, WireMessage,
};
use overlay::wire::{MAX_FRAME_BYTES, Request, Response, decode_body, encode_frame};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its directory under `fuzz/regressions/` and `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("overlay_frame", overlay_frame),
    ("transaction", transaction),
    ("contract", contract),
    ("raft_message", raft_message),
    ("sealed_share", sealed_share),
    ("snapshot", snapshot),
    ("config", config),
];

/// Asserts that `value`, once encoded with postcard, decodes to itself.
fn round_trips<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = postcard::to_allocvec(value).unwrap_or_default();
    let again: Option<T> = postcard::from_bytes(&bytes).ok();
    assert_eq!(
        again.as_ref(),
        Some(value),
        "does not survive its own encoding"
    );
}

/// An overlay frame as a peer's stream delivers it: the length-prefixed read (bounded by
/// [`MAX_FRAME_BYTES`] before allocating), then the body as a request and as a response.
pub fn overlay_frame(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread().build();
    if let Ok(runtime) = runtime {
        let mut reader = data;
        let _ = runtime.block_on(overlay::wire::read_only_frame(&mut reader, MAX_FRAME_BYTES));
    }
    for body in [data, data.get(4..).unwrap_or_default()] {
        if let Ok(request) = decode_body::<Request>(body) {
            let frame = encode_frame(&request).unwrap_or_default();
            let again = decode_body::<Request>(frame.get(4..).unwrap_or_default()).ok();
            assert_eq!(again.as_ref(), Some(&request));
        }
        if let Ok(response) = decode_body::<Response>(body) {
            let frame = encode_frame(&response).unwrap_or_default();
            let again = decode_body::<Response>(frame.get(4..).unwrap_or_default()).ok();
            assert_eq!(again.as_ref(), Some(&response));
        }
    }
}

/// A transaction, a batch of them (the admin API's `POST /v1/ledger/txs`) and a block, decoded
/// as the ledger decodes them from peers and clients.
pub fn transaction(data: &[u8]) {
    if let Ok(tx) = postcard::from_bytes::<Transaction>(data) {
        round_trips(&tx);
        let _ = tx.id();
    }
    if let Ok(batch) = postcard::from_bytes::<Vec<Transaction>>(data) {
        round_trips(&batch);
    }
    if let Ok(block) = postcard::from_bytes::<Block>(data) {
        round_trips(&block);
        let _ = block.hash();
    }
}

/// The fuzzed consortium: two participants and an auditor, keys fixed; `voters` of them vote.
fn consortium(voters: u32) -> (node::config::Consortium, Vec<SigningKey>) {
    let keys: Vec<SigningKey> = (1..=3u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let members = keys
        .iter()
        .enumerate()
        .map(|(i, key)| node::config::MemberEntry {
            name: format!("member-{}", i + 1),
            id: MemberId::from(key.verifying_key()),
            sealing_key: holder_key(i).public_key(),
            role: if i == 2 {
                Role::Auditor
            } else {
                Role::Participant
            },
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        })
        .collect();
    let mut consortium =
        node::config::Consortium::with_defaults("fuzz".into(), members, None, None, 64 * 1024);
    consortium.voters = voters;
    (consortium, keys)
}

/// Member `index`'s sealing key.
fn holder_key(index: usize) -> SealingSecretKey {
    SealingSecretKey::from_bytes(&[index as u8 + 10; 32])
}

fn genesis(voters: u32) -> (Genesis, Vec<SigningKey>) {
    let (consortium, keys) = consortium(voters);
    (consortium.genesis(), keys)
}

fn open_replica(genesis: &Genesis) -> Option<Replica> {
    let store = ledger::RedbStore::open_backend(redb::backends::InMemoryBackend::new()).ok()?;
    Replica::open(genesis.clone(), ReplicaConfig::new(1), store).ok()
}

/// Ticks and polls `replica` `rounds` times from `now`; stops at the first error (which the
/// replica reports, never panics on).
fn drive(replica: &mut Replica, now: &mut u64, rounds: u32) {
    for _ in 0..rounds {
        *now += 50;
        replica.tick(*now);
        let Ok(effects) = replica.poll() else {
            return;
        };
        if let Some(job) = effects.snapshot {
            replica.snapshot_built(job.build());
        }
    }
}

/// Contract bodies, each signed by the member its first byte names, submitted to a replica that
/// orders alone and applied: whatever a member signs, the contracts accept or reject it without
/// panicking.
pub fn contract(data: &[u8]) {
    let (genesis, keys) = genesis(1);
    let Some(mut replica) = open_replica(&genesis) else {
        return;
    };
    let mut now = 0;
    drive(&mut replica, &mut now, 40);
    if !replica.is_leader() {
        return;
    }
    submit_bodies(&mut replica, &genesis, &keys, data);
    drive(&mut replica, &mut now, 20);
}

/// Submits up to eight bodies from `data`, each a signer byte (member index, modulo three)
/// followed by a postcard [`Body`], signed with that member's next nonce.
fn submit_bodies(replica: &mut Replica, genesis: &Genesis, keys: &[SigningKey], data: &[u8]) {
    let mut nonces = vec![0u64; keys.len()];
    let mut rest = data;
    for _ in 0..8 {
        let Some((&signer, tail)) = rest.split_first() else {
            break;
        };
        let Ok((body, tail)) = postcard::take_from_bytes::<Body>(tail) else {
            break;
        };
        rest = tail;
        let signer = usize::from(signer) % keys.len();
        nonces[signer] += 1;
        let tx = Transaction::sign(&keys[signer], &genesis.chain_id, nonces[signer], body);
        let _ = replica.submit(tx);
    }
}

/// A message from a peer, as the ledger task hands it to a follower replica: decoded, checked
/// and stepped through Raft (appends, votes, snapshot offers and pieces), then persisted.
pub fn raft_message(data: &[u8]) {
    let (genesis, _) = genesis(3);
    let Some(mut replica) = open_replica(&genesis) else {
        return;
    };
    let mut now = 0;
    let mut rest = data;
    for _ in 0..4 {
        if rest.len() < 2 {
            break;
        }
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (message, tail) = rest[2..].split_at(len);
        rest = tail;
        if let Ok(wire) = WireMessage::decode(message) {
            let _ = replica.handle_message(wire);
        }
        drive(&mut replica, &mut now, 1);
    }
}

/// A sealed share from the chain, opened with a holder's key; a share and commitments as a
/// master table and a release carry them, verified against each other.
pub fn sealed_share(data: &[u8]) {
    let holder = holder_key(0);
    if let Some((encapped_key, ciphertext)) = data.split_first_chunk::<32>() {
        let sealed = SealedShare {
            encapped_key: *encapped_key,
            ciphertext: ciphertext.to_vec(),
        };
        let _ = keyshare::open_share(&sealed, &holder, &sealed_share_context());
    }
    if let Ok(sealed) = postcard::from_bytes::<SealedShare>(data) {
        round_trips(&sealed);
    }
    let split = data.len().min(36);
    let (share, commitments) = data.split_at(split);
    if let (Ok(share), Ok(commitments)) = (
        Share::from_bytes(share),
        Commitments::from_bytes(commitments),
    ) {
        assert!(Share::from_bytes(share.to_bytes().as_slice()).ok() == Some(share.clone()));
        let _ = keyshare::verify(&share, &commitments);
    }
}

/// The context [`sealed_share`] opens under.
fn sealed_share_context() -> SealContext {
    SealContext {
        file_id: FileId::from_bytes([1; 32]),
        holder: [2; 32],
        share_index: 1,
        purpose: SealPurpose::Deposit,
    }
}

/// A snapshot's descriptor and body as a replica takes them from a peer.
pub fn snapshot(data: &[u8]) {
    ledger::fuzzing::snapshot(data);
}

/// `genesis.toml` and `node.toml` as a node reads them: parsed, validated, and the genesis built
/// and checked.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(consortium) = toml::from_str::<node::config::Consortium>(text)
        && consortium.validate().is_ok()
    {
        let _ = consortium.genesis().validate();
    }
    let _ = toml::from_str::<node::config::NodeConfig>(text);
}

/// Well-formed inputs for each target, from the code that makes them in the node: a start the
/// fuzzer mutates from, kept beside the crash inputs under `fuzz/regressions/` (`seed-*`).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut seeds = Vec::new();
    let (consortium, keys) = consortium(1);
    let owner = consortium.members[0].id;
    let Ok(files) = node::load::SmallFiles::new(&consortium, owner, &mut rng) else {
        return seeds;
    };
    let file = files.file_id(1, &mut rng);
    let (Ok(table), Ok(deposit)) = (
        files.table(file, 1, &mut rng),
        files.deposit(file, &mut rng),
    ) else {
        return seeds;
    };
    let register = Body::RegisterFile(table);
    let request = Body::RequestAccess {
        file,
        reason: "audit".into(),
    };
    let mut contract = Vec::new();
    for (signer, body) in [(0u8, &register), (0, &deposit), (2, &request)] {
        contract.push(signer);
        contract.extend(postcard::to_allocvec(body).unwrap_or_default());
    }
    seeds.push(("contract", contract));
    let tx = Transaction::sign(&keys[0], &consortium.chain_id, 1, register.clone());
    seeds.push((
        "transaction",
        postcard::to_allocvec(&tx).unwrap_or_default(),
    ));
    let batch = vec![
        tx.clone(),
        Transaction::sign(&keys[0], &consortium.chain_id, 2, deposit),
    ];
    seeds.push((
        "transaction",
        postcard::to_allocvec(&batch).unwrap_or_default(),
    ));
    for request in [
        Request::Ping { nonce: 7 },
        Request::GetChunk {
            hash: keyshare::ChunkHash::of(b"chunk"),
        },
    ] {
        seeds.push(("overlay_frame", encode_frame(&request).unwrap_or_default()));
    }
    if let Ok(text) = toml::to_string(&consortium) {
        seeds.push(("config", text.into_bytes()));
    }
    let node_toml = "name = \"member-1\"\ndata_dir = \"data\"\ngenesis = \"../genesis.toml\"\n\
                     keys_dir = \"keys\"\nadmin = \"127.0.0.1:7201\"\n\n[policy]\n\
                     release_to_roles = [\"auditor\"]\n";
    seeds.push(("config", node_toml.as_bytes().to_vec()));
    seeds.extend(raft_seeds().into_iter().map(|seed| ("raft_message", seed)));
    if let Some(body) = snapshot_seed(&seeds) {
        seeds.push(("snapshot", body));
    }
    seeds.extend(
        share_seeds(&mut rng)
            .into_iter()
            .map(|seed| ("sealed_share", seed)),
    );
    seeds
}

/// The snapshot body of the state the contract seed leaves.
fn snapshot_seed(seeds: &[(&'static str, Vec<u8>)]) -> Option<Vec<u8>> {
    let (_, contract_seed) = seeds.iter().find(|(target, _)| *target == "contract")?;
    let (genesis, keys) = genesis(1);
    let mut replica = open_replica(&genesis)?;
    let mut now = 0;
    drive(&mut replica, &mut now, 40);
    submit_bodies(&mut replica, &genesis, &keys, contract_seed);
    drive(&mut replica, &mut now, 20);
    Some(ledger::fuzzing::snapshot_body(replica.state()))
}

/// A share sealed to member-1 under [`sealed_share`]'s context (it opens), and a share followed
/// by its commitments (it verifies).
fn share_seeds(rng: &mut rand::rngs::StdRng) -> Vec<Vec<u8>> {
    let secret = keyshare::FileSecret::random(rng);
    let Ok((shares, commitments)) = keyshare::split(&secret, 2, 3, rng) else {
        return Vec::new();
    };
    let context = sealed_share_context();
    let mut seeds = Vec::new();
    if let Ok(sealed) = keyshare::seal_share(&shares[0], &holder_key(0).public_key(), &context, rng)
    {
        let mut bytes = sealed.encapped_key.to_vec();
        bytes.extend(&sealed.ciphertext);
        seeds.push(bytes);
    }
    let mut bytes = shares[0].to_bytes().to_vec();
    bytes.extend(commitments.to_bytes());
    seeds.push(bytes);
    seeds
}

/// What a 3-voter replica sends when it campaigns and when it leads (votes, appends), framed as
/// [`raft_message`] reads them: a 2-byte little-endian length before each message.
fn raft_seeds() -> Vec<Vec<u8>> {
    let (genesis, _) = genesis(3);
    let Some(mut replica) = open_replica(&genesis) else {
        return Vec::new();
    };
    let mut seeds = Vec::new();
    let mut now = 0;
    for _ in 0..60 {
        now += 50;
        replica.tick(now);
        let Ok(effects) = replica.poll() else {
            break;
        };
        for message in effects.messages {
            let bytes = message.encode();
            let mut framed = (bytes.len() as u16).to_le_bytes().to_vec();
            framed.extend(bytes);
            seeds.push(framed);
        }
        if seeds.len() >= 3 {
            break;
        }
    }
    seeds
}
