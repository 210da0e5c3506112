//! The relay cluster of `blindcall demo --cluster N`: N relay nodes in this process, each on a
//! tokio runtime of its own, sharing a NATS JetStream room store (a local `nats-server` the demo
//! starts, or one given by URL), one TLS certificate, one token secret and one external-sender
//! key file. A node can be killed the way a crash kills a process: its runtime is dropped with
//! every task on it (connections reset, media sockets closed, heartbeat stopped, nothing said
//! to anyone), so the other nodes only learn of it when its lease runs out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use blindcall_client::{Role, TrustAnchor};
use blindcall_transport::CountersSnapshot;

use blindcall_relay::TappedFrame;

use crate::embedded::{EmbeddedError, EmbeddedOptions, EmbeddedRelay, NodeOptions};
use crate::nats::{LocalNats, NatsError};

/// How long a node's lease lasts without a heartbeat in the demo (the relay's default is 3 s).
pub const DEMO_LEASE: Duration = Duration::from_secs(2);

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No NATS server.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// A node did not start.
    #[error("relay node {node}: {source}")]
    Node {
        /// Its id.
        node: String,
        /// Why.
        source: EmbeddedError,
    },
    /// The shared certificate, key or key file could not be made or written.
    #[error("cluster set-up: {0}")]
    Setup(String),
}

struct Node {
    id: String,
    addr: SocketAddr,
    /// `None` once killed.
    runtime: Option<tokio::runtime::Runtime>,
    /// `None` once shut down.
    relay: Option<EmbeddedRelay>,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Never block here (this may run inside the demo's runtime): drop the node's tasks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// N relay nodes on one room store.
pub struct DemoCluster {
    nodes: Vec<Node>,
    /// Kept until the cluster is dropped (stops the local server).
    _nats: Option<LocalNats>,
    nats_url: String,
    dir: PathBuf,
    cert_der: Vec<u8>,
    secret_hex: String,
}

impl std::fmt::Debug for DemoCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoCluster")
            .field("nodes", &self.addrs())
            .field("nats", &self.nats_url)
            .finish_non_exhaustive()
    }
}

impl DemoCluster {
    /// Starts `n` nodes on the NATS server at `nats` (or on a local `nats-server` started
    /// here when `None`).
    pub async fn start(n: usize, nats: Option<String>) -> Result<Self, ClusterError> {
        let (local, nats_url) = match nats {
            Some(url) => (None, url),
            None => {
                let l = tokio::task::spawn_blocking(LocalNats::start)
                    .await
                    .map_err(|e| ClusterError::Setup(e.to_string()))??;
                let url = l.url();
                (Some(l), url)
            }
        };
        let dir =
            std::env::temp_dir().join(format!("blindcall-demo-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ClusterError::Setup(e.to_string()))?;
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .map_err(|e| ClusterError::Setup(e.to_string()))?;
        let write = |name: &str, body: &str| {
            std::fs::write(dir.join(name), body).map_err(|e| ClusterError::Setup(e.to_string()))
        };
        write("cert.pem", &ck.cert.pem())?;
        write("key.pem", &ck.signing_key.serialize_pem())?;
        let key_file = dir.join("external-sender.keys");
        let _ = std::fs::remove_file(&key_file);
        blindcall_relay::keyfile::write_new_key_file(&key_file)
            .map_err(|e| ClusterError::Setup(e.to_string()))?;
        let secret_hex = crate::embedded::random_hex(32).map_err(|source| ClusterError::Node {
            node: "-".into(),
            source,
        })?;
        let mut c = Self {
            nodes: Vec::new(),
            _nats: local,
            nats_url,
            dir,
            cert_der: ck.cert.der().to_vec(),
            secret_hex,
        };
        for i in 0..n {
            let id = format!("node-{}", i + 1);
            let opts = EmbeddedOptions {
                tap: true,
                node: Some(NodeOptions {
                    nats: c.nats_url.clone(),
                    node_id: id.clone(),
                    cert_pem: c.dir.join("cert.pem"),
                    key_pem: c.dir.join("key.pem"),
                    cert_der: c.cert_der.clone(),
                    external_sender_key_file: key_file.clone(),
                    secret_hex: c.secret_hex.clone(),
                    lease: DEMO_LEASE,
                }),
                ..EmbeddedOptions::default()
            };
            let started = tokio::task::spawn_blocking(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("relay-node")
                    .enable_all()
                    .build()
                    .map_err(|e| EmbeddedError::Runtime(e.to_string()))?;
                let relay = rt.block_on(EmbeddedRelay::start(opts))?;
                Ok::<_, EmbeddedError>((rt, relay))
            })
            .await
            .map_err(|e| ClusterError::Setup(e.to_string()))?;
            let (rt, relay) = started.map_err(|source| ClusterError::Node {
                node: id.clone(),
                source,
            })?;
            c.nodes.push(Node {
                id,
                addr: relay.addr(),
                runtime: Some(rt),
                relay: Some(relay),
            });
        }
        Ok(c)
    }

    /// Every node's control address, killed ones included, in node order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// The id of the node listening on `addr`.
    pub fn node_at(&self, addr: SocketAddr) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.addr == addr)
            .map(|n| n.id.as_str())
    }

    /// The NATS server's URL.
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// What clients trust (the nodes' shared certificate).
    pub fn trust(&self) -> TrustAnchor {
        TrustAnchor::CertificateDer(self.cert_der.clone())
    }

    /// A token for `room` with `role` (every node accepts it).
    pub fn mint(&self, room: &str, role: Role, ttl: Duration) -> Result<String, EmbeddedError> {
        crate::embedded::mint_with(&self.secret_hex, room, role, ttl)
    }

    /// Kills the node listening on `addr` as a crash would (see the module docs). Returns its
    /// id, or `None` if no live node listens there.
    pub fn kill(&mut self, addr: SocketAddr) -> Option<String> {
        let node = self.nodes.iter_mut().find(|n| n.addr == addr)?;
        let rt = node.runtime.take()?;
        rt.shutdown_background();
        Some(node.id.clone())
    }

    /// Forwarding counters summed over every node (a killed node's up to its death).
    pub fn forwarded(&self) -> CountersSnapshot {
        let mut sum = CountersSnapshot::default();
        for r in self.nodes.iter().filter_map(|n| n.relay.as_ref()) {
            sum += &r.forwarded();
        }
        sum
    }

    /// Every RTP payload any node received.
    pub fn tapped_payloads(&self) -> Vec<Vec<u8>> {
        self.nodes
            .iter()
            .filter_map(|n| n.relay.as_ref())
            .flat_map(EmbeddedRelay::tapped_payloads)
            .collect()
    }

    /// Every control frame any node read or wrote.
    pub fn control_frames(&self) -> Vec<TappedFrame> {
        self.nodes
            .iter()
            .filter_map(|n| n.relay.as_ref())
            .flat_map(EmbeddedRelay::control_frames)
            .collect()
    }

    /// Shuts the live nodes down, then the local NATS server.
    pub async fn shutdown(mut self) {
        for mut n in std::mem::take(&mut self.nodes) {
            if let (Some(rt), Some(relay)) = (n.runtime.take(), n.relay.take()) {
                let _ = tokio::task::spawn_blocking(move || {
                    rt.block_on(relay.shutdown());
                    drop(rt);
                })
                .await;
            }
        }
    }
}

impl Drop for DemoCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
