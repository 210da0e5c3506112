//! The operator's configuration (`relay.toml`): parsing, validation and resolution into a
//! [`ServerConfig`].
//!
//! Parsing refuses unknown keys (a typo is an error, not a silently ignored setting). Resolution
//! loads the token secret (inline hex, a file or an environment variable — exactly one), loads or
//! generates the TLS certificate, and checks every limit, each failure being a [`ConfigError`]
//! that names the setting.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use blindcall_transport::MediaNetwork;
use openmls::prelude::SignatureScheme;
use openmls_basic_credential::SignatureKeyPair;
use serde::Deserialize;
use thiserror::Error;

use crate::ds::{ChallengeSeed, DsConfig, HomesConfig, RelayIdentities, RelayIdentity};
use crate::server::tls::{self, DevCert, TlsError};
use crate::server::{ServerConfig, ShellLimits};
use crate::store::JetStreamConfig;
use crate::token::{TokenError, TokenSecret};

/// The environment variable read for the token secret when no config file names one.
pub const DEFAULT_SECRET_ENV: &str = "BLINDCALL_TOKEN_SECRET";

/// An example `relay.toml`, printed by `blindcall-relay --print-example-config`.
pub const EXAMPLE_CONFIG: &str = r#"# blindcall relay configuration
# Control channel (TLS 1.3): clients connect here.
listen = "0.0.0.0:4433"
# Prometheus metrics (plain HTTP, GET /metrics). Keep it on a private interface; omit to disable.
metrics_listen = "127.0.0.1:9464"

[tls]
# A certificate chain and private key in PEM ...
cert = "/etc/blindcall/relay-cert.pem"
key = "/etc/blindcall/relay-key.pem"
# ... or, for development only, a fresh self-signed certificate at every start. Its PEM is
# written to dev_cert_out (clients trust or pin it) and its SHA-256 fingerprint is printed.
# dev_self_signed = true
# dev_cert_out = "relay-dev-cert.pem"
# dev_names = ["localhost", "127.0.0.1"]

[token_secret]
# The operator's capability-token secret: at least 32 bytes, hex-encoded. Exactly one of:
env = "BLINDCALL_TOKEN_SECRET"
# file = "/etc/blindcall/token-secret.hex"
# hex = "..."

[limits]
max_frame_len = 1048576          # bytes per control frame
rate_burst = 64                  # messages a connection may send in a burst
rate_per_second = 20             # sustained messages per second
max_errors_per_connection = 16   # error replies before the relay closes the connection
idle_timeout_secs = 60           # silence (no byte, not even Ping) before the relay closes
hello_timeout_secs = 10          # TLS connection to Hello
handshake_timeout_secs = 10      # TCP accept to finished TLS handshake
waiting_room_timeout_secs = 300  # joiner not added by then is refused
resume_grace_secs = 20           # a lost member's leaf is kept this long for a resume; 0 = none
commit_history = 64              # sequenced commits kept per room (resumes replay from them)
max_connections = 10000          # further TCP connections are closed at once
max_connections_per_address = 256  # per source address (IPv6: per /64), TLS handshakes included
max_connections_per_token = 128  # per capability token in its room (Refused TOO_MANY_CONNECTIONS)
max_frame_len_before_hello = 4096  # bytes per frame before a connection is admitted
max_key_package_len = 16384      # bytes per KeyPackage (Error KEY_PACKAGE_TOO_LARGE)
max_waiting_per_room = 128       # joiners in one waiting room (Refused WAITING_ROOM_FULL)
max_waiting_per_token = 100      # joiners of one token in its waiting room
peer_rate_burst = 40             # members' peer messages in a burst (own budget)
peer_rate_per_second = 10        # sustained peer messages per second; excess dropped, counted
max_peer_payload = 16384         # bytes per peer message; larger ones dropped, counted
read_chunk = 16384               # bytes per read from a connection
writer_queue = 256               # frames queued per connection before it counts as stuck
shutdown_grace_secs = 5          # time to flush goodbyes on SIGTERM/SIGINT

[media]
# Address of the WebRTC forwarder's UDP sockets (one ephemeral port per participant). The
# default, 127.0.0.1, serves clients on this machine only: set an interface address that
# clients can reach, and open UDP to it.
bind = "127.0.0.1"
# Behind a 1:1 NAT (e.g. a cloud instance's public address), the address clients should send
# media to; candidates on `bind` are advertised with it instead.
# advertise = "203.0.113.10"

# [cluster]
# Run as one node of a relay cluster: commits are sequenced in a room store on NATS JetStream
# shared by every node (spec/cluster.md). The relay refuses to start when NATS is unreachable.
# Omit the section for a single relay (rooms in memory).
# nats = "nats://127.0.0.1:4222"
# node_id = "relay-1"            # unique per node: letters, digits, '-' and '_', 1..=64
# bucket = "blindcall_rooms"     # the JetStream KV bucket (the same on every node)
# replicas = 1                   # bucket replicas when this node creates it (3 on 3 servers)
# The relay's MLS external-sender keys, the same file on every node (members accept a removal
# proposed by the relay only from the keys their group lists). Required in cluster mode; create
# it once with `blindcall-relay --new-external-sender-key FILE` and copy it to every node. Secret.
# external_sender_key_file = "/etc/blindcall/external-sender.keys"
# Each room is served by one node, its home; the other nodes redirect its clients there, so
# every node's advertised address must be reachable by clients (default: `listen`, which must
# then not be 0.0.0.0 or ::).
# advertise = "relay-1.example.com:4433"
# lease_ms = 3000                # a node with no new heartbeat for this long is dead
# heartbeat_ms = 1000            # default lease_ms / 3; must be below lease_ms
# drain = false                  # on SIGTERM, hand this node's rooms to other nodes first
"#;

/// A configuration error, naming the setting at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key, wrong type).
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// No token secret source was given.
    #[error(
        "no token secret: set one of [token_secret] hex, file or env (or {DEFAULT_SECRET_ENV})"
    )]
    NoTokenSecret,
    /// More than one token secret source was given.
    #[error("[token_secret] must set exactly one of hex, file or env")]
    ConflictingTokenSecret,
    /// The named environment variable is not set.
    #[error("environment variable {var} (token secret) is not set")]
    SecretEnvMissing {
        /// The variable.
        var: String,
    },
    /// The secret file could not be read.
    #[error("cannot read token secret file {path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret is not valid (not hex, too short).
    #[error("token secret: {0}")]
    Secret(#[from] TokenError),
    /// Neither a certificate nor `dev_self_signed` was configured.
    #[error("no TLS certificate: set [tls] cert and key, or dev_self_signed = true")]
    NoTls,
    /// Both a certificate and `dev_self_signed` were configured, or only one of cert/key.
    #[error("[tls]: set both cert and key, or dev_self_signed = true, not both")]
    ConflictingTls,
    /// Loading or generating the certificate failed.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// A limit is out of range.
    #[error("[limits] {field} {problem}")]
    Limit {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The `[media]` section is inconsistent.
    #[error("[media] {0}")]
    Media(&'static str),
    /// `[cluster] node_id` is not 1..=64 of `[A-Za-z0-9_-]`.
    #[error("[cluster] node_id must be 1 to 64 letters, digits, '-' or '_'")]
    BadNodeId,
    /// `[cluster] nats` is empty.
    #[error("[cluster] nats must name the NATS server, e.g. nats://127.0.0.1:4222")]
    NoClusterUrl,
    /// `[cluster] replicas` is out of range.
    #[error("[cluster] replicas must be 1 to 5")]
    BadReplicas,
    /// Cluster mode without an address clients can be redirected to.
    #[error(
        "[cluster] advertise (or --advertise HOST:PORT) is required: the listen address {0} is \
         not one clients can be redirected to"
    )]
    UnspecifiedAdvertise(SocketAddr),
    /// `[cluster] advertise` is not `host:port`.
    #[error("[cluster] advertise must be host:port, e.g. relay-1.example.com:4433")]
    BadAdvertise,
    /// `[cluster] lease_ms` / `heartbeat_ms` are zero or the heartbeat is not below the lease.
    #[error("[cluster] heartbeat_ms must be above 0 and below lease_ms")]
    BadLease,
    /// Cluster mode without `[cluster] external_sender_key_file` (or `--external-sender-key`).
    #[error(
        "[cluster] external_sender_key_file is required: every node signs with the same MLS \
         external-sender keys (create one with blindcall-relay --new-external-sender-key FILE)"
    )]
    NoExternalSenderKey,
    /// The external-sender key file is missing or corrupt (named, without key material).
    #[error(transparent)]
    ExternalSenderKey(#[from] crate::keyfile::KeyFileError),
    /// Generating the relay's MLS external-sender key failed.
    #[error("cannot generate the relay's MLS signature key")]
    RelayIdentity,
    /// The operating system's random generator failed (for the resume-challenge seed).
    #[error("cannot draw random bytes from the operating system")]
    Random,
}

/// `relay.toml` as written by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The control channel's listen address.
    pub listen: SocketAddr,
    /// The metrics endpoint's listen address; `None` disables it.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Certificate source.
    #[serde(default)]
    pub tls: TlsSection,
    /// Token secret source.
    #[serde(default)]
    pub token_secret: SecretSection,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// The media forwarder's addresses.
    #[serde(default)]
    pub media: MediaSection,
    /// Cluster mode: the shared room store and this node's id; `None` for a single relay.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
}

/// `[cluster]`: this relay is one node of a cluster sharing a room store on NATS JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The NATS server URL(s), e.g. `nats://127.0.0.1:4222` (comma-separated for several).
    pub nats: String,
    /// This node's id, unique in the cluster: 1..=64 of `[A-Za-z0-9_-]`.
    pub node_id: String,
    /// The KV bucket of the room store (the same on every node).
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// Replicas of the bucket when this node creates it.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// The MLS external-sender key file, the same on every node (required in cluster mode:
    /// members accept a Remove proposal only from a key in their group context, so every node
    /// must sign with the same keys; `crate::keyfile`).
    #[serde(default)]
    pub external_sender_key_file: Option<PathBuf>,
    /// The address clients reach this node at, `host:port`, sent in redirects to it (default:
    /// the listen address, which must then be a specific address).
    #[serde(default)]
    pub advertise: Option<String>,
    /// A node with no new heartbeat for this long is dead, in milliseconds (default 3000).
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How often this node beats, in milliseconds (default a third of the lease).
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// On SIGTERM, hand the rooms this node serves to other nodes before exiting.
    #[serde(default)]
    pub drain: bool,
}

fn default_lease_ms() -> u64 {
    3000
}

fn default_bucket() -> String {
    crate::store::DEFAULT_BUCKET.to_owned()
}

fn default_replicas() -> usize {
    1
}

/// A validated `[cluster]` section: what the relay connects to at start.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// This node's id.
    pub node_id: String,
    /// The external-sender key file every node shares (required by [`RelayConfig::resolve`]).
    pub external_sender_key_file: Option<PathBuf>,
    /// How to reach the room store.
    pub store: JetStreamConfig,
}

impl ClusterSection {
    /// Check the node id and the URL.
    pub fn validate(&self) -> Result<ClusterNode, ConfigError> {
        let id_ok = (1..=64).contains(&self.node_id.len())
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(ConfigError::BadNodeId);
        }
        if self.nats.trim().is_empty() {
            return Err(ConfigError::NoClusterUrl);
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ConfigError::BadReplicas);
        }
        let mut store = JetStreamConfig::new(self.nats.trim());
        store.bucket = self.bucket.clone();
        store.replicas = self.replicas;
        Ok(ClusterNode {
            node_id: self.node_id.clone(),
            external_sender_key_file: self.external_sender_key_file.clone(),
            store,
        })
    }

    /// This node's homes configuration (CL-NODE-6): the advertised address (the listen
    /// address by default, refused when unspecified), the lease and the heartbeat interval.
    pub fn homes(&self, listen: SocketAddr) -> Result<HomesConfig, ConfigError> {
        let addr = match &self.advertise {
            Some(a) => {
                let ok = blindcall_proto::Redirect {
                    relay: blindcall_proto::VLBytes::new(a.as_bytes().to_vec()),
                }
                .address()
                .is_some();
                if !ok {
                    return Err(ConfigError::BadAdvertise);
                }
                a.clone()
            }
            None if listen.ip().is_unspecified() => {
                return Err(ConfigError::UnspecifiedAdvertise(listen));
            }
            None => listen.to_string(),
        };
        let heartbeat_ms = self.heartbeat_ms.unwrap_or(self.lease_ms / 3);
        if heartbeat_ms == 0 || heartbeat_ms >= self.lease_ms {
            return Err(ConfigError::BadLease);
        }
        let mut homes = HomesConfig::new(self.node_id.clone(), addr);
        homes.lease = std::time::Duration::from_millis(self.lease_ms);
        homes.heartbeat = std::time::Duration::from_millis(heartbeat_ms);
        homes.drain = self.drain;
        Ok(homes)
    }
}

/// `[media]`: where the media forwarder's UDP sockets live and what address it advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// Local address of every participant's PeerConnection (default `127.0.0.1`).
    #[serde(default = "loopback")]
    pub bind: IpAddr,
    /// Public address advertised in place of `bind` (a relay behind a 1:1 NAT).
    #[serde(default)]
    pub advertise: Option<IpAddr>,
}

fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            bind: loopback(),
            advertise: None,
        }
    }
}

impl MediaSection {
    /// The forwarder's network settings; `advertise` needs a specific `bind` address (a
    /// wildcard offers every interface's own address, which no single public address replaces).
    pub fn network(&self) -> Result<MediaNetwork, ConfigError> {
        if self.advertise.is_some() && self.bind.is_unspecified() {
            return Err(ConfigError::Media(
                "advertise needs a specific bind address, not a wildcard",
            ));
        }
        Ok(MediaNetwork {
            bind: self.bind,
            advertise: self.advertise,
        })
    }
}

/// `[tls]`: a PEM certificate chain and key, or a development self-signed certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain (leaf first).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Generate a self-signed certificate at start (development only).
    #[serde(default)]
    pub dev_self_signed: bool,
    /// Where to write the self-signed certificate's PEM.
    #[serde(default)]
    pub dev_cert_out: Option<PathBuf>,
    /// Subject alternative names of the self-signed certificate.
    #[serde(default = "default_dev_names")]
    pub dev_names: Vec<String>,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            dev_self_signed: false,
            dev_cert_out: None,
            dev_names: default_dev_names(),
        }
    }
}

fn default_dev_names() -> Vec<String> {
    vec!["localhost".to_string(), "127.0.0.1".to_string()]
}

/// `[token_secret]`: exactly one of inline hex, a file holding hex, or an environment variable.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSection {
    /// The secret itself, hex-encoded (discouraged: config files get copied around).
    #[serde(default)]
    pub hex: Option<String>,
    /// A file containing the hex-encoded secret.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An environment variable containing the hex-encoded secret.
    #[serde(default)]
    pub env: Option<String>,
}

impl fmt::Debug for SecretSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSection")
            .field("hex", &self.hex.as_ref().map(|_| "<redacted>"))
            .field("file", &self.file)
            .field("env", &self.env)
            .finish()
    }
}

impl SecretSection {
    /// Load the secret; `env` looks up environment variables (injectable for tests).
    pub fn load(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<TokenSecret, ConfigError> {
        let set = [self.hex.is_some(), self.file.is_some(), self.env.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set > 1 {
            return Err(ConfigError::ConflictingTokenSecret);
        }
        if let Some(h) = &self.hex {
            return Ok(TokenSecret::from_hex(h)?);
        }
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                path: path.clone(),
                source,
            })?;
            return Ok(TokenSecret::from_hex(&text)?);
        }
        let var = self.env.as_deref().unwrap_or(DEFAULT_SECRET_ENV);
        match env(var) {
            Some(text) => Ok(TokenSecret::from_hex(&text)?),
            None if self.env.is_some() => Err(ConfigError::SecretEnvMissing {
                var: var.to_string(),
            }),
            None => Err(ConfigError::NoTokenSecret),
        }
    }
}

/// `[limits]`: every limit and timeout, with the defaults of [`Limits::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest control frame, in bytes (length prefix excluded).
    pub max_frame_len: u32,
    /// Messages a connection may send in a burst.
    pub rate_burst: u32,
    /// Sustained messages per second per connection.
    pub rate_per_second: u32,
    /// Error replies before the relay closes a connection.
    pub max_errors_per_connection: u32,
    /// Seconds without a received byte before a connection is closed; 0 disables.
    #[serde(deserialize_with = "de_secs")]
    pub idle_timeout_secs: f64,
    /// Seconds from connection to Hello.
    #[serde(deserialize_with = "de_secs")]
    pub hello_timeout_secs: f64,
    /// Seconds from TCP accept to a finished TLS handshake.
    #[serde(deserialize_with = "de_secs")]
    pub handshake_timeout_secs: f64,
    /// Seconds a joiner may wait to be added.
    #[serde(deserialize_with = "de_secs")]
    pub waiting_room_timeout_secs: f64,
    /// Seconds a member whose connection was lost keeps its leaf for a resume before the relay
    /// proposes its removal; 0 proposes it at once.
    #[serde(deserialize_with = "de_secs")]
    pub resume_grace_secs: f64,
    /// Sequenced commits kept per room (a resuming member gets those it missed from them).
    pub commit_history: usize,
    /// Simultaneous connections; further ones are closed at once.
    pub max_connections: usize,
    /// Simultaneous connections from one source address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Simultaneous admitted connections of one capability token in its room.
    pub max_connections_per_token: usize,
    /// Largest control frame before a connection is admitted, in bytes.
    pub max_frame_len_before_hello: u32,
    /// Largest KeyPackage stored, in bytes.
    pub max_key_package_len: usize,
    /// Most joiners in one room's waiting room.
    pub max_waiting_per_room: usize,
    /// Most joiners of one token in its room's waiting room.
    pub max_waiting_per_token: usize,
    /// Members' peer messages a member may send in a burst.
    pub peer_rate_burst: u32,
    /// Sustained peer messages per second per member.
    pub peer_rate_per_second: u32,
    /// Largest peer-message payload, in bytes.
    pub max_peer_payload: usize,
    /// Bytes per read from a connection.
    pub read_chunk: usize,
    /// Frames queued per connection before the connection counts as stuck and is closed.
    pub writer_queue: usize,
    /// Seconds to flush goodbyes at shutdown before connections are cut.
    #[serde(deserialize_with = "de_secs")]
    pub shutdown_grace_secs: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: blindcall_proto::DEFAULT_MAX_FRAME_LEN,
            rate_burst: 64,
            rate_per_second: 20,
            max_errors_per_connection: 16,
            idle_timeout_secs: 60.0,
            hello_timeout_secs: 10.0,
            handshake_timeout_secs: 10.0,
            waiting_room_timeout_secs: 300.0,
            resume_grace_secs: crate::ds::DEFAULT_RESUME_GRACE.as_secs_f64(),
            commit_history: crate::ds::DEFAULT_COMMIT_HISTORY,
            max_connections: 10_000,
            max_connections_per_address: 256,
            max_connections_per_token: 128,
            max_frame_len_before_hello: crate::ds::DEFAULT_MAX_FRAME_LEN_BEFORE_HELLO,
            max_key_package_len: crate::ds::DEFAULT_MAX_KEY_PACKAGE_LEN,
            max_waiting_per_room: 128,
            max_waiting_per_token: 100,
            peer_rate_burst: 40,
            peer_rate_per_second: 10,
            max_peer_payload: crate::ds::DEFAULT_MAX_PEER_PAYLOAD,
            read_chunk: 16 * 1024,
            writer_queue: 256,
            shutdown_grace_secs: 5.0,
        }
    }
}

/// Seconds as written in TOML: an integer or a float.
fn de_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(i64),
        Float(f64),
    }
    Ok(match Num::deserialize(d)? {
        // Precision loss only above 2^53 seconds, which validation refuses anyway.
        #[allow(clippy::cast_precision_loss)]
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    })
}

fn secs(field: &'static str, v: f64, allow_zero: bool) -> Result<Duration, ConfigError> {
    if !v.is_finite() || v < 0.0 || (v == 0.0 && !allow_zero) {
        return Err(ConfigError::Limit {
            field,
            problem: if allow_zero {
                "must be a finite number of seconds >= 0"
            } else {
                "must be a finite number of seconds > 0"
            },
        });
    }
    Duration::try_from_secs_f64(v).map_err(|_| ConfigError::Limit {
        field,
        problem: "is too large",
    })
}

/// The most sequenced commits a room may keep.
const MAX_COMMIT_HISTORY: usize = 1024;

/// Bytes a relay message needs around one KeyPackage or peer payload (headers, ids, name).
const FRAME_SLACK: usize = 2048;

fn nonzero<T: PartialEq + Default>(field: &'static str, v: T) -> Result<T, ConfigError> {
    if v == T::default() {
        return Err(ConfigError::Limit {
            field,
            problem: "must be greater than 0",
        });
    }
    Ok(v)
}

impl Limits {
    /// Check every limit and split them between the DS and the network shell.
    pub fn validate(&self) -> Result<(ValidatedLimits, ShellLimits), ConfigError> {
        // Smallest frame that can carry a Hello with a token and a KeyPackage.
        if self.max_frame_len < 4096 {
            return Err(ConfigError::Limit {
                field: "max_frame_len",
                problem: "must be at least 4096",
            });
        }
        // A Hello (room id, token, display name) fits in well under 1 KiB.
        if self.max_frame_len_before_hello < 1024
            || self.max_frame_len_before_hello > self.max_frame_len
        {
            return Err(ConfigError::Limit {
                field: "max_frame_len_before_hello",
                problem: "must be between 1024 and max_frame_len",
            });
        }
        // What the relay sends with one KeyPackage or peer message must fit in one frame.
        let room_in_frame = |len: usize| {
            usize::try_from(self.max_frame_len).is_ok_and(|f| len.saturating_add(FRAME_SLACK) <= f)
        };
        if self.max_key_package_len < 1024 || !room_in_frame(self.max_key_package_len) {
            return Err(ConfigError::Limit {
                field: "max_key_package_len",
                problem: "must be at least 1024 and 2048 bytes below max_frame_len",
            });
        }
        if self.max_peer_payload == 0 || !room_in_frame(self.max_peer_payload) {
            return Err(ConfigError::Limit {
                field: "max_peer_payload",
                problem: "must be greater than 0 and 2048 bytes below max_frame_len",
            });
        }
        let idle = secs("idle_timeout_secs", self.idle_timeout_secs, true)?;
        if !(1..=MAX_COMMIT_HISTORY).contains(&self.commit_history) {
            return Err(ConfigError::Limit {
                field: "commit_history",
                problem: "must be between 1 and 1024",
            });
        }
        let ds = ValidatedLimits {
            max_frame_len: self.max_frame_len,
            rate_burst: nonzero("rate_burst", self.rate_burst)?,
            rate_per_second: nonzero("rate_per_second", self.rate_per_second)?,
            max_errors_per_connection: self.max_errors_per_connection,
            idle_timeout: (!idle.is_zero()).then_some(idle),
            hello_timeout: secs("hello_timeout_secs", self.hello_timeout_secs, false)?,
            waiting_room_timeout: secs(
                "waiting_room_timeout_secs",
                self.waiting_room_timeout_secs,
                false,
            )?,
            resume_grace: secs("resume_grace_secs", self.resume_grace_secs, true)?,
            commit_history: self.commit_history,
            max_frame_len_before_hello: self.max_frame_len_before_hello,
            max_key_package_len: self.max_key_package_len,
            max_connections_per_token: nonzero(
                "max_connections_per_token",
                self.max_connections_per_token,
            )?,
            max_waiting_per_room: nonzero("max_waiting_per_room", self.max_waiting_per_room)?,
            max_waiting_per_token: nonzero("max_waiting_per_token", self.max_waiting_per_token)?,
            peer_rate_burst: nonzero("peer_rate_burst", self.peer_rate_burst)?,
            peer_rate_per_second: nonzero("peer_rate_per_second", self.peer_rate_per_second)?,
            max_peer_payload: self.max_peer_payload,
        };
        let shell = ShellLimits {
            handshake_timeout: secs("handshake_timeout_secs", self.handshake_timeout_secs, false)?,
            max_connections: nonzero("max_connections", self.max_connections)?,
            max_connections_per_address: nonzero(
                "max_connections_per_address",
                self.max_connections_per_address,
            )?,
            read_chunk: nonzero("read_chunk", self.read_chunk)?,
            writer_queue: nonzero("writer_queue", self.writer_queue)?,
            shutdown_grace: secs("shutdown_grace_secs", self.shutdown_grace_secs, true)?,
            ..ShellLimits::default()
        };
        Ok((ds, shell))
    }
}

/// The DS's share of [`Limits`], checked.
#[derive(Debug, Clone, Copy)]
pub struct ValidatedLimits {
    /// See [`Limits::max_frame_len`].
    pub max_frame_len: u32,
    /// See [`Limits::rate_burst`].
    pub rate_burst: u32,
    /// See [`Limits::rate_per_second`].
    pub rate_per_second: u32,
    /// See [`Limits::max_errors_per_connection`].
    pub max_errors_per_connection: u32,
    /// See [`Limits::idle_timeout_secs`]; `None` when disabled.
    pub idle_timeout: Option<Duration>,
    /// See [`Limits::hello_timeout_secs`].
    pub hello_timeout: Duration,
    /// See [`Limits::waiting_room_timeout_secs`].
    pub waiting_room_timeout: Duration,
    /// See [`Limits::resume_grace_secs`].
    pub resume_grace: Duration,
    /// See [`Limits::commit_history`].
    pub commit_history: usize,
    /// See [`Limits::max_frame_len_before_hello`].
    pub max_frame_len_before_hello: u32,
    /// See [`Limits::max_key_package_len`].
    pub max_key_package_len: usize,
    /// See [`Limits::max_connections_per_token`].
    pub max_connections_per_token: usize,
    /// See [`Limits::max_waiting_per_room`].
    pub max_waiting_per_room: usize,
    /// See [`Limits::max_waiting_per_token`].
    pub max_waiting_per_token: usize,
    /// See [`Limits::peer_rate_burst`].
    pub peer_rate_burst: u32,
    /// See [`Limits::peer_rate_per_second`].
    pub peer_rate_per_second: u32,
    /// See [`Limits::max_peer_payload`].
    pub max_peer_payload: usize,
}

impl ValidatedLimits {
    /// Apply to a DS configuration.
    pub fn apply(&self, ds: &mut DsConfig) {
        ds.max_frame_len = self.max_frame_len;
        ds.rate_burst = self.rate_burst;
        ds.rate_per_second = self.rate_per_second;
        ds.max_errors_per_connection = self.max_errors_per_connection;
        ds.idle_timeout = self.idle_timeout;
        ds.hello_timeout = self.hello_timeout;
        ds.waiting_room_timeout = self.waiting_room_timeout;
        ds.resume_grace = self.resume_grace;
        ds.commit_history = self.commit_history;
        ds.max_frame_len_before_hello = self.max_frame_len_before_hello;
        ds.max_key_package_len = self.max_key_package_len;
        ds.max_connections_per_token = self.max_connections_per_token;
        ds.max_waiting_per_room = self.max_waiting_per_room;
        ds.max_waiting_per_token = self.max_waiting_per_token;
        ds.peer_rate_burst = self.peer_rate_burst;
        ds.peer_rate_per_second = self.peer_rate_per_second;
        ds.max_peer_payload = self.max_peer_payload;
    }
}

/// A resolved configuration: what [`crate::server::start`] needs, plus the development
/// certificate if one was generated.
#[derive(Debug)]
pub struct Resolved {
    /// The server configuration.
    pub server: ServerConfig,
    /// The self-signed certificate, when `dev_self_signed`.
    pub dev_cert: Option<DevCert>,
    /// The media forwarder's network settings.
    pub media: MediaNetwork,
    /// Cluster mode: this node and its room store (connected at start, which fails when it is
    /// unreachable); `None` for a single relay.
    pub cluster: Option<ClusterNode>,
}

impl RelayConfig {
    /// Parse `relay.toml` text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// A configuration with default limits, listening on `listen`, no metrics, secret from
    /// [`DEFAULT_SECRET_ENV`] and no TLS source (set one).
    pub fn with_listen(listen: SocketAddr) -> Self {
        Self {
            listen,
            metrics_listen: None,
            tls: TlsSection::default(),
            token_secret: SecretSection::default(),
            limits: Limits::default(),
            media: MediaSection::default(),
            cluster: None,
        }
    }

    /// Validate and resolve: load the secret (environment through `env`), load or generate the
    /// certificate (writing a dev certificate's PEM to `dev_cert_out`), generate the relay's MLS
    /// external-sender key, check the limits.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, ConfigError> {
        let (ds_limits, shell) = self.limits.validate()?;
        let media = self.media.network()?;
        let cluster = self
            .cluster
            .as_ref()
            .map(ClusterSection::validate)
            .transpose()?;
        let secret = self.token_secret.load(env)?;
        let t = &self.tls;
        let (certs, key, dev_cert) = match (&t.cert, &t.key, t.dev_self_signed) {
            (None, None, false) => return Err(ConfigError::NoTls),
            (Some(c), Some(k), false) => {
                let (certs, key) = tls::load_pem(c, k)?;
                (certs, key, None)
            }
            (None, None, true) => {
                let dev = tls::generate_dev_cert(&t.dev_names)?;
                if let Some(out) = &t.dev_cert_out {
                    dev.write_pem(out)?;
                }
                let (certs, key) = dev.rustls_parts();
                (certs, key, Some(dev))
            }
            _ => return Err(ConfigError::ConflictingTls),
        };
        let tls = tls::server_config(certs, key)?;
        // A single relay's rooms live in its memory: fresh keys per start suffice. A cluster's
        // nodes must share them (CL-NODE-3).
        let identities = match &cluster {
            Some(node) => crate::keyfile::load_relay_identities(
                node.external_sender_key_file
                    .as_deref()
                    .ok_or(ConfigError::NoExternalSenderKey)?,
            )?,
            None => generate_relay_identities()?,
        };
        let mut ds = DsConfig::new(secret, identities, random_challenge_seed()?);
        ds_limits.apply(&mut ds);
        if let Some(section) = &self.cluster {
            ds.homes = Some(section.homes(self.listen)?);
        }
        Ok(Resolved {
            server: ServerConfig {
                listen: self.listen,
                metrics_listen: self.metrics_listen,
                tls,
                ds,
                limits: shell,
                media: None,
                metrics_sources: Vec::new(),
                control_tap: None,
                store: None,
            },
            dev_cert,
            media,
            cluster,
        })
    }
}

/// A fresh seed for the DS's resume challenges, from the operating system's generator.
pub fn random_challenge_seed() -> Result<ChallengeSeed, ConfigError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(seed.as_mut())
        .map_err(|_| ConfigError::Random)?;
    Ok(ChallengeSeed::new(*seed))
}

/// Fresh MLS external-sender identities for the relay: Ed25519 (ciphersuite 1) and ECDSA P-256
/// (ciphersuite 2). Rooms live in memory only, so new keys per process start are sufficient.
pub fn generate_relay_identities() -> Result<RelayIdentities, ConfigError> {
    let identity = |scheme| {
        let signer = SignatureKeyPair::new(scheme).map_err(|_| ConfigError::RelayIdentity)?;
        Ok::<_, ConfigError>(RelayIdentity::new(
            signer,
            crate::keyfile::relay_credential(),
        ))
    };
    Ok(RelayIdentities::new([
        identity(SignatureScheme::ED25519)?,
        identity(SignatureScheme::ECDSA_SECP256R1_SHA256)?,
    ]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SECRET_HEX: &str = "4242424242424242424242424242424242424242424242424242424242424242";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    // covers: OPS-CFG-1, OPS-CFG-2
    #[test]
    fn example_config_parses_and_resolves_with_env_secret() {
        let mut cfg = RelayConfig::from_toml(EXAMPLE_CONFIG).unwrap();
        assert_eq!(
            cfg.listen,
            "0.0.0.0:4433".parse::<std::net::SocketAddr>().unwrap()
        );
        assert_eq!(cfg.token_secret.env.as_deref(), Some(DEFAULT_SECRET_ENV));
        // The example names certificate files that do not exist here: use a dev cert instead.
        cfg.tls = TlsSection {
            dev_self_signed: true,
            ..TlsSection::default()
        };
        let env = |v: &str| (v == DEFAULT_SECRET_ENV).then(|| SECRET_HEX.to_string());
        let r = cfg.resolve(&env).unwrap();
        assert!(r.dev_cert.is_some());
        assert_eq!(r.server.ds.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(r.server.limits.writer_queue, 256);
        // The example states the defaults of every cap.
        let d = crate::ds::DsConfig::new(
            crate::token::TokenSecret::from_hex(SECRET_HEX).unwrap(),
            generate_relay_identities().unwrap(),
            random_challenge_seed().unwrap(),
        );
        let ds = &r.server.ds;
        assert_eq!(
            (
                ds.max_frame_len_before_hello,
                ds.max_key_package_len,
                ds.max_connections_per_token,
                ds.max_waiting_per_room,
                ds.max_waiting_per_token,
            ),
            (
                d.max_frame_len_before_hello,
                d.max_key_package_len,
                d.max_connections_per_token,
                d.max_waiting_per_room,
                d.max_waiting_per_token,
            )
        );
        assert_eq!(
            (
                ds.peer_rate_burst,
                ds.peer_rate_per_second,
                ds.max_peer_payload
            ),
            (
                d.peer_rate_burst,
                d.peer_rate_per_second,
                d.max_peer_payload
            )
        );
        assert_eq!(
            (ds.resume_grace, ds.commit_history),
            (d.resume_grace, d.commit_history)
        );
        assert_eq!(
            r.server.limits.max_connections_per_address,
            ShellLimits::default().max_connections_per_address
        );
        assert_eq!(r.media, MediaNetwork::default());
    }

    // covers: OPS-CFG-1, MT-NET-1
    #[test]
    fn media_addresses_are_configured_and_checked() {
        let base = format!(
            "listen = \"127.0.0.1:0\"\n[tls]\ndev_self_signed = true\n\
             [token_secret]\nhex = \"{SECRET_HEX}\"\n"
        );
        let resolve = |extra: &str| {
            RelayConfig::from_toml(&format!("{base}{extra}"))
                .and_then(|c| c.resolve(&no_env))
                .map(|r| r.media)
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            resolve("[media]\nbind = \"10.1.2.3\"\nadvertise = \"203.0.113.10\"\n").unwrap(),
            MediaNetwork {
                bind: ip("10.1.2.3"),
                advertise: Some(ip("203.0.113.10")),
            }
        );
        assert!(matches!(
            resolve("[media]\nbind = \"0.0.0.0\"\nadvertise = \"203.0.113.10\"\n"),
            Err(ConfigError::Media(_))
        ));
        assert!(matches!(
            resolve("[media]\nbind = \"not-an-ip\"\n"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            resolve("[media]\nport = 5\n"),
            Err(ConfigError::Parse(_))
        ));
    }

    // covers: OPS-CFG-1, OPS-CFG-2, OPS-CFG-3
    #[test]
    fn every_misconfiguration_is_a_named_error() {
        let base = "listen = \"127.0.0.1:0\"\n";
        let parse = |extra: &str| RelayConfig::from_toml(&format!("{base}{extra}"));
        // Unknown keys and wrong types are refused.
        assert!(matches!(parse("lisen = 1\n"), Err(ConfigError::Parse(_))));
        assert!(matches!(
            parse("[limits]\nrate_burst = \"many\"\n"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            RelayConfig::from_toml("listen = \"nowhere\"\n"),
            Err(ConfigError::Parse(_))
        ));
        let dev = "[tls]\ndev_self_signed = true\n";
        let resolve = |extra: &str| parse(extra).unwrap().resolve(&no_env).map(|_| ());
        assert!(matches!(resolve(dev), Err(ConfigError::NoTokenSecret)));
        let hex = format!("[token_secret]\nhex = \"{SECRET_HEX}\"\n");
        assert!(matches!(resolve(&hex), Err(ConfigError::NoTls)));
        assert!(matches!(
            resolve(&format!("{dev}cert = \"c.pem\"\n{hex}")),
            Err(ConfigError::ConflictingTls)
        ));
        assert!(matches!(
            resolve(&format!("[tls]\ncert = \"c.pem\"\n{hex}")),
            Err(ConfigError::ConflictingTls)
        ));
        assert!(matches!(
            resolve(&format!(
                "{dev}[token_secret]\nhex = \"{SECRET_HEX}\"\nenv = \"X\"\n"
            )),
            Err(ConfigError::ConflictingTokenSecret)
        ));
        assert!(matches!(
            resolve(&format!("{dev}[token_secret]\nenv = \"NOPE\"\n")),
            Err(ConfigError::SecretEnvMissing { var }) if var == "NOPE"
        ));
        assert!(matches!(
            resolve(&format!("{dev}[token_secret]\nhex = \"abcd\"\n")),
            Err(ConfigError::Secret(TokenError::SecretTooShort { len: 2 }))
        ));
        assert!(matches!(
            resolve(&format!(
                "{dev}[token_secret]\nfile = \"/nonexistent/secret\"\n"
            )),
            Err(ConfigError::SecretFile { .. })
        ));
        assert!(matches!(
            resolve(&format!(
                "[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n{hex}"
            )),
            Err(ConfigError::Tls(TlsError::Read { .. }))
        ));
        for (limit, field) in [
            (
                "max_connections_per_address = 0",
                "max_connections_per_address",
            ),
            ("max_connections_per_token = 0", "max_connections_per_token"),
            (
                "max_frame_len_before_hello = 100",
                "max_frame_len_before_hello",
            ),
            (
                "max_frame_len = 8192\nmax_frame_len_before_hello = 8193",
                "max_frame_len_before_hello",
            ),
            (
                "max_frame_len = 8192\nmax_key_package_len = 8000",
                "max_key_package_len",
            ),
            ("max_peer_payload = 0", "max_peer_payload"),
            ("max_waiting_per_room = 0", "max_waiting_per_room"),
            ("max_waiting_per_token = 0", "max_waiting_per_token"),
            ("peer_rate_burst = 0", "peer_rate_burst"),
            ("peer_rate_per_second = 0", "peer_rate_per_second"),
            ("rate_burst = 0", "rate_burst"),
            ("idle_timeout_secs = -1.0", "idle_timeout_secs"),
            ("hello_timeout_secs = 0.0", "hello_timeout_secs"),
            ("max_frame_len = 100", "max_frame_len"),
            ("writer_queue = 0", "writer_queue"),
            ("resume_grace_secs = -1", "resume_grace_secs"),
            ("commit_history = 0", "commit_history"),
            ("commit_history = 1025", "commit_history"),
        ] {
            let r = resolve(&format!("{dev}{hex}[limits]\n{limit}\n"));
            assert!(
                matches!(r, Err(ConfigError::Limit { field: f, .. }) if f == field),
                "{limit}: {r:?}"
            );
        }
        // idle_timeout_secs = 0 disables the idle timeout.
        let r = parse(&format!("{dev}{hex}[limits]\nidle_timeout_secs = 0\n"))
            .unwrap()
            .resolve(&no_env)
            .unwrap();
        assert_eq!(r.server.ds.idle_timeout, None);
        // resume_grace_secs = 0 proposes a lost member's removal at once; both keys are read.
        let r = parse(&format!(
            "{dev}{hex}[limits]\nresume_grace_secs = 0\ncommit_history = 100\n"
        ))
        .unwrap()
        .resolve(&no_env)
        .unwrap();
        assert_eq!(
            (r.server.ds.resume_grace, r.server.ds.commit_history),
            (Duration::ZERO, 100)
        );
        // The inline secret never shows in Debug output.
        let cfg = parse(&format!("{dev}{hex}")).unwrap();
        assert!(!format!("{cfg:?}").contains(SECRET_HEX));
    }

    // covers: CL-NODE-6
    #[test]
    fn a_cluster_node_advertises_a_reachable_address_and_a_valid_lease() {
        let section = |listen: &str, extra: &str| {
            RelayConfig::from_toml(&format!(
                "listen = \"{listen}\"\n[cluster]\nnats = \"nats://h:1\"\nnode_id = \"n\"\n{extra}"
            ))
            .unwrap()
        };
        let homes = |listen: &str, extra: &str| {
            let cfg = section(listen, extra);
            cfg.cluster.unwrap().homes(cfg.listen)
        };
        // Default: the listen address, a 3 s lease, a heartbeat of a third of it.
        let h = homes("127.0.0.1:4433", "").unwrap();
        assert_eq!(h.addr, "127.0.0.1:4433");
        assert_eq!(h.lease, std::time::Duration::from_secs(3));
        assert_eq!(h.heartbeat, std::time::Duration::from_secs(1));
        // An unspecified listen address needs an advertised one.
        let err = homes("0.0.0.0:4433", "").unwrap_err();
        assert!(matches!(err, ConfigError::UnspecifiedAdvertise(_)));
        assert!(err.to_string().contains("advertise"), "{err}");
        assert!(matches!(
            homes("[::]:4433", ""),
            Err(ConfigError::UnspecifiedAdvertise(_))
        ));
        let h = homes(
            "0.0.0.0:4433",
            "advertise = \"relay-1.example:4433\"\nlease_ms = 6000\nheartbeat_ms = 500",
        )
        .unwrap();
        assert_eq!(h.addr, "relay-1.example:4433");
        assert_eq!(h.heartbeat, std::time::Duration::from_millis(500));
        assert!(matches!(
            homes("0.0.0.0:1", "advertise = \"no port\""),
            Err(ConfigError::BadAdvertise)
        ));
        assert!(matches!(
            homes("127.0.0.1:1", "lease_ms = 1000\nheartbeat_ms = 1000"),
            Err(ConfigError::BadLease)
        ));
        assert!(matches!(
            homes("127.0.0.1:1", "lease_ms = 2"),
            Err(ConfigError::BadLease)
        ));
    }

    // covers: CL-NODE-1
    #[test]
    fn the_cluster_section_names_the_store_and_the_node() {
        let cfg = RelayConfig::from_toml(EXAMPLE_CONFIG).unwrap();
        assert!(cfg.cluster.is_none(), "a single relay by default");
        let with = |section: &str| {
            RelayConfig::from_toml(&format!("listen = \"127.0.0.1:0\"\n[cluster]\n{section}"))
        };
        let node = with("nats = \"nats://127.0.0.1:4222\"\nnode_id = \"relay-1\"")
            .unwrap()
            .cluster
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(node.node_id, "relay-1");
        assert_eq!(node.store.url, "nats://127.0.0.1:4222");
        assert_eq!(node.store.bucket, crate::store::DEFAULT_BUCKET);
        assert_eq!(node.store.replicas, 1);
        let node = with(
            "nats = \"nats://a:1,nats://b:2\"\nnode_id = \"n_2\"\nbucket = \"b\"\nreplicas = 3",
        )
        .unwrap()
        .cluster
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!((node.store.bucket.as_str(), node.store.replicas), ("b", 3));
        // Both keys are required; unknown keys and bad values are named errors.
        assert!(with("nats = \"nats://h:1\"").is_err());
        assert!(with("node_id = \"n\"").is_err());
        assert!(with("nats = \"nats://h:1\"\nnode_id = \"n\"\nlease = 3").is_err());
        let bad = |section: &str| with(section).unwrap().cluster.unwrap().validate();
        assert!(matches!(
            bad("nats = \"nats://h:1\"\nnode_id = \"a.b\""),
            Err(ConfigError::BadNodeId)
        ));
        assert!(matches!(
            bad("nats = \"nats://h:1\"\nnode_id = \"\""),
            Err(ConfigError::BadNodeId)
        ));
        assert!(matches!(
            bad("nats = \" \"\nnode_id = \"n\""),
            Err(ConfigError::NoClusterUrl)
        ));
        assert!(matches!(
            bad("nats = \"nats://h:1\"\nnode_id = \"n\"\nreplicas = 0"),
            Err(ConfigError::BadReplicas)
        ));
    }
}
