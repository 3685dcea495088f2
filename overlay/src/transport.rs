//! The transport seam: how a peer sends requests and messages to another.
//!
//! [`Transport`] is implemented by [`crate::QuicTransport`] (real UDP, TLS 1.3) and by
//! [`MemoryTransport`] (in-process pipes with configurable latency on tokio time, so a paused
//! runtime runs it in virtual time). Both carry the same frames through the same
//! [`crate::service`] code; the fetch scheduler and push logic cannot tell them apart.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyshare::ChunkHash;
use tokio::io::AsyncWriteExt;

use crate::error::TransportError;
use crate::peer::PeerId;
use crate::service::{Allowance, Handler, serve_message_stream, serve_request_stream};
use crate::wire::{
    MAX_FRAME_BYTES, Request, Response, decode_body, read_only_frame, write_frame, write_raw_frame,
};

/// The in-memory network carries only frames its own peers wrote: they are not metered (QUIC
/// peers are, see [`crate::QuicTransport`]).
static UNMETERED: Allowance = Allowance::unmetered();

/// Sends requests and messages to peers by their member key.
pub trait Transport: Send + Sync + 'static {
    /// This peer's own key.
    fn local_peer(&self) -> PeerId;

    /// Sends `request` to `peer` on a fresh stream and waits up to `timeout` for the answer.
    /// Fails with [`TransportError::Unreachable`] when no authenticated connection can be made,
    /// [`TransportError::Timeout`] when the answer is late, [`TransportError::BadReply`] when it
    /// does not decode.
    fn request(
        &self,
        peer: PeerId,
        request: Request,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, TransportError>> + Send;

    /// Sends one opaque message to `peer`, without waiting for any answer.
    fn send_message(
        &self,
        peer: PeerId,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// Runs `exchange` under `timeout`, mapping a late answer to [`TransportError::Timeout`]; every
/// transport (QUIC, in-memory, the simulator's) bounds its requests this way.
pub async fn within<F>(
    peer: PeerId,
    timeout: Duration,
    exchange: F,
) -> Result<Response, TransportError>
where
    F: Future<Output = Result<Response, TransportError>>,
{
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(TransportError::Timeout {
            peer,
            timeout_ms: timeout.as_millis() as u64,
        }))
}

/// Bytes buffered in each direction of an in-memory stream.
const PIPE_CAPACITY_BYTES: usize = 1 << 20;

/// Picks the messages to refuse by payload.
type MessageFilter = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

#[derive(Default)]
struct Hub {
    handlers: BTreeMap<PeerId, Arc<dyn Handler>>,
    down: BTreeSet<PeerId>,
    latency: BTreeMap<(PeerId, PeerId), Duration>,
    /// Messages (not requests) from a peer still to be refused, and which.
    refused_messages: BTreeMap<PeerId, (u32, MessageFilter)>,
    /// Everything sent, while tracing.
    trace: Option<Trace>,
}

struct Trace {
    start: tokio::time::Instant,
    events: Vec<TraceEvent>,
}

/// One request or message sent on a traced [`MemoryNetwork`]: when (on the runtime's clock, so
/// virtual under a paused runtime), who to whom, and a digest of what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Milliseconds since tracing started.
    pub at_ms: u64,
    /// The sender.
    pub from: PeerId,
    /// The addressee.
    pub to: PeerId,
    /// `true` for a request (chunk, ping), `false` for a message (ledger traffic).
    pub request: bool,
    /// SHA3-256 of the encoded request or message.
    pub digest: ChunkHash,
}

/// An in-process network of peers: register a handler per peer, then get a [`MemoryTransport`]
/// for each. Peers can be taken down and links given a one-way latency.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches `peer`, served by `handler`, and returns its transport.
    pub fn attach(&self, peer: PeerId, handler: Arc<dyn Handler>) -> MemoryTransport {
        self.hub().handlers.insert(peer, handler);
        MemoryTransport {
            local: peer,
            network: self.clone(),
        }
    }

    /// Removes `peer` and drops its handler (a crashed process): it is unknown until attached
    /// again.
    pub fn detach(&self, peer: PeerId) {
        let handler = self.hub().handlers.remove(&peer);
        drop(handler);
    }

    /// Makes `peer` unreachable (`true`) or reachable again.
    pub fn set_down(&self, peer: PeerId, down: bool) {
        let mut hub = self.hub();
        if down {
            hub.down.insert(peer);
        } else {
            hub.down.remove(&peer);
        }
    }

    /// Refuses the next `count` messages `peer` sends whose payload `which` picks, as a
    /// transport that fails would (`send_message` returns an error).
    pub fn refuse_messages_from(
        &self,
        peer: PeerId,
        count: u32,
        which: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
    ) {
        self.hub()
            .refused_messages
            .insert(peer, (count, Arc::new(which)));
    }

    /// Whether this message from `from` is one to refuse (and counts it).
    fn refuse_message(&self, from: PeerId, payload: &[u8]) -> bool {
        let mut hub = self.hub();
        match hub.refused_messages.get_mut(&from) {
            Some((left, which)) if *left > 0 && which(payload) => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Starts recording every request and message sent (see [`Self::trace`]), for tests that
    /// check a run is deterministic.
    pub fn start_trace(&self) {
        self.hub().trace = Some(Trace {
            start: tokio::time::Instant::now(),
            events: Vec::new(),
        });
    }

    /// What was sent since [`Self::start_trace`], in order.
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.hub()
            .trace
            .as_ref()
            .map(|trace| trace.events.clone())
            .unwrap_or_default()
    }

    fn record(&self, from: PeerId, to: PeerId, request: bool, bytes: &[u8]) {
        if let Some(trace) = self.hub().trace.as_mut() {
            trace.events.push(TraceEvent {
                at_ms: trace.start.elapsed().as_millis() as u64,
                from,
                to,
                request,
                digest: ChunkHash::of(bytes),
            });
        }
    }

    /// Sets the one-way latency from `from` to `to`.
    pub fn set_latency(&self, from: PeerId, to: PeerId, latency: Duration) {
        self.hub().latency.insert((from, to), latency);
    }

    fn route(
        &self,
        from: PeerId,
        to: PeerId,
    ) -> Result<(Arc<dyn Handler>, Duration, Duration), TransportError> {
        let hub = self.hub();
        let unreachable = |reason: &str| TransportError::Unreachable {
            peer: to,
            reason: reason.to_owned(),
        };
        if hub.down.contains(&to) || hub.down.contains(&from) {
            return Err(unreachable("peer is down"));
        }
        let handler = hub
            .handlers
            .get(&to)
            .cloned()
            .ok_or(TransportError::UnknownPeer { peer: to })?;
        let latency = |a, b| hub.latency.get(&(a, b)).copied().unwrap_or_default();
        Ok((handler, latency(from, to), latency(to, from)))
    }
}

/// One peer's view of a [`MemoryNetwork`].
#[derive(Clone)]
pub struct MemoryTransport {
    local: PeerId,
    network: MemoryNetwork,
}

impl MemoryTransport {
    async fn exchange(&self, peer: PeerId, request: Request) -> Result<Response, TransportError> {
        if self.network.hub().trace.is_some() {
            let encoded = postcard::to_allocvec(&request).unwrap_or_default();
            self.network.record(self.local, peer, true, &encoded);
        }
        let (handler, there, back) = self.network.route(self.local, peer)?;
        let bad_reply = |source| TransportError::BadReply { peer, source };
        let (client, server) = tokio::io::duplex(PIPE_CAPACITY_BYTES);
        let from = self.local;
        tokio::time::sleep(there).await;
        let served = tokio::spawn(async move {
            let (recv, send) = tokio::io::split(server);
            if let Err(error) =
                serve_request_stream(handler.as_ref(), &from, recv, send, &UNMETERED).await
            {
                tracing::debug!(%error, "in-memory request stream failed");
            }
        });
        let (mut recv, mut send) = tokio::io::split(client);
        write_frame(&mut send, &request).await.map_err(bad_reply)?;
        send.shutdown()
            .await
            .map_err(|error| TransportError::Unreachable {
                peer,
                reason: error.to_string(),
            })?;
        let body = read_only_frame(&mut recv, MAX_FRAME_BYTES)
            .await
            .map_err(bad_reply)?;
        // The server task has finished writing; it only has to drop its pipe end.
        let _ = served.await;
        tokio::time::sleep(back).await;
        decode_body(&body).map_err(bad_reply)
    }
}

impl Transport for MemoryTransport {
    fn local_peer(&self) -> PeerId {
        self.local
    }

    async fn request(
        &self,
        peer: PeerId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        within(peer, timeout, self.exchange(peer, request)).await
    }

    async fn send_message(&self, peer: PeerId, payload: Vec<u8>) -> Result<(), TransportError> {
        if self.network.refuse_message(self.local, &payload) {
            return Err(TransportError::Unreachable {
                peer,
                reason: "message refused (injected)".to_owned(),
            });
        }
        self.network.record(self.local, peer, false, &payload);
        let (handler, there, _) = self.network.route(self.local, peer)?;
        let from = self.local;
        tokio::spawn(async move {
            tokio::time::sleep(there).await;
            let mut frame = Vec::with_capacity(payload.len() + 4);
            if write_raw_frame(&mut frame, &payload).await.is_ok() {
                let _ = serve_message_stream(handler.as_ref(), &from, frame.as_slice(), &UNMETERED)
                    .await;
            }
        });
        Ok(())
    }
}
