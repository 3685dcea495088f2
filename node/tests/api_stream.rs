//! The admin API's streamed fetch: the plaintext arrives in frames, in order, followed by the
//! receipt; a client that goes away mid-stream stops the fetch on the node (it does not sit on
//! its windows of chunks for ever). In one process: members on the in-memory transport, the
//! auditor's API on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{eventually, request_when_deposited, serve_api, start_with_leader};
use node::frames::{self, FrameKind};
use overlay::MemoryNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "test-token-of-16-chars";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_streams_in_frames_and_stops_when_its_client_goes_away() {
    let network = MemoryNetwork::new();
    let members = start_with_leader(&network, 4).await;
    let data: Vec<u8> = (0..24 << 20).map(|i: u32| (i % 253) as u8).collect();
    let stored = members[0].node.store(data.clone()).await.unwrap();
    let auditor = members[3].node.clone();
    request_when_deposited(&auditor, stored.file_id).await;
    let (address, server) = serve_api(auditor.clone(), TOKEN, Default::default()).await;
    let body = format!("{{\"file_id\":\"{}\",\"timeout_secs\":30}}", stored.file_id);

    // A whole fetch: data frames in order, then the receipt.
    let request_body = body.clone();
    let (bytes, receipt) = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let response = agent
            .post(format!("http://{address}/v1/fetch"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/json")
            .send(request_body.as_bytes())
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let mut reader = response.into_body().into_reader();
        let mut bytes = Vec::new();
        loop {
            let (kind, payload) = frames::read(&mut reader).unwrap().expect("a receipt");
            match kind {
                FrameKind::Data => bytes.extend_from_slice(&payload),
                FrameKind::Progress => {}
                FrameKind::Receipt => {
                    let receipt: node::FetchReceipt = serde_json::from_slice(&payload).unwrap();
                    assert!(
                        frames::read(&mut reader).unwrap().is_none(),
                        "after the receipt"
                    );
                    return (bytes, receipt);
                }
                FrameKind::Error => panic!("{}", String::from_utf8_lossy(&payload)),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(receipt.bytes, data.len() as u64);
    assert!(bytes == data, "streamed bytes differ from the file");

    // A client that reads a little and hangs up.
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST /v1/fetch HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 64 * 1024];
    let mut read = 0;
    while read < first.len() {
        let n = stream.read(&mut first[read..]).await.unwrap();
        assert!(n > 0, "the node closed the stream early");
        read += n;
    }
    let metrics = auditor.metrics();
    assert_eq!(metrics.fetches_active.load(Ordering::SeqCst), 1);
    drop(stream);
    eventually("the abandoned fetch stopped", || async {
        metrics.fetches_active.load(Ordering::SeqCst) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.abort();
    for member in &members {
        member.node.shutdown().await;
    }
}
