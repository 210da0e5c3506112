//! The driver: the one task that owns the [`Ds`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use blindcall_proto::FrameDecoder;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ControlTap, ForwarderCommand, ForwarderEvent, MediaHook, TapDirection};
use crate::ds::{
    BanRequest, ClaimAnswer, ClaimRequest, ClaimTicket, CloseReason, ConnId, Ds, DsCounters, Event,
    FetchRequest, GenesisAnswer, GenesisRequest, HomeClaimAnswer, HomeClaimRequest, HomesConfig,
    Input, LockRequest, Occupancy, Output, RoomId, WaitingWrite,
};
use crate::metrics::ShellMetrics;
use crate::store::{
    CommitRecord, CommitWatch, Genesis, GenesisRecord, HomeClaim, HomeRecord, LockWrite,
    NodeChange, NodeRecord, RoomStore, StoreError, StoreOp, WaitingChange,
};
use crate::time::Timestamp;

/// What readers, the acceptor and the metrics endpoint send the driver.
pub(crate) enum Cmd {
    /// A TLS connection is ready; `writer` takes its outgoing frames.
    Opened {
        id: ConnId,
        writer: mpsc::Sender<Vec<u8>>,
        cancel: CancellationToken,
    },
    /// Bytes read from a connection, and when.
    Received {
        id: ConnId,
        bytes: Vec<u8>,
        at: Instant,
    },
    /// The connection's reader ended: after the peer's TLS close_notify (`goodbye`), or by
    /// an error, an end of stream without close_notify, or cancellation.
    Closed { id: ConnId, goodbye: bool },
    /// The metrics endpoint asks for the DS's counters.
    Snapshot(oneshot::Sender<DsSnapshot>),
}

/// The DS's counters and occupancy at one instant.
#[derive(Debug, Clone, Default)]
pub struct DsSnapshot {
    /// Monotonic counters.
    pub counters: DsCounters,
    /// Current rooms, connections, members.
    pub occupancy: Occupancy,
}

struct Entry {
    writer: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
}

/// The control tap with one frame splitter per connection (the DS frames its own copy).
pub(crate) struct Tap {
    tap: Arc<dyn ControlTap>,
    max_frame_len: u32,
    decoders: HashMap<ConnId, FrameDecoder>,
}

impl Tap {
    pub(crate) fn new(tap: Arc<dyn ControlTap>, max_frame_len: u32) -> Self {
        Self {
            tap,
            max_frame_len,
            decoders: HashMap::new(),
        }
    }

    /// Shows the tap every whole frame in `bytes` read from `conn`.
    fn read(&mut self, conn: ConnId, mut bytes: &[u8]) {
        let max = self.max_frame_len;
        let decoder = self
            .decoders
            .entry(conn)
            .or_insert_with(|| FrameDecoder::new(max));
        loop {
            match decoder.decode(&mut bytes) {
                Ok(Some(body)) => {
                    // `body.len() <= max_frame_len: u32`.
                    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
                    let mut frame = Vec::with_capacity(body.len() + 4);
                    frame.extend_from_slice(&len.to_be_bytes());
                    frame.extend_from_slice(&body);
                    self.tap.frame(conn, TapDirection::FromClient, &frame);
                }
                Ok(None) => return,
                Err(_) => {
                    // The stream no longer frames (the DS closes it): pass what is left raw.
                    if !bytes.is_empty() {
                        self.tap.frame(conn, TapDirection::FromClient, bytes);
                    }
                    return;
                }
            }
        }
    }

    fn written(&self, conn: ConnId, frame: &[u8]) {
        self.tap.frame(conn, TapDirection::ToClient, frame);
    }

    fn forget(&mut self, conn: ConnId) {
        self.decoders.remove(&conn);
    }
}

pub(crate) struct Driver {
    ds: Ds,
    rx: mpsc::Receiver<Cmd>,
    media_events: Option<mpsc::Sender<ForwarderEvent>>,
    media_cmds: Option<mpsc::Receiver<ForwarderCommand>>,
    tap: Option<Tap>,
    shell: ShellMetrics,
    shutdown: CancellationToken,
    conns: HashMap<ConnId, Entry>,
    draining: bool,
    /// Store mode: the cluster's room store, and where claim tasks send their answers.
    store: Option<RoomStore>,
    claims_tx: mpsc::UnboundedSender<ClaimDone>,
    claims_rx: mpsc::UnboundedReceiver<ClaimDone>,
    /// Store mode: the watch of the commit keys, started before the relay listened; the
    /// follower task takes it when the loop starts.
    watch: Option<CommitWatch>,
    followed_tx: mpsc::UnboundedSender<Followed>,
    followed_rx: mpsc::UnboundedReceiver<Followed>,
    /// Store mode: this node's name in its waiting-joiner keys (CL-WAIT-1), random per run so
    /// that two nodes (or two runs of one) never write the same entry.
    node_tag: String,
    /// Store mode with homes: this node, for its heartbeats (CL-NODE-4).
    homes: Option<HomesConfig>,
    /// The last heartbeat's sequence number.
    beat_seq: u64,
    /// When this node started (its heartbeat's `started_unix_ms`).
    started_unix_ms: u64,
    /// Cancelled to stop at once, as a crash would (tests): no heartbeat deleted.
    crash: CancellationToken,
}

/// What the follower task and the fetch tasks bring back to the loop (CL-FOLLOW-1).
enum Followed {
    /// A winner the watch saw.
    Winner(CommitRecord),
    /// The answer to an `Output::Fetch`.
    Fetched(FetchRequest, Result<Option<CommitRecord>, StoreError>),
    /// The answer to an `Output::Genesis` (CL-GEN-1).
    Genesis(ClaimTicket, GenesisAnswer),
    /// The answer to an `Output::LoadGenesis` (CL-GEN-2).
    GenesisLoaded(RoomId, Result<Option<GenesisRecord>, StoreError>),
    /// A ban the watch of the ban entries saw (CL-BAN-1).
    Ban(RoomId, [u8; 16]),
    /// A lock change the watch of the lock entries saw, or the holder of a number this node
    /// tried to write (CL-LOCK-1).
    Lock(RoomId, u64, bool),
    /// A change of another node's waiting joiners (CL-WAIT-1).
    Waiting(WaitingChange),
    /// A node's heartbeat changed (CL-NODE-4).
    Node(NodeChange),
    /// A room's home term (CL-HOME-1).
    Home(HomeRecord),
    /// The answer to an `Output::ClaimHome` (CL-HOME-3).
    HomeClaimed(ClaimTicket, HomeClaimAnswer),
}

/// Pause before the follower starts a watch again after it failed or ended.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// A claim task's answer, and how long the store took.
type ClaimDone = (ClaimTicket, ClaimAnswer, Duration);

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// The monotonic instant at which the wall-clock `t` is reached (the DS works in wall-clock ms).
fn instant_for(t: Timestamp) -> Instant {
    Instant::now() + Duration::from_millis(t.0.saturating_sub(now().0))
}

async fn next_command(
    cmds: &mut Option<mpsc::Receiver<ForwarderCommand>>,
) -> Option<ForwarderCommand> {
    match cmds {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_beat(beats: &mut Option<tokio::time::Interval>) {
    match beats {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    #[allow(clippy::too_many_arguments)] // one call site, each argument a distinct part
    pub(crate) fn new(
        ds: Ds,
        rx: mpsc::Receiver<Cmd>,
        media: Option<MediaHook>,
        tap: Option<Tap>,
        shell: ShellMetrics,
        shutdown: CancellationToken,
        store: Option<(RoomStore, Option<CommitWatch>)>,
        crash: CancellationToken,
    ) -> Self {
        // Unbounded: at most one claim per room is in flight, each answered once.
        let (claims_tx, claims_rx) = mpsc::unbounded_channel();
        // Unbounded: winners come as fast as the store sequences them (one per room's epoch)
        // and fetches are one per room at a time.
        let (followed_tx, followed_rx) = mpsc::unbounded_channel();
        let (store, watch) = store.unzip();
        let watch = watch.flatten();
        let homes = ds.config().homes.clone();
        let (media_events, media_cmds) = match media {
            Some(h) => (Some(h.events), Some(h.commands)),
            None => (None, None),
        };
        Self {
            ds,
            rx,
            media_events,
            media_cmds,
            tap,
            shell,
            shutdown,
            conns: HashMap::new(),
            draining: false,
            store,
            claims_tx,
            claims_rx,
            watch,
            followed_tx,
            followed_rx,
            node_tag: node_tag(),
            homes,
            beat_seq: 0,
            started_unix_ms: now().0,
            crash,
        }
    }

    /// Run until every sender is gone: the acceptor has stopped and every connection (including
    /// handshakes in flight) has ended. After shutdown the DS refuses whatever is left or arrives.
    pub(crate) async fn run(mut self) {
        // The memory store serves this process only: nothing to follow.
        if let Some(store @ RoomStore::JetStream(_)) = self.store.clone() {
            tokio::spawn(follow_winners(
                store.clone(),
                self.watch.take(),
                self.followed_tx.clone(),
                self.shutdown.clone(),
            ));
            tokio::spawn(follow_locks(
                store.clone(),
                self.followed_tx.clone(),
                self.shutdown.clone(),
            ));
            tokio::spawn(follow_waiting(
                store.clone(),
                self.node_tag.clone(),
                self.followed_tx.clone(),
                self.shutdown.clone(),
            ));
            tokio::spawn(follow_bans(
                store.clone(),
                self.followed_tx.clone(),
                self.shutdown.clone(),
            ));
            if self.homes.is_some() {
                tokio::spawn(follow_nodes(
                    store.clone(),
                    self.followed_tx.clone(),
                    self.shutdown.clone(),
                ));
                tokio::spawn(follow_homes(
                    store,
                    self.followed_tx.clone(),
                    self.shutdown.clone(),
                ));
            }
        }
        let beat_every = self
            .homes
            .as_ref()
            .filter(|_| self.store.is_some())
            .map(|h| h.heartbeat.max(Duration::from_millis(10)));
        let mut beats = beat_every.map(tokio::time::interval);
        loop {
            let wake = self.ds.poll_timeout().map(instant_for);
            let mut received_at = None;
            tokio::select! {
                biased;
                _ = self.crash.cancelled() => {
                    warn!("stopping at once (crash)");
                    return;
                }
                _ = next_beat(&mut beats) => self.beat(),
                _ = self.shutdown.cancelled(), if !self.draining => {
                    self.draining = true;
                    if self.homes.as_ref().is_some_and(|h| h.drain) && self.store.is_some() {
                        // Drain (CL-DRAIN-1): tell the cluster first, then hand the rooms over.
                        self.beat();
                        if self.ds.handle_drain(now()) {
                            info!(connections = self.conns.len(), "draining: handing this node's rooms to another node");
                        } else {
                            info!(connections = self.conns.len(), "draining: no other node alive; refusing every connection");
                        }
                    } else {
                        info!(connections = self.conns.len(), "shutting down: refusing every connection");
                        self.ds.handle_shutdown(now());
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => received_at = self.on_cmd(cmd),
                    None => break,
                },
                Some((ticket, answer, took)) = self.claims_rx.recv() => {
                    self.shell.store_claim.observe(took.as_secs_f64());
                    if let ClaimAnswer::Failed(e) = &answer {
                        warn!(ticket = ticket.0, error = %e, "commit claim failed");
                    }
                    self.ds.handle_claim(now(), ticket, answer);
                }
                Some(f) = self.followed_rx.recv() => self.on_followed(f),
                c = next_command(&mut self.media_cmds) => match c {
                    Some(c) => self.on_forwarder_command(c),
                    None => self.media_cmds = None,
                },
                _ = sleep_until(wake) => self.ds.handle_timeout(now()),
            }
            self.drain(received_at);
        }
        // A clean exit: this node's rooms are free to be taken at once (CL-NODE-4).
        if let (Some(store), Some(h)) = (&self.store, &self.homes)
            && let Err(e) = store.delete_node(&h.node_id).await
        {
            warn!(error = %e, "deleting this node's heartbeat failed");
        }
        debug!("driver stopped");
    }

    /// Put this node's heartbeat, in a task of its own (CL-NODE-4).
    fn beat(&mut self) {
        let (Some(store), Some(h)) = (self.store.clone(), self.homes.as_ref()) else {
            return;
        };
        self.beat_seq += 1;
        let occupancy = self.ds.occupancy();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let record = NodeRecord {
            node_id: h.node_id.clone(),
            addr: h.addr.clone(),
            started_unix_ms: self.started_unix_ms,
            seq: self.beat_seq,
            draining: self.draining && h.drain,
            rooms: count(occupancy.rooms),
            members: count(occupancy.members),
            connections: count(occupancy.connections),
        };
        let shell = self.shell.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.put_node(&record).await;
            shell.observe_store("heartbeat", started.elapsed());
            if let Err(e) = result {
                warn!(error = %e, "heartbeat not written");
            }
        });
    }

    /// Claim a term of a room's home (create-only) in a task of its own (CL-HOME-3).
    fn claim_home(&mut self, req: HomeClaimRequest) {
        let tx = self.followed_tx.clone();
        let Some(store) = self.store.clone() else {
            let _ = tx.send(Followed::HomeClaimed(
                req.ticket,
                HomeClaimAnswer::Failed(StoreError::Unreachable { op: StoreOp::Claim }),
            ));
            return;
        };
        let shell = self.shell.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.claim_home(&req.record).await;
            shell.observe_store("home_claim", started.elapsed());
            let answer = match result {
                Ok(HomeClaim::Won) => HomeClaimAnswer::Won,
                Ok(HomeClaim::Lost { holder }) => HomeClaimAnswer::Lost { holder },
                Err(e) => HomeClaimAnswer::Failed(e),
            };
            let _ = tx.send(Followed::HomeClaimed(req.ticket, answer));
        });
    }

    /// Handle one command; returns the read time when bytes were fed to the DS.
    fn on_cmd(&mut self, cmd: Cmd) -> Option<Instant> {
        match cmd {
            Cmd::Opened { id, writer, cancel } => {
                self.conns.insert(id, Entry { writer, cancel });
                self.ds.handle_input(now(), Input::Opened(id));
                None
            }
            Cmd::Received { id, bytes, at } => {
                // Bytes after the DS closed a connection are discarded.
                if !self.conns.contains_key(&id) {
                    return None;
                }
                if let Some(tap) = &mut self.tap {
                    tap.read(id, &bytes);
                }
                self.ds.handle_input(now(), Input::Received(id, &bytes));
                Some(at)
            }
            Cmd::Closed { id, goodbye } => {
                if let Some(tap) = &mut self.tap {
                    tap.forget(id);
                }
                if self.conns.remove(&id).is_some() {
                    let input = if goodbye {
                        Input::Goodbye(id)
                    } else {
                        Input::Closed(id)
                    };
                    self.ds.handle_input(now(), input);
                    self.tell_forwarder(ForwarderEvent::Closed { conn: id });
                }
                None
            }
            Cmd::Snapshot(reply) => {
                let _ = reply.send(DsSnapshot {
                    counters: self.ds.counters().clone(),
                    occupancy: self.ds.occupancy(),
                });
                None
            }
        }
    }

    fn on_forwarder_command(&mut self, c: ForwarderCommand) {
        if let Err(e) = self.ds.send_media_signal(c.conn, c.payload) {
            self.shell.forwarder_commands_refused.inc();
            debug!(conn = c.conn.0, error = %e, "forwarder signal not sent");
        }
    }

    fn tell_forwarder(&mut self, e: ForwarderEvent) {
        let Some(tx) = &self.media_events else {
            if matches!(e, ForwarderEvent::Signal { .. }) {
                self.shell.media_signals_unrouted.inc();
            }
            return;
        };
        if tx.try_send(e).is_err() {
            self.shell.forwarder_events_dropped.inc();
        }
    }

    fn drain(&mut self, received_at: Option<Instant>) {
        while let Some(o) = self.ds.poll_output(now()) {
            match o {
                Output::Send { conn, bytes } => self.route(conn, bytes),
                Output::Close { conn, reason } => {
                    log_close(conn, reason);
                    // Dropping the queue lets the writer flush what is queued, then close.
                    if self.conns.remove(&conn).is_some() {
                        self.tell_forwarder(ForwarderEvent::Closed { conn });
                    }
                }
                Output::MediaSignal {
                    conn,
                    room,
                    leaf,
                    participant,
                    payload,
                } => self.tell_forwarder(ForwarderEvent::Signal {
                    conn,
                    room,
                    leaf,
                    participant,
                    payload,
                }),
                Output::Claim(req) => self.claim(req),
                Output::Fetch(req) => self.fetch(req),
                Output::Genesis(req) => self.genesis(req),
                Output::LoadGenesis(room) => self.load_genesis(room),
                Output::Ban(req) => self.put_ban(req),
                Output::Lock(req) => self.write_lock(req),
                Output::Waiting(w) => self.write_waiting(w),
                Output::ClaimHome(req) => self.claim_home(req),
                Output::Event(e) => self.on_event(&e, received_at),
            }
        }
    }

    /// Run a claim against the room store in a task of its own: the loop never awaits the
    /// store; the answer comes back through `claims_rx`.
    fn claim(&mut self, req: ClaimRequest) {
        let tx = self.claims_tx.clone();
        let Some(store) = self.store.clone() else {
            // A DS in store mode without a store (our bug): fail closed.
            let _ = tx.send((
                req.ticket,
                ClaimAnswer::Failed(StoreError::Unreachable { op: StoreOp::Claim }),
                Duration::ZERO,
            ));
            return;
        };
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = store.answer_claim(&req).await;
            // The driver has stopped: nobody is left to tell.
            let _ = tx.send((req.ticket, answer, started.elapsed()));
        });
    }

    fn on_followed(&mut self, f: Followed) {
        match f {
            Followed::Winner(record) => self.ds.handle_winner(now(), record),
            Followed::Fetched(_, Ok(Some(record))) => self.ds.handle_winner(now(), record),
            Followed::Fetched(req, Ok(None)) => {
                debug!(room = %hex::encode(&req.room.0), epoch = req.epoch, "no winner in the store for the epoch");
                self.ds.handle_fetch_absent(now(), &req.room, req.epoch);
            }
            Followed::Fetched(req, Err(e)) => {
                warn!(room = %hex::encode(&req.room.0), epoch = req.epoch, error = %e, "reading a missing winner failed");
                self.ds.handle_fetch_failed(now(), &req.room, req.epoch);
            }
            Followed::Node(change) => match change.record {
                Some(r) => self.ds.handle_node(now(), r),
                None => self.ds.handle_node_gone(now(), &change.node_id),
            },
            Followed::Home(record) => self.ds.handle_home(now(), record),
            Followed::HomeClaimed(ticket, answer) => {
                if let HomeClaimAnswer::Failed(e) = &answer {
                    warn!(ticket = ticket.0, error = %e, "claiming a room's home failed");
                }
                self.ds.handle_home_claim(now(), ticket, answer);
            }
            Followed::Genesis(ticket, answer) => {
                if let GenesisAnswer::Failed(e) = &answer {
                    warn!(ticket = ticket.0, error = %e, "writing a room's genesis failed");
                }
                self.ds.handle_genesis(now(), ticket, answer);
            }
            Followed::GenesisLoaded(room, Ok(genesis)) => {
                self.ds.handle_genesis_loaded(now(), &room, genesis);
            }
            Followed::GenesisLoaded(room, Err(e)) => {
                warn!(room = %hex::encode(&room.0), error = %e, "reading a room's genesis failed");
                self.ds.handle_genesis_load_failed(now(), &room);
            }
            Followed::Ban(room, token_id) => self.ds.handle_ban(now(), &room, token_id),
            Followed::Lock(room, n, locked) => self.ds.handle_lock(now(), &room, n, locked),
            Followed::Waiting(change) => self.ds.handle_waiting(now(), change),
        }
    }

    /// Put or delete this node's waiting joiner in the store, in a task of its own. A write
    /// that fails leaves the other nodes' view behind (logged).
    fn write_waiting(&mut self, w: WaitingWrite) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let node = self.node_tag.clone();
        let shell = self.shell.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = match &w.record {
                Some(r) => store.put_waiting(&node, w.conn.0, r).await,
                None => store.delete_waiting(&w.room, &node, w.conn.0).await,
            };
            shell.observe_store("waiting", started.elapsed());
            if let Err(e) = result {
                warn!(room = %hex::encode(&w.room.0), conn = w.conn.0, error = %e, "writing a waiting joiner to the room store failed: other nodes do not see the change");
            }
        });
    }

    /// Write a lock change (create-only) in a task of its own. A number another node took
    /// first is handed back with its holder's state, which this node then takes.
    fn write_lock(&mut self, req: LockRequest) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let tx = self.followed_tx.clone();
        let shell = self.shell.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.write_lock(&req.room, req.n, req.locked).await;
            shell.observe_store("lock", started.elapsed());
            match result {
                Ok(LockWrite::Written) => {}
                Ok(LockWrite::Taken { locked }) => {
                    let _ = tx.send(Followed::Lock(req.room, req.n, locked));
                }
                Err(e) => {
                    warn!(room = %hex::encode(&req.room.0), n = req.n, error = %e, "writing a lock change to the room store failed: other nodes do not know it")
                }
            }
        });
    }

    /// Write a ban (create-only) in a task of its own. This node enforces it already; a write
    /// that fails leaves the other nodes without it, which is logged.
    fn put_ban(&mut self, req: BanRequest) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let shell = self.shell.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.put_ban(&req.room, &req.token_id).await;
            shell.observe_store("ban", started.elapsed());
            if let Err(e) = result {
                warn!(room = %hex::encode(&req.room.0), token_id = %hex::encode(req.token_id), error = %e, "writing a ban to the room store failed: other nodes do not know it");
            }
        });
    }

    /// Write a room's genesis (create-only) in a task of its own.
    fn genesis(&mut self, req: GenesisRequest) {
        let tx = self.followed_tx.clone();
        let Some(store) = self.store.clone() else {
            let _ = tx.send(Followed::Genesis(
                req.ticket,
                GenesisAnswer::Failed(StoreError::Unreachable { op: StoreOp::Claim }),
            ));
            return;
        };
        let shell = self.shell.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.create_genesis(&req.record).await;
            shell.observe_store("genesis_write", started.elapsed());
            let answer = match result {
                Ok(Genesis::Created) => GenesisAnswer::Created,
                Ok(Genesis::Exists { holder }) => GenesisAnswer::Exists { holder },
                Err(e) => GenesisAnswer::Failed(e),
            };
            let _ = tx.send(Followed::Genesis(req.ticket, answer));
        });
    }

    /// Read a room's genesis in a task of its own.
    fn load_genesis(&mut self, room: RoomId) {
        let tx = self.followed_tx.clone();
        let Some(store) = self.store.clone() else {
            let _ = tx.send(Followed::GenesisLoaded(
                room,
                Err(StoreError::Unreachable { op: StoreOp::Read }),
            ));
            return;
        };
        let shell = self.shell.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.genesis(&room).await;
            shell.observe_store("genesis_read", started.elapsed());
            let _ = tx.send(Followed::GenesisLoaded(room, result));
        });
    }

    /// Read a winner the DS is missing (a gap in what it followed), in a task of its own.
    fn fetch(&mut self, req: FetchRequest) {
        let tx = self.followed_tx.clone();
        let Some(store) = self.store.clone() else {
            let _ = tx.send(Followed::Fetched(
                req,
                Err(StoreError::Unreachable { op: StoreOp::Read }),
            ));
            return;
        };
        let shell = self.shell.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.sequenced_commit(&req.room, req.epoch).await;
            shell.observe_store("read_winner", started.elapsed());
            let _ = tx.send(Followed::Fetched(req, result));
        });
    }

    fn route(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        if let Some(tap) = &self.tap {
            tap.written(conn, &bytes);
        }
        match entry.writer.try_send(bytes) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A peer that does not read must not hold the driver: cut it.
                self.shell.writer_overflows.inc();
                warn!(conn = conn.0, "writer queue full; closing the connection");
                entry.cancel.cancel();
                self.forget(conn);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The writer ended (write error); the DS learns it now rather than from the reader.
                self.forget(conn);
            }
        }
    }

    fn forget(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            self.ds.handle_input(now(), Input::Closed(conn));
            self.tell_forwarder(ForwarderEvent::Closed { conn });
        }
    }

    fn on_event(&mut self, e: &Event, received_at: Option<Instant>) {
        match e {
            Event::Admitted {
                conn,
                room,
                role,
                token_id,
            } => info!(
                conn = conn.0,
                room = %hex::encode(&room.0),
                role = %role,
                token_id = %hex::encode(token_id),
                "admitted"
            ),
            Event::Refused { conn, reason } => info!(conn = conn.0, reason = %reason, "refused"),
            Event::ProtocolError { conn, code } => {
                debug!(conn = conn.0, code = %code, "protocol error")
            }
            Event::CommitAccepted { room, conn, epoch } => {
                if let Some(at) = received_at {
                    self.shell
                        .commit_sequencing
                        .observe(at.elapsed().as_secs_f64());
                }
                info!(room = %hex::encode(&room.0), conn = conn.0, epoch, "commit sequenced");
            }
            Event::CommitRejected { room, conn, reason } => debug!(
                room = %hex::encode(&room.0),
                conn = conn.0,
                reason = %reason,
                "commit rejected"
            ),
            Event::GenesisRefused { room, reason } => warn!(
                room = %hex::encode(&room.0),
                reason = %reason,
                "the room's stored genesis refused: no group for it on this node"
            ),
            Event::GenesisLoaded { room, epoch } => debug!(
                room = %hex::encode(&room.0),
                epoch,
                "room's group set up from its genesis"
            ),
            Event::WinnerRefused {
                room,
                epoch,
                reason,
            } => warn!(
                room = %hex::encode(&room.0),
                epoch,
                reason = %reason,
                "another node's winner refused: the room stays at its epoch on this node"
            ),
            Event::InternalFault { conn, fault } => {
                warn!(conn = conn.0, fault = %fault, "internal fault")
            }
            Event::BanLearned {
                room,
                token_id,
                closed,
            } => info!(
                room = %hex::encode(&room.0),
                token_id = %hex::encode(token_id),
                closed,
                "another node's ban applied here"
            ),
            other => debug!(event = ?other, "ds event"),
        }
    }
}

/// The follower (CL-FOLLOW-1): feed every winner the store's watch sees to the loop, and
/// start the watch again after a pause when it fails or ends (the gap it leaves is read by the
/// DS's fetches when the next winner comes).
async fn follow_winners(
    store: RoomStore,
    mut watch: Option<CommitWatch>,
    tx: mpsc::UnboundedSender<Followed>,
    shutdown: CancellationToken,
) {
    loop {
        if let Some(w) = watch.as_mut() {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = w.next() => n,
                };
                match next {
                    Some(Ok(record)) => {
                        if tx.send(Followed::Winner(record)).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "commit watch: entry refused"),
                    None => {
                        warn!("commit watch ended; starting it again");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_RETRY) => {}
        }
        watch = match store.watch_commits().await {
            Ok(Some(w)) => Some(w),
            // The memory store has nothing to follow.
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot watch the store's commits");
                None
            }
        };
    }
}

/// The nodes follower (CL-NODE-5): feed every node's heartbeat, those there now first, then
/// each change, to the loop; start the watch again (with history) after a pause when it fails
/// or ends.
async fn follow_nodes(
    store: RoomStore,
    tx: mpsc::UnboundedSender<Followed>,
    shutdown: CancellationToken,
) {
    loop {
        match store.watch_nodes().await {
            Ok(Some(mut w)) => loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = w.next() => n,
                };
                match next {
                    Some(Ok(change)) => {
                        if tx.send(Followed::Node(change)).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "node watch: entry refused"),
                    None => {
                        warn!("node watch ended; starting it again");
                        break;
                    }
                }
            },
            Ok(None) => return,
            Err(e) => warn!(error = %e, "cannot watch the nodes' heartbeats"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_RETRY) => {}
        }
    }
}

/// The homes follower (CL-HOME-1): feed every room's home terms, those written first, then
/// each new one, to the loop; start the watch again (with history) after a pause when it fails
/// or ends.
async fn follow_homes(
    store: RoomStore,
    tx: mpsc::UnboundedSender<Followed>,
    shutdown: CancellationToken,
) {
    loop {
        match store.watch_homes().await {
            Ok(Some(mut w)) => loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = w.next() => n,
                };
                match next {
                    Some(Ok(record)) => {
                        if tx.send(Followed::Home(record)).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "home watch: entry refused"),
                    None => {
                        warn!("home watch ended; starting it again");
                        break;
                    }
                }
            },
            Ok(None) => return,
            Err(e) => warn!(error = %e, "cannot watch the rooms' homes"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_RETRY) => {}
        }
    }
}

/// A random name for this node's waiting-joiner keys.
fn node_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(now().0.into());
    format!("n{:016x}", h.finish())
}

/// The waiting-room follower (CL-WAIT-1): feed every other node's waiting joiner, those
/// waiting now first, then each change, to the loop; start the watch again (with history)
/// after a pause when it fails or ends.
async fn follow_waiting(
    store: RoomStore,
    own: String,
    tx: mpsc::UnboundedSender<Followed>,
    shutdown: CancellationToken,
) {
    loop {
        match store.watch_waiting().await {
            Ok(Some(mut w)) => loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = w.next() => n,
                };
                match next {
                    Some(Ok(change)) if change.node == own => {}
                    Some(Ok(change)) => {
                        if tx.send(Followed::Waiting(change)).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "waiting-room watch: entry refused"),
                    None => {
                        warn!("waiting-room watch ended; starting it again");
                        break;
                    }
                }
            },
            Ok(None) => return,
            Err(e) => warn!(error = %e, "cannot watch the store's waiting joiners"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_RETRY) => {}
        }
    }
}

/// The lock follower (CL-LOCK-1): feed every lock change the store holds, then every new
/// one, to the loop; start the watch again (with history) after a pause when it fails or ends.
async fn follow_locks(
    store: RoomStore,
    tx: mpsc::UnboundedSender<Followed>,
    shutdown: CancellationToken,
) {
    loop {
        match store.watch_locks().await {
            Ok(Some(mut w)) => loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = w.next() => n,
                };
                match next {
                    Some(Ok((room, n, locked))) => {
                        if tx.send(Followed::Lock(room, n, locked)).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "lock watch: entry refused"),
                    None => {
                        warn!("lock watch ended; starting it again");
                        break;
                    }
                }
            },
            Ok(None) => return,
            Err(e) => warn!(error = %e, "cannot watch the store's lock changes"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_RETRY) => {}
        }
    }
}

/// The bans follower (CL-BAN-1): feed every ban the store holds, then every new one, to the
/// loop; start the watch again (with history: the bans are read again, and the DS ignores
/// those it knows) after a pause when it fails or ends.
async fn follow_bans(
    store: RoomStore,
    tx: mpsc::UnboundedSender<Followed>,
    shutdown: CancellationToken,
) {
    loop {
        match store.watch_bans().await {
            Ok(Some(mut w)) => loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = w.next() => n,
                };
                match next {
                    Some(Ok((room, token_id))) => {
                        if tx.send(Followed::Ban(room, token_id)).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "ban watch: entry refused"),
                    None => {
                        warn!("ban watch ended; starting it again");
                        break;
                    }
                }
            },
            Ok(None) => return,
            Err(e) => warn!(error = %e, "cannot watch the store's bans"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_RETRY) => {}
        }
    }
}

fn log_close(conn: ConnId, reason: CloseReason) {
    match reason {
        CloseReason::Refused(r) => debug!(conn = conn.0, reason = %r, "closing (refused)"),
        CloseReason::Protocol(c) => debug!(conn = conn.0, code = %c, "closing (protocol error)"),
        CloseReason::Redirected => debug!(conn = conn.0, "closing (redirected to the room's home)"),
    }
}
