//! What the `blindcall-relay` binary and the `blindcall relay` / `blindcall token` subcommands run.
//!
//! [`RelayArgs`] and [`TokenArgs`] are `clap::Args`, so another CLI can flatten them into its own
//! subcommands and call [`run_relay`] / [`mint_token`].

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use blindcall_proto::Role;
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;
use tracing::info;

use crate::config::{
    ClusterSection, ConfigError, DEFAULT_SECRET_ENV, EXAMPLE_CONFIG, RelayConfig, SecretSection,
};
use crate::forward::ForwarderConfig;
use crate::server::{self, ServerError};
use crate::store::{RoomStore, StoreError};
use crate::token::{self, TokenClaims, TokenError};

/// Where a development certificate's PEM goes when neither the config nor the flags say.
pub const DEFAULT_DEV_CERT_OUT: &str = "relay-dev-cert.pem";

/// A failure of a CLI command.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CliError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// Minting failed (bad room id).
    #[error("token: {0}")]
    Token(#[from] TokenError),
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
    /// Neither `--config` nor `--listen` was given.
    #[error("give --config relay.toml, or --listen ADDR (with --dev-self-signed or a config)")]
    NoListenAddress,
    /// The TTL overflows the clock.
    #[error("--ttl-secs is too large")]
    BadTtl,
    /// `--cluster` without a node id (from `--node-id` or `[cluster] node_id`).
    #[error("--cluster needs --node-id ID (or [cluster] node_id in the config)")]
    NoNodeId,
    /// `--node-id` without a cluster (from `--cluster` or `[cluster]`).
    #[error("--node-id needs --cluster nats://HOST:PORT (or a [cluster] section)")]
    NodeIdWithoutCluster,
    /// `--advertise`, `--lease-ms` or `--drain` without a cluster.
    #[error(
        "--advertise, --lease-ms and --drain need --cluster nats://HOST:PORT (or a [cluster] section)"
    )]
    AdvertiseWithoutCluster,
    /// `--external-sender-key` without a cluster (a single relay generates its keys at start).
    #[error("--external-sender-key needs --cluster nats://HOST:PORT (or a [cluster] section)")]
    KeyWithoutCluster,
    /// `--new-external-sender-key` could not write the file.
    #[error("{0}")]
    KeyFile(#[from] crate::keyfile::KeyFileError),
    /// Cluster mode, and the room store cannot be used: the relay does not start.
    #[error("cannot use the cluster store at {url}: {source}; not starting without it")]
    ClusterStore {
        /// The NATS URL(s), credentials removed.
        url: String,
        /// Why.
        source: StoreError,
    },
}

/// `url` with any `user:password@` part replaced by `***@`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &u[..scheme + 3], &u[at..])
            }
            (None, Some(at)) => format!("***{}", &u[at..]),
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Arguments of `blindcall-relay` / `blindcall relay`.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// The relay's configuration file (see --print-example-config).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use a fresh self-signed certificate (development only); prints its SHA-256 fingerprint.
    #[arg(long)]
    pub dev_self_signed: bool,
    /// Where to write the self-signed certificate's PEM.
    #[arg(long, value_name = "FILE")]
    pub dev_cert_out: Option<PathBuf>,
    /// Listen address of the control channel (overrides the config).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Listen address of the metrics endpoint (overrides the config).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the media forwarder's UDP sockets (overrides `[media] bind`).
    #[arg(long, value_name = "IP")]
    pub media_bind: Option<std::net::IpAddr>,
    /// Public address to advertise for media behind a 1:1 NAT (overrides `[media] advertise`).
    #[arg(long, value_name = "IP")]
    pub media_advertise: Option<std::net::IpAddr>,
    /// Serve the control channel only, without the WebRTC media forwarder.
    #[arg(long)]
    pub no_media: bool,
    /// Print an example relay.toml and exit.
    #[arg(long)]
    pub print_example_config: bool,
    /// Log filter, `RUST_LOG` syntax (the `RUST_LOG` variable wins when set).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log: String,
    /// Run as a cluster node with the room store on this NATS server (overrides
    /// `[cluster] nats`); the relay refuses to start when it is unreachable.
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// This node's id in the cluster (overrides `[cluster] node_id`).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// The MLS external-sender key file shared by every node (overrides
    /// `[cluster] external_sender_key_file`; required in cluster mode).
    #[arg(long, value_name = "FILE")]
    pub external_sender_key: Option<PathBuf>,
    /// Write a new external-sender key file for a cluster (owner-only, never overwriting) and
    /// exit; copy it to every node.
    #[arg(long, value_name = "FILE")]
    pub new_external_sender_key: Option<PathBuf>,
    /// The address clients reach this node at, `host:port`, sent in redirects (overrides
    /// `[cluster] advertise`; default the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// A node with no new heartbeat for this long (ms) is dead and its rooms are taken over
    /// (overrides `[cluster] lease_ms`).
    #[arg(long, value_name = "MS")]
    pub lease_ms: Option<u64>,
    /// On SIGTERM, hand the rooms this node serves to other nodes, redirect their members
    /// there, then exit (overrides `[cluster] drain`).
    #[arg(long)]
    pub drain: bool,
}

impl Default for RelayArgs {
    /// No config, no overrides, `info` logging (what an empty command line gives).
    fn default() -> Self {
        Self {
            config: None,
            dev_self_signed: false,
            dev_cert_out: None,
            listen: None,
            metrics_listen: None,
            media_bind: None,
            media_advertise: None,
            no_media: false,
            print_example_config: false,
            log: "info".to_string(),
            cluster: None,
            node_id: None,
            external_sender_key: None,
            new_external_sender_key: None,
            advertise: None,
            lease_ms: None,
            drain: false,
        }
    }
}

impl RelayArgs {
    /// The configuration these arguments describe: the file (if any) with the flags applied.
    pub fn to_config(&self) -> Result<RelayConfig, CliError> {
        let mut cfg = match (&self.config, self.listen) {
            (Some(path), _) => RelayConfig::load(path)?,
            (None, Some(listen)) => RelayConfig::with_listen(listen),
            (None, None) => return Err(CliError::NoListenAddress),
        };
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(m) = self.metrics_listen {
            cfg.metrics_listen = Some(m);
        }
        if let Some(ip) = self.media_bind {
            cfg.media.bind = ip;
        }
        if let Some(ip) = self.media_advertise {
            cfg.media.advertise = Some(ip);
        }
        if self.dev_self_signed {
            cfg.tls.dev_self_signed = true;
            cfg.tls.cert = None;
            cfg.tls.key = None;
        }
        if let Some(out) = &self.dev_cert_out {
            cfg.tls.dev_cert_out = Some(out.clone());
        }
        if cfg.tls.dev_self_signed && cfg.tls.dev_cert_out.is_none() {
            cfg.tls.dev_cert_out = Some(PathBuf::from(DEFAULT_DEV_CERT_OUT));
        }
        match (&self.cluster, &mut cfg.cluster) {
            (Some(url), Some(section)) => section.nats = url.clone(),
            (Some(url), None) => {
                cfg.cluster = Some(ClusterSection {
                    nats: url.clone(),
                    node_id: self.node_id.clone().ok_or(CliError::NoNodeId)?,
                    bucket: crate::store::DEFAULT_BUCKET.to_owned(),
                    replicas: 1,
                    external_sender_key_file: None,
                    advertise: None,
                    lease_ms: 3000,
                    heartbeat_ms: None,
                    drain: false,
                });
            }
            (None, _) => {}
        }
        if let Some(id) = &self.node_id {
            let section = cfg.cluster.as_mut().ok_or(CliError::NodeIdWithoutCluster)?;
            section.node_id = id.clone();
        }
        if let Some(file) = &self.external_sender_key {
            let section = cfg.cluster.as_mut().ok_or(CliError::KeyWithoutCluster)?;
            section.external_sender_key_file = Some(file.clone());
        }
        if let Some(a) = &self.advertise {
            let section = cfg
                .cluster
                .as_mut()
                .ok_or(CliError::AdvertiseWithoutCluster)?;
            section.advertise = Some(a.clone());
        }
        if let Some(ms) = self.lease_ms {
            let section = cfg
                .cluster
                .as_mut()
                .ok_or(CliError::AdvertiseWithoutCluster)?;
            section.lease_ms = ms;
        }
        if self.drain {
            let section = cfg
                .cluster
                .as_mut()
                .ok_or(CliError::AdvertiseWithoutCluster)?;
            section.drain = true;
        }
        Ok(cfg)
    }
}

/// Install the `tracing` subscriber (logs to stderr); does nothing if one is installed.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run the relay until SIGINT/SIGTERM (builds its own tokio runtime; call from `main`, not from
/// inside a runtime). `--print-example-config` prints and returns.
pub fn run_relay(args: &RelayArgs) -> Result<(), CliError> {
    if args.print_example_config {
        print!("{EXAMPLE_CONFIG}");
        return Ok(());
    }
    if let Some(path) = &args.new_external_sender_key {
        crate::keyfile::write_new_key_file(path)?;
        println!("external-sender keys written to {}", path.display());
        return Ok(());
    }
    init_logging(&args.log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    rt.block_on(run_relay_async(args))
}

/// [`run_relay`] inside an existing tokio runtime (logging is the caller's business). The media
/// forwarder is attached ([`crate::start_with_media`]) unless `--no-media`.
pub async fn run_relay_async(args: &RelayArgs) -> Result<(), CliError> {
    let cfg = args.to_config()?;
    let mut resolved = cfg.resolve(&|v| std::env::var(v).ok())?;
    if let Some(node) = &resolved.cluster {
        let url = redact_url(&node.store.url);
        let store = RoomStore::jetstream(node.store.clone())
            .await
            .map_err(|source| CliError::ClusterStore {
                url: url.clone(),
                source,
            })?;
        println!("cluster node {}: room store on {url}", node.node_id);
        if let Some(h) = &resolved.server.ds.homes {
            println!(
                "cluster node {}: redirects name {} (lease {} ms{})",
                node.node_id,
                h.addr,
                h.lease.as_millis(),
                if h.drain { ", drains on SIGTERM" } else { "" }
            );
        }
        info!(node_id = %node.node_id, store = %url, "cluster mode: commits sequenced in the room store");
        resolved.server.store = Some(store);
    }
    if let Some(dev) = &resolved.dev_cert {
        println!("development certificate SHA-256: {}", dev.fingerprint());
        if let Some(out) = &cfg.tls.dev_cert_out {
            println!("development certificate PEM written to {}", out.display());
        }
        info!(sha256 = %dev.fingerprint(), "using a self-signed development certificate");
    }
    let handle = if args.no_media {
        server::start(resolved.server).await?
    } else {
        let forwarder = ForwarderConfig {
            network: resolved.media,
            ..ForwarderConfig::default()
        };
        crate::forward::start_with_media(resolved.server, forwarder)
            .await?
            .0
    };
    println!("listening on {}", handle.local_addr());
    if !args.no_media {
        match resolved.media.advertise {
            Some(public) => println!(
                "media forwarder attached on {} (advertised as {public})",
                resolved.media.bind
            ),
            None => println!("media forwarder attached on {}", resolved.media.bind),
        }
    }
    if let Some(m) = handle.metrics_addr() {
        println!("metrics on http://{m}/metrics");
    }
    let token = handle.shutdown_token();
    tokio::spawn(async move {
        server::wait_for_signal().await;
        info!("shutdown signal received");
        token.cancel();
    });
    handle.wait().await?;
    Ok(())
}

/// The role a token grants, for the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RoleArg {
    /// May create the group, lock the room and remove participants.
    Host,
    /// May ask to join.
    #[default]
    Guest,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Host => Role::HOST,
            RoleArg::Guest => Role::GUEST,
        }
    }
}

/// Arguments of `blindcall token`: mint a room capability token.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The room the token admits to (1..64 bytes).
    #[arg(long)]
    pub room: String,
    /// The role it grants.
    #[arg(long, value_enum, default_value_t = RoleArg::Guest)]
    pub role: RoleArg,
    /// Validity from now, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
    /// Read the hex secret from this file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["secret_env", "config"])]
    pub secret_file: Option<PathBuf>,
    /// Read the hex secret from this environment variable (default BLINDCALL_TOKEN_SECRET).
    #[arg(long, value_name = "VAR", conflicts_with = "config")]
    pub secret_env: Option<String>,
    /// Use the token secret configured in this relay.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A freshly minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The token's text form (`bct1.…`): hand it to the participant.
    pub text: String,
    /// Its id (what relay logs show).
    pub token_id: [u8; 16],
    /// Unix second from which it is refused.
    pub expires_at: u64,
}

/// Mint a token as `blindcall token` does: secret from file, environment or relay config,
/// random token id, expiry `now + ttl`. `env` looks up environment variables.
pub fn mint_token(
    args: &TokenArgs,
    now: SystemTime,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<MintedToken, CliError> {
    let section = match &args.config {
        Some(path) => RelayConfig::load(path)?.token_secret,
        None => SecretSection {
            hex: None,
            file: args.secret_file.clone(),
            env: args
                .secret_file
                .is_none()
                .then(|| args.secret_env.clone().unwrap_or(DEFAULT_SECRET_ENV.into())),
        },
    };
    let secret = section.load(env)?;
    let mut token_id = [0u8; 16];
    SystemRandom::new()
        .fill(&mut token_id)
        .map_err(|_| CliError::Random)?;
    let expires_at = crate::time::Timestamp::from_system_time(now)
        .unix_secs()
        .checked_add(args.ttl_secs)
        .ok_or(CliError::BadTtl)?;
    let claims = TokenClaims {
        room_id: args.room.as_bytes().to_vec(),
        role: args.role.into(),
        expires_at,
        token_id,
    };
    Ok(MintedToken {
        text: token::mint(&secret, &claims)?,
        token_id,
        expires_at,
    })
}

/// `blindcall token`: mint with the real clock and environment, print the token on stdout and its
/// id and expiry on stderr.
pub fn run_token(args: &TokenArgs) -> Result<(), CliError> {
    let t = mint_token(args, SystemTime::now(), &|v| std::env::var(v).ok())?;
    println!("{}", t.text);
    eprintln!(
        "token id {} for room {:?} ({:?}), expires at Unix second {}",
        hex::encode(t.token_id),
        args.room,
        args.role,
        t.expires_at
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SECRET_HEX: &str = "4242424242424242424242424242424242424242424242424242424242424242";

    // covers: OPS-CLI-1
    #[test]
    fn minted_token_verifies_at_the_relay() {
        let args = TokenArgs {
            room: "standup".into(),
            role: RoleArg::Host,
            ttl_secs: 60,
            secret_file: None,
            secret_env: Some("MY_SECRET".into()),
            config: None,
        };
        let env = |v: &str| (v == "MY_SECRET").then(|| SECRET_HEX.to_string());
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let t = mint_token(&args, now, &env).unwrap();
        assert_eq!(t.expires_at, 1_800_000_060);
        let secret = crate::TokenSecret::from_hex(SECRET_HEX).unwrap();
        let c = token::verify(&secret, t.text.as_bytes(), b"standup", 1_800_000_059).unwrap();
        assert_eq!(c.role, Role::HOST);
        assert_eq!(c.token_id, t.token_id);
        // Two tokens for the same claims get different ids.
        assert_ne!(mint_token(&args, now, &env).unwrap().token_id, t.token_id);
        // Missing secret, bad room: typed errors.
        assert!(matches!(
            mint_token(&args, now, &|_| None),
            Err(CliError::Config(ConfigError::SecretEnvMissing { .. }))
        ));
        let long = TokenArgs {
            room: "r".repeat(65),
            ..args
        };
        assert!(matches!(
            mint_token(&long, now, &env),
            Err(CliError::Token(TokenError::BadRoomId))
        ));
    }

    // covers: OPS-CLI-1
    #[test]
    fn relay_args_override_the_config() {
        let args = RelayArgs {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            dev_self_signed: true,
            ..RelayArgs::default()
        };
        let cfg = args.to_config().unwrap();
        assert!(cfg.tls.dev_self_signed);
        assert_eq!(
            cfg.tls.dev_cert_out.as_deref(),
            Some(std::path::Path::new(DEFAULT_DEV_CERT_OUT))
        );
        assert!(matches!(
            RelayArgs::default().to_config(),
            Err(CliError::NoListenAddress)
        ));
    }

    // covers: CL-NODE-1, CL-NODE-6, CL-DRAIN-1
    #[test]
    fn cluster_flags_override_the_config_and_credentials_never_show() {
        let args = RelayArgs {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            cluster: Some("nats://127.0.0.1:4222".into()),
            node_id: Some("n1".into()),
            ..RelayArgs::default()
        };
        let c = args.to_config().unwrap().cluster.unwrap();
        assert_eq!(
            (c.nats.as_str(), c.node_id.as_str()),
            ("nats://127.0.0.1:4222", "n1")
        );
        let no_id = RelayArgs {
            node_id: None,
            ..args.clone()
        };
        assert!(matches!(no_id.to_config(), Err(CliError::NoNodeId)));
        let homes = RelayArgs {
            advertise: Some("relay-1.example:4433".into()),
            lease_ms: Some(6000),
            drain: true,
            ..args.clone()
        };
        let c = homes.to_config().unwrap().cluster.unwrap();
        assert_eq!(c.advertise.as_deref(), Some("relay-1.example:4433"));
        assert_eq!((c.lease_ms, c.drain), (6000, true));
        let alone = RelayArgs {
            cluster: None,
            node_id: None,
            ..homes
        };
        assert!(matches!(
            alone.to_config(),
            Err(CliError::AdvertiseWithoutCluster)
        ));
        let no_cluster = RelayArgs {
            cluster: None,
            ..args
        };
        assert!(matches!(
            no_cluster.to_config(),
            Err(CliError::NodeIdWithoutCluster)
        ));
        assert_eq!(
            redact_url("nats://user:pw@h:1,nats://h2:2,tok@h3:3"),
            "nats://***@h:1,nats://h2:2,***@h3:3"
        );
    }
}
