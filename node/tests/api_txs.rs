//! `POST /v1/ledger/txs` and `GET /v1/ledger/nonces`, the routes `blocktorrent bench ledger`
//! drives: transactions signed elsewhere are ordered in their order and answered once applied,
//! a replay is refused with its reason, and a body that is not a list of transactions is a clear
//! 400; with a framed answer, the head comes once a batch is taken in order, so a client that
//! sends its next batch then keeps its nonces in order with many batches waiting at once. In one
//! process: members on the in-memory transport, one member's API on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Member, consortium, serve_api, signing_key, start_with_leader};
use ledger::{Body, Transaction};
use node::api::{Nonces, TxBatchAnswer};
use node::frames::{self, FrameKind};
use node::load::SmallFiles;
use overlay::{MemoryNetwork, Transport};
use rand::SeedableRng;
use rand::rngs::StdRng;

const TOKEN: &str = "test-token-of-16-chars";

fn post(address: std::net::SocketAddr, body: Vec<u8>) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent
        .post(format!("http://{address}/v1/ledger/txs"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/octet-stream")
        .send(&body[..])
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// Four members on the in-memory transport with a leader known, and member-1's API.
async fn four_with_api() -> (
    MemoryNetwork,
    Vec<Member>,
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let network = MemoryNetwork::new();
    let members = start_with_leader(&network, 4).await;
    let (address, server) = serve_api(members[0].node.clone(), TOKEN, Default::default()).await;
    (network, members, address, server)
}

/// A signed registration of a fresh small file from `files`' member, as its transaction `nonce`
/// (`at` stands for the clock the file id and table take).
fn register(
    consortium: &node::config::Consortium,
    files: &SmallFiles,
    key: &ed25519_dalek::SigningKey,
    at: u64,
    nonce: u64,
    rng: &mut StdRng,
) -> Transaction {
    let file = files.file_id(at, rng);
    let table = Body::RegisterFile(files.table(file, at, rng).unwrap());
    Transaction::sign(key, &consortium.chain_id, nonce, table)
}

/// Reads a framed answer's next frame, which must be its receipt.
fn receipt(reader: &mut impl std::io::Read) -> TxBatchAnswer {
    let (kind, payload) = frames::read(reader).unwrap().unwrap();
    assert_eq!(
        kind,
        FrameKind::Receipt,
        "{}",
        String::from_utf8_lossy(&payload)
    );
    serde_json::from_slice(&payload).unwrap()
}

/// An agent whose calls (head and body) end within a minute: a hang fails the test.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// Posts a batch asking for a framed answer; returns once its head came.
fn post_framed(
    agent: &ureq::Agent,
    address: std::net::SocketAddr,
    body: &[u8],
) -> ureq::http::Response<ureq::Body> {
    let response = agent
        .post(format!("http://{address}/v1/ledger/txs"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/octet-stream")
        .header("Accept", frames::CONTENT_TYPE)
        .send(body)
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_batches_are_ordered_answered_and_replays_refused() {
    let (_network, members, address, server) = four_with_api().await;

    // Two participants' files: member-1 registers and deposits, member-2 registers.
    let consortium = consortium(4);
    let mut rng = StdRng::seed_from_u64(5);
    let mut txs = Vec::new();
    for (index, count) in [(0usize, 2u64), (1, 1)] {
        let id = consortium.members[index].id;
        let files = SmallFiles::new(&consortium, id, &mut rng).unwrap();
        let file = files.file_id(1, &mut rng);
        let mut bodies = vec![Body::RegisterFile(files.table(file, 1, &mut rng).unwrap())];
        if count == 2 {
            bodies.push(files.deposit(file, &mut rng).unwrap());
        }
        let key = signing_key(4, index);
        for (nonce, body) in (1..).zip(bodies) {
            txs.push(Transaction::sign(&key, &consortium.chain_id, nonce, body));
        }
    }
    let batch = postcard::to_allocvec(&txs).unwrap();
    let (status, body) = tokio::task::spawn_blocking(move || post(address, batch))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: TxBatchAnswer = serde_json::from_str(&body).unwrap();
    assert_eq!(answer.outcomes.len(), 3);
    for outcome in &answer.outcomes {
        assert!(outcome.applied, "{outcome:?}");
        assert!(outcome.height.is_some());
    }
    // The deposit was ordered after its table.
    assert!(answer.outcomes[1].height >= answer.outcomes[0].height);

    // A copy submitted while the first waits is refused; the first is answered.
    let key = signing_key(4, 2);
    let files = SmallFiles::new(&consortium, consortium.members[2].id, &mut rng).unwrap();
    let tx = register(&consortium, &files, &key, 2, 1, &mut rng);
    let twice = postcard::to_allocvec(&vec![tx.clone(), tx]).unwrap();
    let (status, body) = tokio::task::spawn_blocking(move || post(address, twice))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: TxBatchAnswer = serde_json::from_str(&body).unwrap();
    assert!(answer.outcomes[0].applied, "{:?}", answer.outcomes[0]);
    assert!(!answer.outcomes[1].applied);
    let reason = answer.outcomes[1].error.clone().unwrap_or_default();
    assert!(reason.contains("already waiting"), "{reason}");

    // A replay is refused before ordering, with its reason.
    let replay = postcard::to_allocvec(&txs[..1]).unwrap();
    let (status, body) = tokio::task::spawn_blocking(move || post(address, replay))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: TxBatchAnswer = serde_json::from_str(&body).unwrap();
    assert_eq!(answer.outcomes.len(), 1);
    assert!(!answer.outcomes[0].applied);
    assert_eq!(answer.outcomes[0].height, None);
    let reason = answer.outcomes[0].error.clone().unwrap_or_default();
    assert!(reason.contains("nonce"), "{reason}");

    // The nonces the bench starts from.
    let nonces: Nonces = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_defaults();
        agent
            .get(format!("http://{address}/v1/ledger/nonces"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(nonces.nonces["member-1"], 2);
    assert_eq!(nonces.nonces["member-2"], 1);
    assert_eq!(nonces.nonces["member-3"], 1);
    assert_eq!(nonces.nonces["member-4"], 0);

    // Without the token: 401, nothing submitted.
    let status = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        agent
            .post(format!("http://{address}/v1/ledger/txs"))
            .send(&[0u8][..])
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap();
    assert_eq!(status, 401);

    // More transactions than one answer may report: refused whole, nothing submitted.
    let key = signing_key(4, 3);
    let files = SmallFiles::new(&consortium, consortium.members[3].id, &mut rng).unwrap();
    let tx = register(&consortium, &files, &key, 3, 1, &mut rng);
    let many = postcard::to_allocvec(&vec![tx; node::api::MAX_TX_BATCH_COUNT + 1]).unwrap();
    let (status, body) = tokio::task::spawn_blocking(move || post(address, many))
        .await
        .unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("at most 20000 transactions"), "{body}");
    assert_eq!(members[0].node.nonces().await.unwrap()["member-4"], 0);

    // Not a list of transactions: a clear 400.
    let (status, body) = tokio::task::spawn_blocking(move || post(address, vec![0xff; 7]))
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(
        body.contains("not a postcard list of transactions"),
        "{body}"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_batches_sent_once_their_head_comes_keep_their_order() {
    const BATCHES: u64 = 24;
    const PER_BATCH: u64 = 4;
    let (_network, members, address, server) = four_with_api().await;

    let consortium = consortium(4);
    let mut rng = StdRng::seed_from_u64(9);
    let key = signing_key(4, 1);
    let files = SmallFiles::new(&consortium, consortium.members[1].id, &mut rng).unwrap();
    let batches: Vec<Vec<u8>> = (0..BATCHES)
        .map(|batch| {
            let txs: Vec<Transaction> = (1..=PER_BATCH)
                .map(|i| {
                    let nonce = batch * PER_BATCH + i;
                    register(&consortium, &files, &key, nonce, nonce, &mut rng)
                })
                .collect();
            postcard::to_allocvec(&txs).unwrap()
        })
        .collect();

    let answers: Vec<TxBatchAnswer> = tokio::task::spawn_blocking(move || {
        let agent = agent();
        // Every batch is posted as soon as the previous one's head came, all before any answer
        // is read: only the head's promise keeps the nonces in order.
        let heads: Vec<_> = batches
            .iter()
            .map(|body| post_framed(&agent, address, body))
            .collect();
        heads
            .into_iter()
            .map(|response| {
                let mut reader = response.into_body().into_reader();
                let answer = receipt(&mut reader);
                assert!(
                    frames::read(&mut reader).unwrap().is_none(),
                    "one frame only"
                );
                answer
            })
            .collect()
    })
    .await
    .unwrap();

    let mut last_height = 0;
    for (batch, answer) in answers.iter().enumerate() {
        assert_eq!(answer.outcomes.len(), PER_BATCH as usize);
        for outcome in &answer.outcomes {
            assert!(outcome.applied, "batch {batch}: {outcome:?}");
            let height = outcome.height.unwrap();
            assert!(
                height >= last_height,
                "batch {batch} applied before the one before it"
            );
            last_height = height;
        }
    }
    let nonce = members[0]
        .node
        .nonces()
        .await
        .unwrap()
        .remove("member-2")
        .unwrap();
    assert_eq!(nonce, BATCHES * PER_BATCH);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framed_answer_heads_before_its_batch_applies() {
    let (network, members, address, server) = four_with_api().await;
    let consortium = consortium(4);
    let mut rng = StdRng::seed_from_u64(11);
    let key = signing_key(4, 0);
    let files = SmallFiles::new(&consortium, consortium.members[0].id, &mut rng).unwrap();
    let body =
        postcard::to_allocvec(&vec![register(&consortium, &files, &key, 1, 1, &mut rng)]).unwrap();

    // The other three are cut off: nothing can commit, yet the batch is taken in order.
    let others: Vec<_> = members[1..]
        .iter()
        .map(|member| member.node.transport().local_peer())
        .collect();
    for peer in &others {
        network.set_down(*peer, true);
    }
    let response = tokio::task::spawn_blocking(move || post_framed(&agent(), address, &body))
        .await
        .unwrap();
    assert_eq!(members[0].node.nonces().await.unwrap()["member-1"], 0);

    for peer in &others {
        network.set_down(*peer, false);
    }
    let answer: TxBatchAnswer =
        tokio::task::spawn_blocking(move || receipt(&mut response.into_body().into_reader()))
            .await
            .unwrap();
    assert!(answer.outcomes[0].applied, "{:?}", answer.outcomes[0]);
    server.abort();
}
