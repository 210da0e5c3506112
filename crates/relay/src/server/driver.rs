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
use crate::ds::{CloseReason, ConnId, Ds, DsCounters, Event, Input, Occupancy, Output};
use crate::metrics::ShellMetrics;
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
}

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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    pub(crate) fn new(
        ds: Ds,
        rx: mpsc::Receiver<Cmd>,
        media: Option<MediaHook>,
        tap: Option<Tap>,
        shell: ShellMetrics,
        shutdown: CancellationToken,
    ) -> Self {
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
        }
    }

    /// Run until every sender is gone: the acceptor has stopped and every connection (including
    /// handshakes in flight) has ended. After shutdown the DS refuses whatever is left or arrives.
    pub(crate) async fn run(mut self) {
        loop {
            let wake = self.ds.poll_timeout().map(instant_for);
            let mut received_at = None;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled(), if !self.draining => {
                    info!(connections = self.conns.len(), "shutting down: refusing every connection");
                    self.draining = true;
                    self.ds.handle_shutdown(now());
                }
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => received_at = self.on_cmd(cmd),
                    None => break,
                },
                c = next_command(&mut self.media_cmds) => match c {
                    Some(c) => self.on_forwarder_command(c),
                    None => self.media_cmds = None,
                },
                _ = sleep_until(wake) => self.ds.handle_timeout(now()),
            }
            self.drain(received_at);
        }
        debug!("driver stopped");
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
                Output::Event(e) => self.on_event(&e, received_at),
            }
        }
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
            Event::InternalFault { conn, fault } => {
                warn!(conn = conn.0, fault = %fault, "internal fault")
            }
            other => debug!(event = ?other, "ds event"),
        }
    }
}

fn log_close(conn: ConnId, reason: CloseReason) {
    match reason {
        CloseReason::Refused(r) => debug!(conn = conn.0, reason = %r, "closing (refused)"),
        CloseReason::Protocol(c) => debug!(conn = conn.0, code = %c, "closing (protocol error)"),
    }
}
