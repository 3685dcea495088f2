//! The QUIC transport (quinn + rustls, ring only), authenticated by member keys.
//!
//! Each node presents its ed25519 member key as an RFC 7250 raw public key: no X.509, no CA.
//! Both sides run the same [`MemberVerifier`], which accepts a handshake only if the presented
//! key is in the consortium's member set and the TLS 1.3 signature verifies under it. A client
//! also checks that the server it reached is the member it dialled. Requests and messages then
//! follow [`crate::wire`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha3::{Digest, Sha3_256};
use tokio::task::JoinHandle;

use crate::error::{FrameError, QuicError, TransportError};
use crate::peer::PeerId;
use crate::service::{Allowance, Handler, serve_message_stream, serve_request_stream};
use crate::transport::{Transport, within};
use crate::wire::{ALPN, MAX_FRAME_BYTES, Request, Response, decode_body, read_only_frame};
use crate::wire::{write_frame, write_raw_frame};

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Domain labels of the endpoint keys derived from a member's signing key.
const RESET_KEY_LABEL: &[u8] = b"blocktorrent quic stateless reset v1";
const CID_KEY_LABEL: &[u8] = b"blocktorrent quic connection ids v1";

/// The endpoint's stateless-reset key and connection-id key, derived from the member's signing
/// key so they survive a restart. A restarted member then recognises the connection ids of its
/// previous run and answers their packets with a stateless reset its peers accept (RFC 9000
/// §10.3), so they dial again at once. With quinn's defaults, random keys per run, the new
/// endpoint drops those packets as bearing invalid ids, and a peer keeps sending on the dead
/// connection until it idles out (30 s): a Raft leader could not reach a follower restarted
/// after a crash for that long.
fn endpoint_config(signing_key: &SigningKey) -> quinn::EndpointConfig {
    let derive = |label: &[u8]| {
        Sha3_256::new()
            .chain_update(label)
            .chain_update(signing_key.as_bytes())
            .finalize()
    };
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derive(RESET_KEY_LABEL));
    let cid_digest = derive(CID_KEY_LABEL);
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid_digest[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// The TLS server name clients send. Verification is by key, so it is a fixed label.
const SERVER_NAME: &str = "blocktorrent";

/// Concurrent request streams a peer may open to us (bounds per-connection work).
const MAX_CONCURRENT_BIDI_STREAMS: u32 = 256;
/// Concurrent message streams a peer may open to us.
const MAX_CONCURRENT_UNI_STREAMS: u32 = 1024;

/// Bytes of frames one member may have this node hold at once, over all its connections and
/// streams (see [`Allowance`]): room for a push of 16 chunks and a Raft message of the largest
/// size, which an honest member never exceeds.
pub const INBOUND_BUDGET_BYTES_PER_PEER: u32 = 128 << 20;

/// Requests of one member in service at once, over all its connections (see [`Allowance`]).
pub const REQUESTS_IN_SERVICE_PER_PEER: u32 = 64;

/// Connections one member may have open to this node. When it opens one more, its oldest is
/// closed: a fresh handshake proves the live instance, while a connection of a run that crashed
/// may linger until it idles out (a restarted member's old outgoing connections get no reset its
/// peer can match), and refusing the newest would lock a member that restarts often out.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;

/// What one member may take of this node: its [`Allowance`] and its live connections.
#[derive(Debug)]
struct PeerAllowance {
    allowance: Allowance,
    connections: Mutex<VecDeque<quinn::Connection>>,
}

impl PeerAllowance {
    fn new() -> Self {
        Self {
            allowance: Allowance::new(INBOUND_BUDGET_BYTES_PER_PEER, REQUESTS_IN_SERVICE_PER_PEER),
            connections: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts `connection` in, closing the member's oldest beyond [`MAX_CONNECTIONS_PER_PEER`].
    fn admit(&self, connection: &quinn::Connection) {
        let mut open = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.retain(|held| held.close_reason().is_none());
        open.push_back(connection.clone());
        while open.len() > MAX_CONNECTIONS_PER_PEER {
            if let Some(oldest) = open.pop_front() {
                oldest.close(2u32.into(), b"superseded by a newer connection");
            }
        }
    }

    /// Counts `connection` out once it has closed.
    fn release(&self, connection: &quinn::Connection) {
        let id = connection.stable_id();
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|held| held.stable_id() != id);
    }
}

fn spki_of(peer: &PeerId) -> Vec<u8> {
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(peer.as_bytes());
    spki
}

fn peer_of_spki(spki: &[u8]) -> Option<PeerId> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX)?;
    Some(PeerId::from_bytes(key.try_into().ok()?))
}

/// The member key a connection's peer authenticated with.
fn peer_of_connection(connection: &quinn::Connection) -> Option<PeerId> {
    let identity = connection.peer_identity()?;
    let certificates = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    peer_of_spki(certificates.first()?.as_ref())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the raw ed25519 keys of the member set, on both ends of a handshake.
#[derive(Debug)]
struct MemberVerifier {
    members: BTreeSet<PeerId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MemberVerifier {
    fn admit(&self, presented: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match peer_of_spki(presented.as_ref()) {
            Some(peer) if self.members.contains(&peer) => Ok(()),
            Some(peer) => {
                tracing::warn!(%peer, "refused a handshake from a key outside the member set");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                ))
            }
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_signature(
        &self,
        message: &[u8],
        presented: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(presented.as_ref()),
            dss,
            &self.algorithms,
        )
    }
}

/// Both verifiers refuse TLS 1.2 signatures: raw public keys are only offered with TLS 1.3.
fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

impl ServerCertVerifier for MemberVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.admit(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for MemberVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.admit(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The member key as a rustls signing identity whose "certificate" is its raw SPKI.
fn certified_key(
    signing_key: &SigningKey,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, QuicError> {
    let pkcs8 = signing_key
        .to_pkcs8_der()
        .map_err(|error| QuicError::Tls(format!("encoding the member key: {error}")))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec()));
    let key = provider
        .key_provider
        .load_private_key(der)
        .map_err(|error| QuicError::Tls(format!("loading the member key: {error}")))?;
    let spki = spki_of(&PeerId::from_bytes(signing_key.verifying_key().to_bytes()));
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki)],
        key,
    )))
}

/// Socket buffer size asked for; the kernel caps it (`net.core.rmem_max`, `wmem_max`).
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// A UDP socket bound to `listen` with large buffers. Linux's default receive buffer (~200 KiB)
/// holds a few milliseconds of a fast transfer; when the receiving task is late the kernel
/// drops datagrams, and QUIC reads the drops as congestion (and as an MTU black hole).
fn udp_socket(listen: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    // Best effort: a smaller buffer is slower, not wrong.
    if let Err(error) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!(%error, "could not enlarge the UDP receive buffer");
    }
    if let Err(error) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!(%error, "could not enlarge the UDP send buffer");
    }
    if listen.is_ipv6() {
        // As quinn's own binding does: an IPv6 socket serves IPv4-mapped peers too.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&listen.into())?;
    Ok(socket.into())
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config
        .max_concurrent_bidi_streams(MAX_CONCURRENT_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(MAX_CONCURRENT_UNI_STREAMS.into())
        .stream_receive_window((16u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20)
        .keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        config.max_idle_timeout(Some(idle));
    }
    Arc::new(config)
}

fn tls_configs(
    signing_key: &SigningKey,
    members: BTreeSet<PeerId>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), QuicError> {
    let provider = provider();
    let identity = certified_key(signing_key, &provider)?;
    let verifier = Arc::new(MemberVerifier {
        members,
        algorithms: provider.signature_verification_algorithms,
    });
    let tls_error = |error: rustls::Error| QuicError::Tls(error.to_string());

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(identity.clone()),
        ));
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(identity),
        ));
    client.alpn_protocols = vec![ALPN.to_vec()];

    let quic_error =
        |error: quinn::crypto::rustls::NoInitialCipherSuite| QuicError::Tls(error.to_string());
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).map_err(quic_error)?,
    ));
    server_config.transport_config(transport_config());
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client).map_err(quic_error)?,
    ));
    client_config.transport_config(transport_config());
    Ok((server_config, client_config))
}

/// One cached outgoing connection per peer; the per-peer lock makes concurrent requests share
/// one handshake.
type ConnectionSlot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// A QUIC endpoint that serves a [`Handler`] and sends requests to member peers.
pub struct QuicTransport {
    local: PeerId,
    endpoint: quinn::Endpoint,
    members: BTreeSet<PeerId>,
    addresses: std::sync::RwLock<BTreeMap<PeerId, SocketAddr>>,
    connections: Mutex<BTreeMap<PeerId, ConnectionSlot>>,
    accept_task: JoinHandle<()>,
}

impl QuicTransport {
    /// Binds `listen`, serving `handler`, and admits exactly the keys in `members` (each with the
    /// address it listens on; see [`Self::set_address`] to change one). Must be called inside a
    /// tokio runtime.
    pub fn bind(
        signing_key: &SigningKey,
        listen: SocketAddr,
        members: BTreeMap<PeerId, SocketAddr>,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, QuicError> {
        let member_keys: BTreeSet<PeerId> = members.keys().copied().collect();
        let (server_config, client_config) = tls_configs(signing_key, member_keys.clone())?;
        let bind_error = |reason: String| QuicError::Bind {
            addr: listen,
            reason,
        };
        let socket = udp_socket(listen).map_err(|e| bind_error(e.to_string()))?;
        let runtime =
            quinn::default_runtime().ok_or_else(|| bind_error("no tokio runtime".to_string()))?;
        let mut endpoint = quinn::Endpoint::new(
            endpoint_config(signing_key),
            Some(server_config),
            socket,
            runtime,
        )
        .map_err(|e| bind_error(e.to_string()))?;
        endpoint.set_default_client_config(client_config);
        let allowances: Arc<BTreeMap<PeerId, Arc<PeerAllowance>>> = Arc::new(
            member_keys
                .iter()
                .map(|member| (*member, Arc::new(PeerAllowance::new())))
                .collect(),
        );
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), handler, allowances));
        Ok(Self {
            local: PeerId::from_bytes(signing_key.verifying_key().to_bytes()),
            endpoint,
            members: member_keys,
            addresses: std::sync::RwLock::new(members),
            connections: Mutex::new(BTreeMap::new()),
            accept_task,
        })
    }

    /// Sets where member `peer` listens; returns `false` (and changes nothing) for a key outside
    /// the member set.
    pub fn set_address(&self, peer: PeerId, addr: SocketAddr) -> bool {
        if !self.members.contains(&peer) {
            return false;
        }
        self.addresses
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, addr);
        true
    }

    /// The address the endpoint is bound to (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, std::io::Error> {
        self.endpoint.local_addr()
    }

    /// Closes every connection and stops serving; waits briefly for peers to be told.
    pub async fn shutdown(&self) {
        self.accept_task.abort();
        self.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    fn slot(&self, peer: PeerId) -> ConnectionSlot {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connections.entry(peer).or_default().clone()
    }

    /// The live connection to `peer`, dialling (and checking its key) if needed. Connections are
    /// cached and shared by all requests to that peer.
    pub async fn connection(&self, peer: PeerId) -> Result<quinn::Connection, TransportError> {
        let addr = *self
            .addresses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .ok_or(TransportError::UnknownPeer { peer })?;
        let slot = self.slot(peer);
        let mut cached = slot.lock().await;
        if let Some(connection) = cached.as_ref()
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        let unreachable = |reason: String| TransportError::Unreachable { peer, reason };
        let connecting = self
            .endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|error| unreachable(error.to_string()))?;
        let connection = connecting
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        if peer_of_connection(&connection) != Some(peer) {
            connection.close(1u32.into(), b"unexpected key");
            return Err(unreachable(format!(
                "{addr} answered with another member's key"
            )));
        }
        *cached = Some(connection.clone());
        Ok(connection)
    }

    async fn exchange(&self, peer: PeerId, request: &Request) -> Result<Response, TransportError> {
        let connection = self.connection(peer).await?;
        let lost = |connection: &quinn::Connection, fallback: String| {
            let reason = connection
                .close_reason()
                .map_or(fallback, |reason| reason.to_string());
            TransportError::Unreachable { peer, reason }
        };
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|error| lost(&connection, error.to_string()))?;
        let bad_reply = |source| TransportError::BadReply { peer, source };
        write_frame(&mut send, request)
            .await
            .map_err(|error| lost(&connection, error.to_string()))?;
        send.finish()
            .map_err(|error| lost(&connection, error.to_string()))?;
        let body = match read_only_frame(&mut recv, MAX_FRAME_BYTES).await {
            Ok(body) => body,
            // A broken or cut-short stream is the network or a stopping peer, not a lie.
            Err(error @ (FrameError::Io(_) | FrameError::Truncated)) => {
                return Err(lost(&connection, error.to_string()));
            }
            Err(error) => return Err(bad_reply(error)),
        };
        decode_body(&body).map_err(bad_reply)
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.endpoint.close(0u32.into(), b"shutdown");
    }
}

impl Transport for QuicTransport {
    fn local_peer(&self) -> PeerId {
        self.local
    }

    async fn request(
        &self,
        peer: PeerId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        within(peer, timeout, self.exchange(peer, &request)).await
    }

    async fn send_message(&self, peer: PeerId, payload: Vec<u8>) -> Result<(), TransportError> {
        let connection = self.connection(peer).await?;
        let unreachable = |reason: String| TransportError::Unreachable { peer, reason };
        let mut send = connection
            .open_uni()
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        write_raw_frame(&mut send, &payload)
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        send.finish()
            .map_err(|error| unreachable(error.to_string()))
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    handler: Arc<dyn Handler>,
    allowances: Arc<BTreeMap<PeerId, Arc<PeerAllowance>>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let handler = handler.clone();
        let allowances = allowances.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => serve_connection(connection, handler, &allowances).await,
                Err(error) => tracing::debug!(%remote, %error, "handshake failed"),
            }
        });
    }
}

/// Serves one authenticated connection until it closes: each stream in its own task, so a slow
/// or malformed stream never holds up the others.
async fn serve_connection(
    connection: quinn::Connection,
    handler: Arc<dyn Handler>,
    allowances: &BTreeMap<PeerId, Arc<PeerAllowance>>,
) {
    let Some((peer, allowance)) = peer_of_connection(&connection)
        .and_then(|peer| Some((peer, allowances.get(&peer)?.clone())))
    else {
        connection.close(1u32.into(), b"no member key");
        return;
    };
    allowance.admit(&connection);
    loop {
        tokio::select! {
            biased;
            stream = connection.accept_bi() => {
                let Ok((send, recv)) = stream else { break };
                let handler = handler.clone();
                let allowance = allowance.clone();
                tokio::spawn(async move {
                    let served = serve_request_stream(
                        handler.as_ref(),
                        &peer,
                        recv,
                        send,
                        &allowance.allowance,
                    );
                    if let Err(error) = served.await {
                        tracing::debug!(%peer, %error, "request stream refused");
                    }
                });
            }
            stream = connection.accept_uni() => {
                let Ok(recv) = stream else { break };
                let handler = handler.clone();
                let allowance = allowance.clone();
                tokio::spawn(async move {
                    let served =
                        serve_message_stream(handler.as_ref(), &peer, recv, &allowance.allowance);
                    if let Err(error) = served.await {
                        tracing::debug!(%peer, %error, "message stream refused");
                    }
                });
            }
        }
    }
    allowance.release(&connection);
}
