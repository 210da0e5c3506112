//! The relay's network shell: a TLS 1.3 control server on tokio around the sans-IO [`Ds`].
//!
//! # Tasks
//!
//! - **acceptor**: accepts TCP connections (at most `max_connections` at once), runs the TLS
//!   handshake under a deadline, then registers the connection with the driver and starts its
//!   reader and writer.
//! - **driver** (one): owns the [`Ds`]. Reads and timers go to `handle_*`; every output is
//!   routed: frames to the connection's writer through a bounded queue (`try_send`: a stuck
//!   writer never blocks the driver — on overflow its connection is closed and counted), closes
//!   drop the writer's queue, media signals go to the [`MediaHook`].
//! - **reader** (per connection): reads at most `read_chunk` bytes at a time and passes them to
//!   the driver (the DS does framing, frame-size, rate and idle limits).
//! - **writer** (per connection): writes queued frames; when its queue closes it flushes and
//!   sends TLS close_notify.
//! - **control tap** (optional, [`ControlTap`]): the driver shows it every frame it reads or
//!   writes (after TLS removal), in both directions.
//! - **metrics** (optional): a minimal HTTP/1.1 responder for `GET /metrics`.
//!
//! Shutdown ([`RelayHandle::shutdown`], or SIGTERM/SIGINT through [`run_until_signal`]): stop
//! accepting, refuse every connection with `Refused(SHUTTING_DOWN)`, let writers flush within
//! the grace period, then cut what is left and return.

mod address;
mod conn;
mod driver;
mod tap;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::ds::{ConnId, Ds, DsConfig, RoomId, StoreMode};
use crate::metrics::{self, MetricsSource, ShellMetrics};
use crate::store::RoomStore;

pub(crate) use driver::Cmd;
pub use driver::DsSnapshot;
pub use tap::{ControlRecorder, ControlTap, TapDirection, TappedFrame};

/// Network-shell limits (the DS's own limits live in [`DsConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct ShellLimits {
    /// TCP accept to finished TLS handshake.
    pub handshake_timeout: Duration,
    /// Simultaneous connections (TLS handshakes included).
    pub max_connections: usize,
    /// Simultaneous connections from one source address (an IPv6 address counts by its /64),
    /// TLS handshakes included.
    pub max_connections_per_address: usize,
    /// Bytes per read from a connection.
    pub read_chunk: usize,
    /// Frames queued per connection writer.
    pub writer_queue: usize,
    /// Inputs queued from all readers to the driver.
    pub driver_queue: usize,
    /// Time given to writers to flush at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ShellLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_address: 256,
            read_chunk: 16 * 1024,
            writer_queue: 256,
            driver_queue: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// What the driver tells the media forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwarderEvent {
    /// A member sent a media-signaling message.
    Signal {
        /// The member's connection.
        conn: ConnId,
        /// Its room.
        room: RoomId,
        /// Its leaf in the room's group.
        leaf: u32,
        /// The id its media streams carry: the connection it joined on, the same across
        /// resumes (DS-RES-12).
        participant: ConnId,
        /// The opaque payload.
        payload: Vec<u8>,
    },
    /// A connection ended (the forwarder drops any media state it holds for it).
    Closed {
        /// The connection.
        conn: ConnId,
    },
}

/// What the media forwarder asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwarderCommand {
    /// The member's connection.
    pub conn: ConnId,
    /// The opaque payload to send it as `MediaSignal`.
    pub payload: Vec<u8>,
}

/// The media forwarder's attachment to the control server: events out, commands in.
///
/// The driver never waits on the forwarder: an event that does not fit `events` is dropped and
/// counted (`blindcall_relay_forwarder_events_dropped_total`).
#[derive(Debug)]
pub struct MediaHook {
    /// Where the driver sends [`ForwarderEvent`]s.
    pub events: mpsc::Sender<ForwarderEvent>,
    /// Where the driver takes [`ForwarderCommand`]s from.
    pub commands: mpsc::Receiver<ForwarderCommand>,
}

/// Everything [`start`] needs.
pub struct ServerConfig {
    /// Control channel listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Metrics endpoint listen address, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS 1.3 server configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// The delivery service's configuration.
    pub ds: DsConfig,
    /// Network-shell limits.
    pub limits: ShellLimits,
    /// The media forwarder, once one is attached.
    pub media: Option<MediaHook>,
    /// Extra metrics (e.g. the media forwarder's packet counters), exported on `/metrics`.
    pub metrics_sources: Vec<Arc<dyn MetricsSource>>,
    /// Observes every control frame read or written after TLS removal (audits, tests).
    pub control_tap: Option<Arc<dyn ControlTap>>,
    /// Cluster mode: the room store shared by the cluster's nodes. With one, the DS runs in
    /// [`StoreMode::Shared`](crate::ds::StoreMode::Shared) and every commit is claimed in it
    /// before it is merged; without, the DS sequences alone (the default).
    pub store: Option<RoomStore>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("ds", &self.ds)
            .field("limits", &self.limits)
            .field("media", &self.media.is_some())
            .field("control_tap", &self.control_tap.is_some())
            .field("store", &self.store.as_ref().map(RoomStore::kind))
            .finish_non_exhaustive()
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The control listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The metrics listener could not bind.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A server task panicked or was cancelled (our bug).
    #[error("server task failed")]
    TaskFailed,
}

/// A running relay: its addresses and the way to stop it.
#[derive(Debug)]
pub struct RelayHandle {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    crash: CancellationToken,
    conns_cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// Stop at once, as a crash would (for failover tests): the connections are cut without
    /// any message, the driver stops without deleting this node's heartbeat, and nothing more
    /// is written to the room store. [`RelayHandle::wait`] returns once the tasks are gone.
    pub fn crash(&self) {
        self.crash.cancel();
        self.conns_cancel.cancel();
        self.shutdown.cancel();
    }

    /// The control channel's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics endpoint's bound address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// A token that starts a graceful shutdown when cancelled (clone it into signal handlers).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Start a graceful shutdown (returns at once; [`RelayHandle::wait`] for it to finish).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Wait until the server has stopped (after a shutdown).
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await.map_err(|_| ServerError::TaskFailed)
    }
}

/// The first connection id of this process. A cluster node numbers its connections from a base
/// of its own (its id and start time, hashed, in bits 40..56), so that the media participant
/// ids a member keeps across nodes (CL-HOME-8) never meet another node's connections; a single
/// relay counts from 1.
fn first_conn_id(node_id: Option<&str>) -> u64 {
    let Some(node) = node_id else {
        return 1;
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(node.as_bytes());
    h.update(&started.to_be_bytes());
    let d = h.finish();
    let tag = d
        .as_ref()
        .get(..2)
        .map_or(1, |b| u64::from(u16::from_be_bytes([b[0], b[1]])));
    (tag.max(1) << 40) | 1
}

/// Bind the listeners and start the server's tasks.
pub async fn start(cfg: ServerConfig) -> Result<RelayHandle, ServerError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::MetricsBind { addr, source })?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let shutdown = CancellationToken::new();
    let shell = ShellMetrics::new();
    let limits = cfg.limits;
    let (tx, rx) = mpsc::channel(limits.driver_queue);
    let conns_cancel = CancellationToken::new();
    let crash = CancellationToken::new();
    let tracker = TaskTracker::new();

    let tap = cfg
        .control_tap
        .map(|t| driver::Tap::new(t, cfg.ds.max_frame_len));
    let mut ds_cfg = cfg.ds;
    if cfg.store.is_some() {
        ds_cfg.store_mode = StoreMode::Shared;
    } else {
        // Room homes exist only in a cluster (CL-HOME-2).
        ds_cfg.homes = None;
    }
    // An advertised address with port 0 (the listen port picked at bind) names the bound port.
    if let Some(h) = ds_cfg.homes.as_mut()
        && let Some(host) = h.addr.strip_suffix(":0")
    {
        h.addr = format!("{host}:{}", local_addr.port());
    }
    let first_id = first_conn_id(ds_cfg.homes.as_ref().map(|h| h.node_id.as_str()));
    // Store mode: watch the commits before any connection is served, so that every winner
    // sequenced from now on reaches the DS (CL-FOLLOW-1). A watch that cannot start now is
    // started again by the driver.
    let store = match cfg.store {
        Some(store) => {
            let watch = match store.watch_commits().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the store's commits yet");
                    None
                }
            };
            Some((store, watch))
        }
        None => None,
    };
    let driver = driver::Driver::new(
        Ds::new(ds_cfg),
        rx,
        cfg.media,
        tap,
        shell.clone(),
        shutdown.clone(),
        store,
        crash.clone(),
    );
    let driver_task = tokio::spawn(driver.run());

    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(metrics::serve(
            l,
            tx.clone(),
            shell.clone(),
            cfg.metrics_sources,
            shutdown.clone(),
        ))
    });

    let acceptor = Acceptor {
        listener,
        tls: TlsAcceptor::from(cfg.tls),
        limits,
        to_driver: tx,
        shell,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        per_address: address::PerAddress::new(limits.max_connections_per_address),
        next_id: AtomicU64::new(first_id),
        conns_cancel: conns_cancel.clone(),
        tracker: tracker.clone(),
    };
    let accept_shutdown = shutdown.clone();
    let handle_conns_cancel = conns_cancel.clone();
    let task = tokio::spawn(async move {
        acceptor.run(accept_shutdown).await;
        // The driver refuses every connection; it returns once all of them have ended.
        let mut driver_task = driver_task;
        if tokio::time::timeout(limits.shutdown_grace, &mut driver_task)
            .await
            .is_err()
        {
            warn!(grace = ?limits.shutdown_grace, "connections still flushing; cutting them");
            conns_cancel.cancel();
            if driver_task.await.is_err() {
                warn!("driver task failed");
            }
        }
        tracker.close();
        tracker.wait().await;
        if let Some(m) = metrics_task {
            let _ = m.await;
        }
        info!("relay stopped");
    });
    info!(%local_addr, metrics = ?metrics_addr, "relay listening");
    Ok(RelayHandle {
        local_addr,
        metrics_addr,
        shutdown,
        crash,
        conns_cancel: handle_conns_cancel,
        task,
    })
}

/// Start the server and run it until SIGINT or SIGTERM, then shut down gracefully.
pub async fn run_until_signal(cfg: ServerConfig) -> Result<(), ServerError> {
    let handle = start(cfg).await?;
    let token = handle.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown signal received");
        token.cancel();
    });
    handle.wait().await
}

/// Resolve on the first SIGINT or SIGTERM.
#[cfg(unix)]
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the relay");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolve on the first Ctrl-C.
#[cfg(not(unix))]
pub async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Pause after a failed `accept()`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

struct Acceptor {
    listener: TcpListener,
    tls: TlsAcceptor,
    limits: ShellLimits,
    to_driver: mpsc::Sender<driver::Cmd>,
    shell: ShellMetrics,
    slots: Arc<Semaphore>,
    per_address: address::PerAddress,
    next_id: AtomicU64,
    conns_cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Acceptor {
    async fn run(self, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Accept errors (ECONNABORTED, EMFILE, ...) are not fatal; back off briefly so
                    // a persistent one (out of file descriptors) does not spin the acceptor.
                    warn!(error = %e, "accept failed");
                    self.shell.accept_errors.inc();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                self.shell.connections_over_limit.inc();
                debug!(%peer, "connection limit reached; closing");
                drop(tcp);
                continue;
            };
            // Before any TLS: a typed refusal would need the handshake this limit protects.
            let Some(address_slot) = self.per_address.try_acquire(peer.ip()) else {
                self.shell.connections_over_address_limit.inc();
                debug!(%peer, "connection limit of the address reached; closing");
                drop(tcp);
                continue;
            };
            let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
            let ctx = conn::Ctx {
                id,
                limits: self.limits,
                to_driver: self.to_driver.clone(),
                shell: self.shell.clone(),
                cancel: self.conns_cancel.child_token(),
            };
            let tls = self.tls.clone();
            self.tracker.spawn(async move {
                let _permit = (permit, address_slot);
                handshake_and_serve(tls, tcp, peer, ctx).await;
            });
        }
        debug!("acceptor stopped");
    }
}

async fn handshake_and_serve(tls: TlsAcceptor, tcp: TcpStream, peer: SocketAddr, ctx: conn::Ctx) {
    let _ = tcp.set_nodelay(true);
    let hs = tokio::select! {
        _ = ctx.cancel.cancelled() => return,
        r = tokio::time::timeout(ctx.limits.handshake_timeout, tls.accept(tcp)) => r,
    };
    let stream = match hs {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            ctx.shell.tls_handshake_failures.inc();
            debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            ctx.shell.tls_handshake_timeouts.inc();
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    debug!(conn = ctx.id.0, %peer, "TLS established");
    conn::serve(stream, ctx).await;
}
