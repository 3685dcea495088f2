//! Hostile clients of the admin API: no token or a wrong one, a body announced huge, malformed
//! JSON, an oversized body, and a crowd of clients that send half a request and stall. Each gets
//! a clear status (never a panic), nothing is buffered for a client without the token, a
//! client that stalls is cut off, and an honest client keeps being served. In one process: members on the in-memory transport, one
//! member's API on 127.0.0.1, spoken to in raw HTTP/1.1 so the test controls every byte.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{serve_api, start_with_leader};
use overlay::MemoryNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "hostile-test-token";
/// Long enough for any answer on a loaded 2-core machine; the bugs these tests catch make the
/// server wait forever.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Sends `head` (request line and headers, without the blank line) and `body`, keeps the write
/// half open, and returns the status code and body of the answer.
async fn exchange(address: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("{head}\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // Read until the headers and the whole announced body are in (the connection stays open).
    let read = async {
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
            if let Some(complete) = complete_response(&answer) {
                answer.truncate(complete);
                break;
            }
        }
    };
    tokio::time::timeout(ANSWER_WITHIN, read)
        .await
        .unwrap_or_else(|_| panic!("no answer to {head:?} within {ANSWER_WITHIN:?}"));
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The length of the first whole response in `bytes`, if it is all there.
fn complete_response(bytes: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(bytes);
    let (head, _) = text.split_once("\r\n\r\n")?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let total = head.len() + 4 + length;
    (bytes.len() >= total).then_some(total)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_clients_get_clear_errors_and_honest_ones_are_served() {
    let network = MemoryNetwork::new();
    let members = start_with_leader(&network, 4).await;
    let limits = node::api::ServeLimits {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(1),
    };
    let (address, server) = serve_api(members[0].node.clone(), TOKEN, limits).await;
    let status_ok = || async {
        let (code, body) = exchange(
            address,
            &format!("GET /v1/status HTTP/1.1\r\n{}", bearer(TOKEN)),
            b"",
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"member\""), "{body}");
    };

    // No token, or a wrong one: 401 on every route but /metrics.
    for route in [
        "GET /v1/status",
        "GET /v1/ledger/nonces",
        "GET /v1/chain/verify",
        "GET /v1/file/00",
        "POST /v1/shutdown",
    ] {
        let (code, body) = exchange(
            address,
            &format!("{route} HTTP/1.1\r\nContent-Length: 0"),
            b"",
        )
        .await;
        assert_eq!(code, 401, "{route}: {body}");
        let (code, _) = exchange(
            address,
            &format!(
                "{route} HTTP/1.1\r\nContent-Length: 0\r\n{}",
                bearer("not-the-token-at-all")
            ),
            b"",
        )
        .await;
        assert_eq!(code, 401, "{route}");
    }
    let (code, body) = exchange(address, "GET /metrics HTTP/1.1", b"").await;
    assert_eq!(code, 200, "{body}");

    // A body announced as 16 MiB without the token is refused at once, not read first: only a
    // few bytes of it are ever sent.
    for route in ["/v1/ledger/txs", "/v1/request", "/v1/fetch", "/v1/store"] {
        let (code, body) = exchange(
            address,
            &format!("POST {route} HTTP/1.1\r\nContent-Length: {}", 16 << 20),
            b"{\"partial\":",
        )
        .await;
        assert_eq!(code, 401, "{route}: {body}");
    }

    // Malformed JSON with the token: a 4xx naming the problem.
    let (code, body) = exchange(
        address,
        &format!(
            "POST /v1/request HTTP/1.1\r\n{}\r\nContent-Type: application/json\r\nContent-Length: 12",
            bearer(TOKEN)
        ),
        b"{\"file_id\":[",
    )
    .await;
    assert!((400..500).contains(&code), "{code}: {body}");
    assert!(!body.is_empty());

    // A JSON body over the limit with the token: 413.
    let huge = vec![b' '; 2 << 20];
    let (code, _) = exchange(
        address,
        &format!(
            "POST /v1/request HTTP/1.1\r\n{}\r\nContent-Type: application/json\r\nContent-Length: {}",
            bearer(TOKEN),
            huge.len()
        ),
        &huge,
    )
    .await;
    assert_eq!(code, 413);

    // A transaction batch that is not postcard: 400.
    let (code, body) = exchange(
        address,
        &format!(
            "POST /v1/ledger/txs HTTP/1.1\r\n{}\r\nContent-Length: 3",
            bearer(TOKEN)
        ),
        b"\xff\xff\xff",
    )
    .await;
    assert_eq!(code, 400, "{body}");

    // Forty-eight clients that send half a request and stall, three times the connections the
    // node serves at once, do not stop an honest one: each is cut off when its head is late.
    let mut stalled = Vec::new();
    for _ in 0..48 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"POST /v1/request HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .unwrap();
        stalled.push(stream);
    }
    status_ok().await;
    let mut first = stalled.swap_remove(0);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(ANSWER_WITHIN, first.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a stalled client's connection was never closed"
    );
    drop(stalled);

    // And the node is still up and serving after all of it.
    status_ok().await;
    server.abort();

    // A router given an empty token admits no one, not everyone without a header.
    let (open_address, open) = serve_api(members[0].node.clone(), "", Default::default()).await;
    let (code, _) = exchange(open_address, "GET /v1/status HTTP/1.1", b"").await;
    assert_eq!(code, 401);
    let (code, _) = exchange(
        open_address,
        &format!("GET /v1/status HTTP/1.1\r\n{}", bearer("")),
        b"",
    )
    .await;
    assert_eq!(code, 401);
    open.abort();
}
