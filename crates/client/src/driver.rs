//! The driver: the one task that owns a participant's [`CallCore`] and moves bytes, requests
//! and timers between it and the world: the control channel's reader and writer, the
//! application's [`crate::Call`] handles and [`crate::Events`], and the media transport (a
//! send task for packets and a signaling task that applies offers in order). Every decision
//! is the core's; nothing here interprets a message.

use std::time::Duration;

use blindcall_media::{MediaKind, RtpPacket};
use blindcall_transport::{
    ClientConfig, ClientEvent, ClientTransport, MediaNetwork, ParticipantId, SdpKind,
    SessionDescription,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::control::{Control, ControlIn};
use crate::core::{CallCore, Command, ControlEnd, MediaInput, Output, RelayRef, TransportOp};
use crate::error::{CallError, JoinError};
use crate::event::{CallStats, Event};
use crate::media::IncomingFrame;

/// How long a departing participant lets its queued packets go out before closing.
const SEND_FLUSH: Duration = Duration::from_secs(1);

/// A request of a [`crate::Call`] handle and where its answer goes.
pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Result<(), CallError>>,
}

/// Where the driver delivers what the core produces for the application.
pub(crate) struct AppChannels {
    pub(crate) events: mpsc::UnboundedSender<Event>,
    pub(crate) frames: Option<mpsc::Sender<IncomingFrame>>,
    pub(crate) stats: watch::Sender<CallStats>,
}

/// Transport operations that must happen in order, off the driver's task.
enum Signal {
    Offer(String),
    Keyframe(ParticipantId),
}

/// The media transport and the tasks around it.
struct MediaShell {
    transport: ClientTransport,
    packets: mpsc::UnboundedSender<(MediaKind, RtpPacket)>,
    sender: JoinHandle<()>,
    signals: mpsc::UnboundedSender<Signal>,
}

/// How to open a new control connection (to join through another relay, or to reconnect).
pub(crate) struct Dialer {
    /// The relays, as [`crate::JoinOptions::relays`] lists them (the core names an index).
    pub(crate) addrs: Vec<std::net::SocketAddr>,
    pub(crate) tls: std::sync::Arc<rustls::ClientConfig>,
    pub(crate) server_name: String,
    pub(crate) timeout: Duration,
    pub(crate) bind: Option<std::net::IpAddr>,
}

pub(crate) struct Driver {
    core: CallCore,
    control: Control,
    dialer: Dialer,
    /// A connection being opened (reconnecting).
    dialing: Option<oneshot::Receiver<Result<Control, JoinError>>>,
    requests: mpsc::UnboundedReceiver<Request>,
    app: AppChannels,
    admitted: Option<oneshot::Sender<Result<(), JoinError>>>,
    network: MediaNetwork,
    media: Option<MediaShell>,
    /// The transport's events, until it stops reporting.
    media_events: Option<mpsc::Receiver<ClientEvent>>,
    /// Results of the signaling task (answers).
    media_results: Option<mpsc::UnboundedReceiver<MediaInput>>,
    done: bool,
}

impl Dialer {
    /// A connection to `relay`: a relay of the list, or the address a cluster node redirected
    /// to (resolved here; each of its addresses is tried in order). Every connection uses the
    /// same TLS server name and trust roots: a redirect never widens whom the client trusts.
    pub(crate) fn dial(
        &self,
        relay: RelayRef,
    ) -> impl std::future::Future<Output = Result<Control, JoinError>> + Send + 'static {
        let listed = match &relay {
            RelayRef::Listed(i) => self.addrs.get(*i).or(self.addrs.first()).copied(),
            _ => None,
        };
        let (tls, name, timeout, bind) = (
            self.tls.clone(),
            self.server_name.clone(),
            self.timeout,
            self.bind,
        );
        async move {
            let addrs: Vec<std::net::SocketAddr> = match relay {
                RelayRef::Redirected(address) => {
                    match tokio::time::timeout(timeout, tokio::net::lookup_host(address)).await {
                        Ok(Ok(found)) => found.collect(),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "redirect address not resolved");
                            Vec::new()
                        }
                        Err(_) => {
                            return Err(JoinError::Timeout {
                                what: "resolving the redirected relay",
                            });
                        }
                    }
                }
                _ => listed.into_iter().collect(),
            };
            let mut last = Err(crate::error::ProtocolError::Closed.into());
            for addr in addrs {
                last = crate::control::connect(addr, tls.clone(), &name, timeout, bind).await;
                if last.is_ok() {
                    break;
                }
            }
            last
        }
    }
}

async fn send_task(
    transport: ClientTransport,
    mut rx: mpsc::UnboundedReceiver<(MediaKind, RtpPacket)>,
) {
    while let Some((kind, packet)) = rx.recv().await {
        if let Err(e) = transport.send(kind, packet).await {
            tracing::debug!(error = %e, "media send failed");
        }
    }
}

async fn signal_task(
    transport: ClientTransport,
    mut rx: mpsc::UnboundedReceiver<Signal>,
    results: mpsc::UnboundedSender<MediaInput>,
) {
    while let Some(signal) = rx.recv().await {
        match signal {
            Signal::Offer(sdp) => {
                let offer = SessionDescription {
                    kind: SdpKind::Offer,
                    sdp,
                };
                let input = match transport.handle_offer(offer).await {
                    Ok(answer) => MediaInput::Answer(answer.sdp),
                    Err(e) => {
                        tracing::debug!(error = %e, "offer not applied");
                        MediaInput::OfferFailed
                    }
                };
                if results.send(input).is_err() {
                    return;
                }
            }
            Signal::Keyframe(from) => {
                if let Err(e) = transport.request_keyframe(from).await {
                    tracing::debug!(error = %e, "keyframe request not sent");
                }
            }
        }
    }
}

/// What the transport reports, as the core's input (`None`: nothing the core needs).
fn media_input(event: ClientEvent) -> Option<MediaInput> {
    match event {
        ClientEvent::Media { from, kind, packet } => {
            Some(MediaInput::Packet { from, kind, packet })
        }
        ClientEvent::TrackStarted { from, kind } => Some(MediaInput::TrackStarted { from, kind }),
        ClientEvent::TrackEnded { from, kind } => Some(MediaInput::TrackEnded { from, kind }),
        ClientEvent::KeyframeRequested { kind } => Some(MediaInput::KeyframeRequested { kind }),
        ClientEvent::ConnectionState(s) => Some(MediaInput::Connection(s)),
        _ => None,
    }
}

async fn next_event(events: &mut Option<mpsc::Receiver<ClientEvent>>) -> Option<ClientEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_result(results: &mut Option<mpsc::UnboundedReceiver<MediaInput>>) -> MediaInput {
    match results.as_mut() {
        Some(r) => match r.recv().await {
            Some(input) => input,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn next_dial(
    dialing: &mut Option<oneshot::Receiver<Result<Control, JoinError>>>,
) -> Option<Result<Control, JoinError>> {
    match dialing {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        core: CallCore,
        control: Control,
        dialer: Dialer,
        requests: mpsc::UnboundedReceiver<Request>,
        app: AppChannels,
        admitted: oneshot::Sender<Result<(), JoinError>>,
        network: MediaNetwork,
    ) -> Self {
        Self {
            core,
            control,
            dialer,
            dialing: None,
            requests,
            app,
            admitted: Some(admitted),
            network,
            media: None,
            media_events: None,
            media_results: None,
            done: false,
        }
    }

    /// Runs until the call is over (or joining failed).
    pub(crate) async fn run(mut self) {
        self.drain().await;
        while !self.done {
            let wake = self.core.poll_timeout();
            let mut reply = None;
            tokio::select! {
                m = self.control.rx.recv() => match m {
                    Some(ControlIn::Msg(body)) => self.core.handle_control(now(), body),
                    Some(ControlIn::Malformed) => {
                        self.control.abort();
                        self.core.handle_control_end(now(), ControlEnd::Malformed)
                    }
                    Some(ControlIn::Closed) | None => {
                        self.control.abort();
                        self.core.handle_control_end(now(), ControlEnd::Closed)
                    }
                },
                dialed = next_dial(&mut self.dialing) => {
                    self.dialing = None;
                    match dialed {
                        Some(Ok(control)) => {
                            self.control = control;
                            self.core.handle_control_connected(now());
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "reconnection attempt failed");
                            self.core.handle_control_end(now(), ControlEnd::Closed);
                        }
                        None => self.core.handle_control_end(now(), ControlEnd::Closed),
                    }
                },
                r = self.requests.recv() => match r {
                    Some(Request { command, reply: to }) => {
                        reply = Some((to, self.core.handle_command(now(), command)));
                    }
                    // Every handle is gone: leave.
                    None => drop(self.core.handle_command(now(), Command::Leave)),
                },
                e = next_event(&mut self.media_events) => match e {
                    Some(e) => {
                        if let Some(input) = media_input(e) {
                            self.core.handle_media(now(), input);
                        }
                    }
                    None => {
                        self.media_events = None;
                        self.core.handle_media(now(), MediaInput::EventsEnded);
                    }
                },
                input = next_result(&mut self.media_results) => self.core.handle_media(now(), input),
                _ = sleep_until(wake) => self.core.handle_timeout(now()),
            }
            self.drain().await;
            if let Some((to, result)) = reply {
                let _ = to.send(result);
            }
        }
    }

    /// Carries out everything the core asked for, in order.
    async fn drain(&mut self) {
        while let Some(output) = self.core.poll_output(now()) {
            match output {
                Output::Control(body) => {
                    let _ = self.control.tx.send(body);
                }
                Output::Event(e) => {
                    let _ = self.app.events.send(e);
                }
                Output::Frame(f) => {
                    // A full or dropped frame receiver loses the frame, never stalls the call.
                    if let Some(frames) = &self.app.frames {
                        let _ = frames.try_send(f);
                    }
                }
                Output::Transmit { kind, packet } => {
                    if let Some(m) = &self.media {
                        let _ = m.packets.send((kind, packet));
                    }
                }
                Output::Transport(op) => self.transport(op).await,
                Output::Stats(mut stats) => {
                    if let Some(m) = &self.media {
                        stats.transport_events_dropped = m.transport.stats().events_dropped;
                    }
                    self.app.stats.send_replace(*stats);
                }
                Output::Admitted => {
                    if let Some(a) = self.admitted.take() {
                        let _ = a.send(Ok(()));
                    }
                }
                Output::JoinFailed(e) => {
                    if let Some(a) = self.admitted.take() {
                        let _ = a.send(Err(e));
                    }
                    self.done = true;
                }
                Output::TrustChanged => {
                    // Saving is the shell's I/O; a failure is reported, the call goes on.
                    let store = self.core.trust_store();
                    if let Err(e) = store.save() {
                        tracing::warn!(error = %e, "trust store not saved");
                        let path = store.path().map(|p| p.to_path_buf()).unwrap_or_default();
                        let _ = self.app.events.send(Event::Warning(
                            crate::error::CallWarning::TrustStoreNotSaved { path },
                        ));
                    }
                }
                Output::Connect { relay } => {
                    let (tx, rx) = oneshot::channel();
                    let dial = self.dialer.dial(relay);
                    tokio::spawn(async move {
                        let _ = tx.send(dial.await);
                    });
                    self.dialing = Some(rx);
                }
                Output::DropControl => {
                    self.dialing = None;
                    self.control.abort();
                }
                Output::End => {
                    self.close().await;
                    self.done = true;
                }
            }
        }
    }

    async fn transport(&mut self, op: TransportOp) {
        match op {
            TransportOp::Open { publish } => {
                let input = self.open(publish).await;
                self.core.handle_media(now(), input);
            }
            TransportOp::ApplyOffer(sdp) => {
                if let Some(m) = &self.media {
                    let _ = m.signals.send(Signal::Offer(sdp));
                }
            }
            TransportOp::RequestKeyframe { from } => {
                if let Some(m) = &self.media {
                    let _ = m.signals.send(Signal::Keyframe(from));
                }
            }
            TransportOp::Close => self.close_media(false).await,
        }
    }

    async fn open(&mut self, publish: bool) -> MediaInput {
        let config = ClientConfig {
            publish,
            network: self.network,
            ..ClientConfig::default()
        };
        match ClientTransport::new(config).await {
            Ok((transport, events)) => {
                let (packets, packets_rx) = mpsc::unbounded_channel();
                let sender = tokio::spawn(send_task(transport.clone(), packets_rx));
                let (signals, signals_rx) = mpsc::unbounded_channel();
                let (results_tx, results) = mpsc::unbounded_channel();
                tokio::spawn(signal_task(transport.clone(), signals_rx, results_tx));
                self.media = Some(MediaShell {
                    transport,
                    packets,
                    sender,
                    signals,
                });
                self.media_events = Some(events);
                self.media_results = Some(results);
                MediaInput::Opened
            }
            Err(e) => {
                tracing::debug!(error = %e, "media transport not created");
                MediaInput::OpenFailed
            }
        }
    }

    /// The call is over: queued packets go out (bounded), then the transport and the control
    /// channel close.
    async fn close(&mut self) {
        self.close_media(true).await;
        // Closing the writer's queue sends TLS close_notify.
        let (dead, _) = mpsc::unbounded_channel();
        self.control.tx = dead;
    }

    /// Closes the media transport; with `flush`, queued packets go out first (bounded).
    async fn close_media(&mut self, flush: bool) {
        if let Some(m) = self.media.take() {
            let MediaShell {
                transport,
                packets,
                sender,
                signals,
            } = m;
            self.media_events = None;
            self.media_results = None;
            // The send task ends once it has written what was queued.
            drop(packets);
            drop(signals);
            if flush {
                let _ = tokio::time::timeout(SEND_FLUSH, sender).await;
            } else {
                sender.abort();
            }
            let _ = transport.close().await;
        }
    }
}
