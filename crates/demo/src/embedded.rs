//! A complete relay in-process: the relay crate's TLS control server with its delivery service
//! and media forwarder ([`blindcall_relay::start_with_media`]), a development certificate, a
//! random token secret, a metrics endpoint and the relay's control tap. For demos and
//! end-to-end tests; operators run `blindcall-relay` / `blindcall relay` instead.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blindcall_proto::Role;
use blindcall_relay::config::{RelayConfig, SecretSection};
use blindcall_relay::token::{self, TokenClaims};
use blindcall_relay::{
    ControlRecorder, ForwarderConfig, ForwarderHandle, RelayHandle, TappedFrame, TokenSecret,
};
use blindcall_transport::CountersSnapshot;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::mpsc;

use blindcall_client::TrustAnchor;

/// Why the embedded relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// Configuration (certificate, secret, limits) failed.
    #[error("relay configuration: {0}")]
    Config(#[from] blindcall_relay::ConfigError),
    /// The server failed to start.
    #[error("relay server: {0}")]
    Server(#[from] blindcall_relay::ServerError),
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
    /// Minting a token failed.
    #[error("token: {0}")]
    Token(#[from] blindcall_relay::token::TokenError),
    /// A cluster node's runtime could not be built.
    #[error("runtime: {0}")]
    Runtime(String),
    /// A cluster node could not reach its room store.
    #[error("room store: {0}")]
    Store(#[from] blindcall_relay::store::StoreError),
}

/// What makes an embedded relay one node of a cluster (see [`crate::cluster`]).
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The NATS server's URL.
    pub nats: String,
    /// This node's id.
    pub node_id: String,
    /// The certificate every node serves (PEM file) ...
    pub cert_pem: std::path::PathBuf,
    /// ... its key (PEM file) ...
    pub key_pem: std::path::PathBuf,
    /// ... and the certificate as clients trust it (DER).
    pub cert_der: Vec<u8>,
    /// The external-sender key file every node shares.
    pub external_sender_key_file: std::path::PathBuf,
    /// The token secret every node shares (hex).
    pub secret_hex: String,
    /// The node's lease (heartbeats every third of it).
    pub lease: Duration,
}

/// Options of [`EmbeddedRelay::start`].
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Keep a copy of every RTP payload the forwarder receives (after SRTP removal) and of
    /// every control frame the relay reads or writes (after TLS removal).
    pub tap: bool,
    /// How long a member whose connection was lost keeps its leaf for a resume (`None`: the
    /// relay's default, 20 s).
    pub resume_grace: Option<std::time::Duration>,
    /// Run as one node of a relay cluster (`None`: a single relay, rooms in memory).
    pub node: Option<NodeOptions>,
}

/// A running in-process relay.
pub struct EmbeddedRelay {
    handle: RelayHandle,
    cert_der: Vec<u8>,
    fingerprint: String,
    secret_hex: String,
    forwarder: ForwarderHandle,
    tapped: Arc<Mutex<Vec<Vec<u8>>>>,
    control: ControlRecorder,
}

impl std::fmt::Debug for EmbeddedRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRelay")
            .field("addr", &self.handle.local_addr())
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

pub(crate) fn random_hex(n: usize) -> Result<String, EmbeddedError> {
    let mut b = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| EmbeddedError::Random)?;
    Ok(hex::encode(b))
}

impl EmbeddedRelay {
    /// Starts a relay on 127.0.0.1 (ephemeral port) with a fresh self-signed certificate.
    pub async fn start(opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let secret_hex = match &opts.node {
            Some(n) => n.secret_hex.clone(),
            None => random_hex(32)?,
        };
        let mut cfg = match &opts.node {
            Some(n) => RelayConfig::from_toml(&format!(
                "listen = \"127.0.0.1:0\"\n\
                 [tls]\n\
                 cert = {cert:?}\n\
                 key = {key:?}\n\
                 [cluster]\n\
                 nats = {nats:?}\n\
                 node_id = {id:?}\n\
                 external_sender_key_file = {keys:?}\n\
                 lease_ms = {lease}\n\
                 heartbeat_ms = {beat}\n",
                cert = n.cert_pem.display().to_string(),
                key = n.key_pem.display().to_string(),
                nats = n.nats,
                id = n.node_id,
                keys = n.external_sender_key_file.display().to_string(),
                lease = n.lease.as_millis(),
                beat = (n.lease / 4).as_millis(),
            ))?,
            None => {
                let mut cfg = RelayConfig::with_listen(SocketAddr::from(([127, 0, 0, 1], 0)));
                cfg.tls.dev_self_signed = true;
                cfg
            }
        };
        cfg.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        if let Some(g) = opts.resume_grace {
            cfg.limits.resume_grace_secs = g.as_secs_f64();
        }
        cfg.token_secret = SecretSection {
            hex: Some(secret_hex.clone()),
            ..SecretSection::default()
        };
        let mut resolved = cfg.resolve(&|_| None)?;
        let (cert_der, fingerprint) = match (&opts.node, &resolved.dev_cert) {
            (Some(n), _) => (
                n.cert_der.clone(),
                blindcall_proto::tls::cert_fingerprint(&n.cert_der),
            ),
            (None, Some(dev)) => (dev.der().to_vec(), dev.fingerprint()),
            (None, None) => {
                return Err(EmbeddedError::Config(blindcall_relay::ConfigError::NoTls));
            }
        };
        if let Some(node) = &resolved.cluster {
            let store = blindcall_relay::store::RoomStore::jetstream(node.store.clone()).await?;
            resolved.server.store = Some(store);
        }
        let tapped: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let tap = if opts.tap {
            let (tx, mut rx) = mpsc::channel::<blindcall_transport::TappedPacket>(1 << 16);
            let sink = Arc::clone(&tapped);
            tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    let payload: Vec<u8> = p.packet.payload.to_vec();
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(payload);
                }
            });
            Some(tx)
        } else {
            None
        };
        let control = ControlRecorder::new();
        let mut server = resolved.server;
        if opts.tap {
            server.control_tap = Some(Arc::new(control.clone()));
        }
        let (handle, forwarder) = blindcall_relay::start_with_media(
            server,
            ForwarderConfig {
                tap,
                ..ForwarderConfig::default()
            },
        )
        .await?;
        Ok(Self {
            handle,
            cert_der,
            fingerprint,
            secret_hex,
            forwarder,
            tapped,
            control,
        })
    }

    /// The control channel's address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The metrics endpoint's address (`GET /metrics`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.handle.metrics_addr()
    }

    /// The trust anchor clients need (the development certificate).
    pub fn trust(&self) -> TrustAnchor {
        TrustAnchor::CertificateDer(self.cert_der.clone())
    }

    /// SHA-256 fingerprint of the development certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Mints a capability token for `room` with `role`, valid for `ttl`.
    pub fn mint(&self, room: &str, role: Role, ttl: Duration) -> Result<String, EmbeddedError> {
        mint_with(&self.secret_hex, room, role, ttl)
    }

    /// Forwarding counters so far.
    pub fn forwarded(&self) -> CountersSnapshot {
        self.forwarder.counters()
    }

    /// Every RTP payload the forwarder received so far (with [`EmbeddedOptions::tap`]).
    pub fn tapped_payloads(&self) -> Vec<Vec<u8>> {
        self.tapped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every control frame the relay read or wrote so far, after TLS removal (with
    /// [`EmbeddedOptions::tap`]).
    pub fn control_frames(&self) -> Vec<TappedFrame> {
        self.control.frames()
    }

    /// Shuts the relay down and waits for it.
    pub async fn shutdown(self) {
        self.handle.shutdown();
        let _ = self.handle.wait().await;
    }
}

/// Mints a capability token for `room` with `role`, valid for `ttl`, under the secret `hex`.
pub(crate) fn mint_with(
    secret_hex: &str,
    room: &str,
    role: Role,
    ttl: Duration,
) -> Result<String, EmbeddedError> {
    let secret = TokenSecret::from_hex(secret_hex)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut token_id = [0u8; 16];
    SystemRandom::new()
        .fill(&mut token_id)
        .map_err(|_| EmbeddedError::Random)?;
    Ok(token::mint(
        &secret,
        &TokenClaims {
            room_id: room.as_bytes().to_vec(),
            role,
            expires_at: now.saturating_add(ttl.as_secs()),
            token_id,
        },
    )?)
}
