//! The task that owns a participant's group, control channel and media pipeline.
//!
//! # Epoch transitions
//!
//! A commit (own, once the relay accepted it; or anyone's, as the relay broadcast it) is
//! merged at once, which installs the new epoch's receive keys. Own senders switch to the new
//! epoch `activation_delay` later (the prepare → execute barrier, timeout-based: the relay
//! sends the commit to every member in the same instant, so the delay only has to cover the
//! fan-out). Frames that arrive sealed under an epoch whose commit this member has not merged
//! yet are held for `hold_future_frames` and opened after the merge. After a switch the own
//! video source emits a keyframe.
//!
//! # Commits
//!
//! One own commit at a time. Work that needs a commit (approve, remove, commit the relay's
//! removal proposals, the path update after joining) is queued as an intent. If another
//! member's commit wins the epoch, the own [`PendingCommit`] is discarded, the winner is
//! merged, and the intent is retried in the new epoch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blindcall_group::{CallGroup, Client, Event as GroupEvent, PendingCommit};
use blindcall_media::MediaKind;
use blindcall_proto::{
    Body, Commit, CommitRejectReason, MediaSignal, MediaSignalPayload, RefusedReason,
    RemoveParticipant, VLBytes, VideoFilter, WaitingEntry,
};
use blindcall_transport::{
    ClientConfig, ClientEvent, ClientTransport, ConnectionState, SdpKind, SessionDescription,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::control::{Control, ControlIn};
use crate::error::{CallError, CallWarning};
use crate::event::{CallStats, EndReason, Event, KeyframeCause, Member};
use crate::media::{IncomingFrame, MediaPipeline, Outgoing};
use crate::observer::{
    CommitPurpose, CommitSent, EpochEntered, MembershipChange, MembershipChanged,
};
use crate::options::{JoinOptions, MediaMode, VideoSelection};

type Reply = oneshot::Sender<Result<(), CallError>>;

/// Requests from [`crate::Call`] handles.
pub(crate) enum Command {
    Approve(u64, Reply),
    Deny(u64, Reply),
    Remove(String, Reply),
    Publish(MediaKind, Vec<u8>, Option<bool>, Reply),
    SelectVideo(VideoSelection, Reply),
    Lock(bool, Reply),
    Leave(Reply),
}

/// Where the participant stands.
pub(crate) enum Phase {
    /// In the waiting room, holding the KeyPackage's private keys.
    Waiting(Option<Box<Client>>),
    /// A member.
    Member(Box<CallGroup>),
    /// Over.
    Ended,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Intent {
    Approve(u64),
    Remove(u32),
    Proposals,
    PathUpdate,
}

struct Pending {
    commit: PendingCommit,
    intent: Intent,
}

struct MediaState {
    transport: ClientTransport,
    events: mpsc::Receiver<ClientEvent>,
    pipeline: MediaPipeline,
    sender: tokio::task::JoinHandle<()>,
    connected: bool,
}

/// How long a departing participant lets its queued packets go out before closing.
const SEND_FLUSH: Duration = Duration::from_secs(1);

pub(crate) struct Actor {
    opts: JoinOptions,
    control: Control,
    phase: Phase,
    events: mpsc::UnboundedSender<Event>,
    cmds: mpsc::UnboundedReceiver<Command>,
    stats: watch::Sender<CallStats>,
    frames: Option<mpsc::Sender<IncomingFrame>>,
    backlog: Vec<Body>,
    join_epoch: u64,
    pending: Option<Pending>,
    intents: VecDeque<Intent>,
    waiting: BTreeMap<u64, WaitingEntry>,
    announced: BTreeSet<u64>,
    activate_at: Option<Instant>,
    proposal_epoch: Option<u64>,
    proposed_removals: BTreeSet<u32>,
    proposal_fallback: Option<Instant>,
    media: Option<MediaState>,
    next_stats: Instant,
    room_locked: Option<bool>,
    /// Whose video the application wants, and the filter last sent to the relay for it.
    video: VideoSelection,
    video_sent: Option<VideoFilter>,
    /// The next video frame published with a known type must be a keyframe.
    keyframe_due: bool,
    ended: bool,
}

/// `now + d`, with `d` capped at a day (options are caller input; never overflow).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    let d = d.min(Duration::from_secs(86_400));
    now.checked_add(d).unwrap_or(now)
}

fn warn_to(events: &mpsc::UnboundedSender<Event>, w: CallWarning) {
    tracing::debug!(warning = %w, "call warning");
    let _ = events.send(Event::Warning(w));
}

async fn next_media(media: &mut Option<MediaState>) -> Option<ClientEvent> {
    match media {
        Some(m) => m.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn send_task(transport: ClientTransport, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some((kind, packets)) = rx.recv().await {
        for p in packets {
            if let Err(e) = transport.send(kind, p).await {
                tracing::debug!(error = %e, "media send failed");
            }
        }
    }
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        opts: JoinOptions,
        control: Control,
        phase: Phase,
        events: mpsc::UnboundedSender<Event>,
        cmds: mpsc::UnboundedReceiver<Command>,
        stats: watch::Sender<CallStats>,
        frames: Option<mpsc::Sender<IncomingFrame>>,
        backlog: Vec<Body>,
        now: Instant,
    ) -> Self {
        Self {
            opts,
            control,
            phase,
            events,
            cmds,
            stats,
            frames,
            backlog,
            join_epoch: 0,
            pending: None,
            intents: VecDeque::new(),
            waiting: BTreeMap::new(),
            announced: BTreeSet::new(),
            activate_at: None,
            proposal_epoch: None,
            proposed_removals: BTreeSet::new(),
            proposal_fallback: None,
            media: None,
            next_stats: now,
            room_locked: None,
            video: VideoSelection::All,
            video_sent: None,
            keyframe_due: false,
            ended: false,
        }
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn warn(&self, w: CallWarning) {
        warn_to(&self.events, w);
    }

    fn group(&mut self) -> Option<&mut CallGroup> {
        match &mut self.phase {
            Phase::Member(g) => Some(g),
            _ => None,
        }
    }

    pub(crate) async fn run(mut self) {
        let now = Instant::now();
        if matches!(self.phase, Phase::Member(_)) {
            self.on_member(now).await;
        }
        for b in std::mem::take(&mut self.backlog) {
            self.on_control(b).await;
        }
        while !self.ended {
            let wake = self.next_wake();
            tokio::select! {
                m = self.control.rx.recv() => match m {
                    Some(ControlIn::Msg(b)) => self.on_control(b).await,
                    Some(ControlIn::Malformed) => {
                        self.end(EndReason::ProtocolError("undecodable control message".into()))
                            .await
                    }
                    Some(ControlIn::Closed) | None => self.end(EndReason::ConnectionLost).await,
                },
                c = self.cmds.recv() => match c {
                    Some(c) => self.on_command(c).await,
                    None => self.end(EndReason::Left).await,
                },
                e = next_media(&mut self.media) => match e {
                    Some(e) => self.on_media_event(e).await,
                    None => {
                        self.warn(CallWarning::Transport("media events ended".into()));
                        self.media = None;
                    }
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            if self.ended {
                break;
            }
            self.on_timers(Instant::now());
            self.drain_group_events(Instant::now()).await;
            self.next_intent();
        }
        let mut s = self.stats.borrow().clone();
        s.ended = true;
        self.stats.send_replace(s);
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_stats;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t
                && t < wake
            {
                wake = t;
            }
        };
        if let Phase::Member(g) = &self.phase {
            consider(g.poll_timeout());
        }
        consider(self.activate_at);
        consider(self.proposal_fallback);
        if let Some(m) = &self.media {
            consider(m.pipeline.poll_timeout());
        }
        wake
    }

    fn on_timers(&mut self, now: Instant) {
        let join_epoch = self.join_epoch;
        if let Phase::Member(g) = &mut self.phase {
            if g.poll_timeout().is_some_and(|t| t <= now) {
                g.handle_timeout(now);
            }
            if self.activate_at.is_some_and(|t| t <= now) {
                self.activate_at = None;
                // The group reports the switch (SendEpochActivated): one keyframe request.
                g.activate_send_epoch();
            }
            if self.proposal_fallback.is_some_and(|t| t <= now) {
                self.proposal_fallback = None;
                if self.proposal_epoch == Some(g.epoch())
                    && !self.intents.contains(&Intent::Proposals)
                {
                    self.intents.push_back(Intent::Proposals);
                }
            }
            if let Some(m) = &mut self.media {
                m.pipeline.handle_timeout(now);
                let _ = join_epoch;
            }
        }
        if now >= self.next_stats {
            self.next_stats = after(now, self.opts.stats_interval.max(Duration::from_millis(10)));
            self.publish_stats();
            // Identities learned from newly opened streams may resolve more of the selection.
            self.sync_video();
        }
    }

    /// Records the application's video selection and sends the relay its filter.
    fn select_video(&mut self, selection: VideoSelection) {
        self.video = selection;
        self.sync_video();
    }

    /// Sends the relay the video filter for the current selection when it changed: listed
    /// identities become the relay's participant ids of the streams they were authenticated on.
    fn sync_video(&mut self) {
        let Some(m) = &self.media else { return };
        let filter = match &self.video {
            VideoSelection::All => VideoFilter::All,
            VideoSelection::Only(names) => VideoFilter::Only(m.pipeline.participants_of(names)),
        };
        if self.video_sent.as_ref() == Some(&filter) {
            return;
        }
        // Nothing sent yet and everything wanted: the relay's default already is "all".
        if self.video_sent.is_none() && filter == VideoFilter::All {
            self.video_sent = Some(filter);
            return;
        }
        let payload = MediaSignalPayload::Video(filter.clone()).encode();
        if self
            .control
            .tx
            .send(Body::MediaSignal(MediaSignal {
                payload: VLBytes::new(payload),
            }))
            .is_ok()
        {
            self.video_sent = Some(filter);
        }
    }

    fn publish_stats(&mut self) {
        let mut s = CallStats::default();
        if let Phase::Member(g) = &self.phase {
            s.epoch = Some(g.epoch());
            s.code = Some(g.security_code().to_string());
            s.send_epoch = Some(g.send_epoch());
            s.members = g.roster().len();
        }
        if let Some(m) = &mut self.media {
            let p = &mut m.pipeline;
            s.frames_sent = p.frames_sent;
            s.packets_sent = p.packets_sent;
            s.packets_received = p.packets_received;
            s.transport_events_dropped = m.transport.stats().events_dropped;
            s.senders = p.health_snapshot();
            for h in &s.senders {
                s.frames_opened += h.opened;
                for (c, n) in &h.dropped {
                    *s.dropped.entry(*c).or_insert(0) += n;
                }
            }
            if let Some(h) = p.take_health() {
                let _ = self.events.send(Event::DecryptHealth(h));
            }
        }
        s.ended = self.ended;
        self.stats.send_replace(s);
    }

    fn log_membership(&self, change: MembershipChange, epoch: u64, now: Instant) {
        if let Some(o) = &self.opts.observer {
            o.membership_changed(&MembershipChanged {
                change,
                epoch,
                at: now,
            });
        }
    }

    /// Just became a member (created the group or processed a Welcome).
    async fn on_member(&mut self, now: Instant) {
        let Phase::Member(g) = &mut self.phase else {
            return;
        };
        let epoch = g.epoch();
        self.join_epoch = epoch;
        let members = g
            .roster()
            .members()
            .iter()
            .map(|m| Member {
                identity: Arc::clone(&m.identity),
                leaf: m.leaf,
                host: m.host,
            })
            .collect();
        self.log_membership(MembershipChange::Joined, epoch, now);
        // The first video frame of a known type must be a keyframe.
        self.keyframe_due = true;
        self.emit(Event::Joined { epoch, members });
        self.drain_group_events(now).await;
        self.start_media().await;
    }

    async fn start_media(&mut self) {
        let publish = match self.opts.media {
            MediaMode::Off => return,
            MediaMode::ReceiveOnly => false,
            MediaMode::App => true,
        };
        let config = ClientConfig {
            publish,
            network: self.opts.media_network,
            ..ClientConfig::default()
        };
        let (transport, events) = match ClientTransport::new(config).await {
            Ok(t) => t,
            Err(e) => {
                self.warn(CallWarning::Transport(e.to_string()));
                return;
            }
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let sender = tokio::spawn(send_task(transport.clone(), out_rx));
        let pipeline = MediaPipeline::new(
            out_tx,
            0x5eed,
            self.opts.hold_future_frames,
            self.opts.observer.clone(),
            self.frames.clone(),
        );
        self.media = Some(MediaState {
            transport,
            events,
            pipeline,
            sender,
            connected: false,
        });
        let _ = self.control.tx.send(Body::MediaSignal(MediaSignal {
            payload: VLBytes::new(MediaSignalPayload::Join { publish }.encode()),
        }));
        let selection = self.opts.video.clone();
        self.select_video(selection);
    }

    async fn on_media_event(&mut self, e: ClientEvent) {
        let now = Instant::now();
        let join_epoch = self.join_epoch;
        let Phase::Member(g) = &mut self.phase else {
            return;
        };
        let Some(m) = &mut self.media else { return };
        match e {
            ClientEvent::Media { from, kind, packet } => {
                m.pipeline.on_packet(now, g, join_epoch, from, kind, packet);
            }
            ClientEvent::KeyframeRequested {
                kind: MediaKind::Video,
            } => {
                self.emit(Event::KeyframeRequested {
                    cause: KeyframeCause::Receiver,
                });
            }
            ClientEvent::TrackStarted {
                from,
                kind: MediaKind::Video,
            } => {
                let t = m.transport.clone();
                tokio::spawn(async move {
                    let _ = t.request_keyframe(from).await;
                });
            }
            ClientEvent::ConnectionState(ConnectionState::Connected) if !m.connected => {
                m.connected = true;
                let epoch = g.epoch();
                self.log_membership(MembershipChange::MediaReady, epoch, now);
                self.emit(Event::MediaConnected);
            }
            ClientEvent::ConnectionState(
                s @ (ConnectionState::Failed | ConnectionState::Closed),
            ) => {
                self.warn(CallWarning::Transport(format!("connection {s:?}")));
            }
            _ => {}
        }
    }

    async fn on_command(&mut self, c: Command) {
        match c {
            Command::Approve(request, reply) => {
                let r = if !matches!(self.phase, Phase::Member(_)) {
                    Err(CallError::NotMember)
                } else if self.waiting.contains_key(&request) {
                    self.intents.push_back(Intent::Approve(request));
                    Ok(())
                } else {
                    Err(CallError::UnknownRequest(request))
                };
                let _ = reply.send(r);
            }
            Command::Deny(request, reply) => {
                let r = if self.waiting.remove(&request).is_some() {
                    let _ = self
                        .control
                        .tx
                        .send(Body::RemoveParticipant(RemoveParticipant {
                            conn_id: request,
                        }));
                    Ok(())
                } else {
                    Err(CallError::UnknownRequest(request))
                };
                let _ = reply.send(r);
            }
            Command::Remove(identity, reply) => {
                let r = match self.group() {
                    None => Err(CallError::NotMember),
                    Some(g) => match g.roster().find(&identity) {
                        Some(m) => {
                            let leaf = m.leaf;
                            self.intents.push_back(Intent::Remove(leaf));
                            Ok(())
                        }
                        None => Err(CallError::UnknownMember(identity)),
                    },
                };
                let _ = reply.send(r);
            }
            Command::Publish(kind, frame, keyframe, reply) => {
                let now = Instant::now();
                let gated = kind == MediaKind::Video && keyframe.is_some();
                let r = match (&mut self.phase, &mut self.media, self.opts.media) {
                    (Phase::Member(_), Some(m), MediaMode::App) if !m.connected => {
                        Err(CallError::MediaNotConnected)
                    }
                    (Phase::Member(_), Some(_), MediaMode::App)
                        if gated && self.keyframe_due && keyframe == Some(false) =>
                    {
                        Err(CallError::KeyframeRequired)
                    }
                    (Phase::Member(g), Some(m), MediaMode::App) => {
                        let r = m
                            .pipeline
                            .publish(now, g, kind, &frame)
                            .map_err(CallError::FrameRejected);
                        if r.is_ok() && gated {
                            self.keyframe_due = false;
                        }
                        r
                    }
                    (Phase::Member(_), _, _) => Err(CallError::MediaDisabled),
                    _ => Err(CallError::NotMember),
                };
                let _ = reply.send(r);
            }
            Command::SelectVideo(selection, reply) => {
                self.select_video(selection);
                let _ = reply.send(Ok(()));
            }
            Command::Lock(locked, reply) => {
                let body = if locked {
                    Body::LockRoom
                } else {
                    Body::UnlockRoom
                };
                let r = self.control.tx.send(body).map_err(|_| CallError::Ended);
                let _ = reply.send(r);
            }
            Command::Leave(reply) => {
                self.end(EndReason::Left).await;
                let _ = reply.send(Ok(()));
            }
        }
    }

    async fn end(&mut self, reason: EndReason) {
        if self.ended {
            return;
        }
        self.publish_stats();
        self.ended = true;
        let now = Instant::now();
        let epoch = match &self.phase {
            Phase::Member(g) => g.epoch(),
            _ => 0,
        };
        match reason {
            EndReason::Removed => self.log_membership(MembershipChange::Removed, epoch, now),
            _ if matches!(self.phase, Phase::Member(_)) => {
                self.log_membership(MembershipChange::Left, epoch, now)
            }
            _ => {}
        }
        if let Some(m) = self.media.take() {
            // Frames already sealed go out first: dropping the pipeline closes the send
            // queue, and the send task ends once it has written what was queued.
            let MediaState {
                transport,
                sender,
                pipeline,
                events,
                ..
            } = m;
            drop(pipeline);
            drop(events);
            let _ = tokio::time::timeout(SEND_FLUSH, sender).await;
            let _ = transport.close().await;
        }
        self.phase = Phase::Ended;
        // Closing the writer's queue sends TLS close_notify.
        let (dead, _) = mpsc::unbounded_channel();
        self.control.tx = dead;
        self.emit(Event::CallEnded { reason });
    }

    async fn on_control(&mut self, body: Body) {
        let now = Instant::now();
        match body {
            Body::Welcome(w) => {
                let client = match &mut self.phase {
                    Phase::Waiting(c) => c.take(),
                    _ => None,
                };
                let Some(client) = client else {
                    self.warn(CallWarning::HandshakeRefused("unexpected Welcome".into()));
                    return;
                };
                match CallGroup::join(*client, w.welcome.as_slice(), self.opts.member_config, now) {
                    Ok(g) => {
                        self.phase = Phase::Member(Box::new(g));
                        self.on_member(now).await;
                    }
                    Err(e) => {
                        self.end(EndReason::ProtocolError(format!("Welcome refused: {e}")))
                            .await
                    }
                }
            }
            Body::CommitAccepted(a) => {
                // Replies can be stale: an own commit discarded because another member's won
                // its epoch still gets its refusal later. Only the reply for the commit now
                // pending counts; confirming another one would fork this member off.
                let Some(p) = self
                    .pending
                    .take_if(|p| p.commit.from_epoch().checked_add(1) == Some(a.epoch))
                else {
                    return;
                };
                let Phase::Member(g) = &mut self.phase else {
                    return;
                };
                if let Err(e) = p.commit.confirm(g, now) {
                    warn_to(&self.events, CallWarning::Group(e.to_string()));
                }
            }
            Body::CommitRejected(r) => {
                let Some(p) = self.pending.take_if(|p| p.commit.from_epoch() == r.epoch) else {
                    return;
                };
                let Phase::Member(g) = &mut self.phase else {
                    return;
                };
                let intent = p.intent.clone();
                if let Err(e) = p.commit.discard(g) {
                    warn_to(&self.events, CallWarning::Group(e.to_string()));
                }
                if r.reason == CommitRejectReason::EPOCH_TAKEN {
                    if let Some(w) = &r.winner
                        && g.epoch() == r.epoch
                        && let Err(e) = g.handle_message(now, w.as_slice())
                    {
                        warn_to(&self.events, CallWarning::HandshakeRefused(e.to_string()));
                    }
                    self.retry(intent);
                } else {
                    self.warn(CallWarning::CommitRejected {
                        epoch: r.epoch,
                        reason: r.reason,
                    });
                }
            }
            Body::CommitBroadcast(b) => {
                let Phase::Member(g) = &mut self.phase else {
                    return;
                };
                if let Some(p) = self.pending.take_if(|p| p.commit.from_epoch() == b.epoch) {
                    // Another member's commit won this epoch.
                    let intent = p.intent.clone();
                    if let Err(e) = p.commit.discard(g) {
                        warn_to(&self.events, CallWarning::Group(e.to_string()));
                    }
                    self.retry(intent);
                }
                let Phase::Member(g) = &mut self.phase else {
                    return;
                };
                if b.epoch == g.epoch()
                    && let Err(e) = g.handle_message(now, b.commit.as_slice())
                {
                    warn_to(&self.events, CallWarning::HandshakeRefused(e.to_string()));
                }
            }
            Body::RelayProposal(p) => {
                let Phase::Member(g) = &mut self.phase else {
                    return;
                };
                if p.epoch == g.epoch() {
                    match g.handle_message(now, p.proposal.as_slice()) {
                        Ok(()) => {
                            self.proposed_removals.insert(p.removed_leaf);
                        }
                        Err(e) => {
                            warn_to(&self.events, CallWarning::HandshakeRefused(e.to_string()))
                        }
                    }
                }
            }
            Body::WaitingRoomUpdate(u) => {
                let present: BTreeSet<u64> = u.entries.iter().map(|e| e.conn_id).collect();
                self.announced.retain(|c| present.contains(c));
                self.waiting = u.entries.into_iter().map(|e| (e.conn_id, e)).collect();
                // Whoever the call's policy lets add members is asked (hosts by default).
                let may_add = match &self.phase {
                    Phase::Member(g) => {
                        g.is_host() || g.params().add_rule == blindcall_group::AddRule::AnyMember
                    }
                    _ => false,
                };
                if !may_add {
                    return;
                }
                let fresh: Vec<WaitingEntry> = self
                    .waiting
                    .values()
                    .filter(|e| !self.announced.contains(&e.conn_id))
                    .cloned()
                    .collect();
                for e in fresh {
                    self.announced.insert(e.conn_id);
                    if self.opts.auto_approve {
                        self.intents.push_back(Intent::Approve(e.conn_id));
                    } else {
                        self.emit(Event::JoinRequested {
                            request: e.conn_id,
                            display_name: String::from_utf8_lossy(e.display_name.as_slice())
                                .into_owned(),
                        });
                    }
                }
            }
            Body::MediaSignal(s) => self.on_signal(s.payload.as_slice()).await,
            Body::Refused(r) => {
                let reason = if r.reason == RefusedReason::REMOVED_BY_HOST
                    && matches!(self.phase, Phase::Waiting(_))
                {
                    EndReason::Denied
                } else {
                    EndReason::Refused(r.reason)
                };
                self.end(reason).await;
            }
            Body::Error(e) => self.warn(CallWarning::Relay(e.code)),
            Body::RoomStateUpdate(state) => {
                let locked = state.locked != 0;
                if self.room_locked.is_some_and(|l| l != locked)
                    || (self.room_locked.is_none() && locked)
                {
                    self.emit(Event::RoomLocked { locked });
                }
                self.room_locked = Some(locked);
            }
            _ => {}
        }
    }

    async fn on_signal(&mut self, payload: &[u8]) {
        // The forwarder only ever offers (CP-MEDIA-3); anything else is refused.
        let Ok(MediaSignalPayload::Offer(sdp)) = MediaSignalPayload::decode(payload) else {
            self.warn(CallWarning::BadMediaSignal);
            return;
        };
        let offer = SessionDescription {
            kind: SdpKind::Offer,
            sdp,
        };
        let Some(m) = &self.media else { return };
        match m.transport.handle_offer(offer).await {
            Ok(answer) => {
                let _ = self.control.tx.send(Body::MediaSignal(MediaSignal {
                    payload: VLBytes::new(MediaSignalPayload::Answer(answer.sdp).encode()),
                }));
            }
            Err(e) => self.warn(CallWarning::Transport(e.to_string())),
        }
    }

    async fn drain_group_events(&mut self, now: Instant) {
        loop {
            let Phase::Member(g) = &mut self.phase else {
                return;
            };
            let Some(e) = g.poll_event() else { return };
            match e {
                GroupEvent::EpochChanged { epoch, code } => {
                    if let Some(o) = &self.opts.observer {
                        o.epoch_entered(&EpochEntered {
                            epoch,
                            code: &code,
                            at: now,
                        });
                    }
                    self.proposal_epoch = None;
                    self.proposal_fallback = None;
                    self.proposed_removals.clear();
                    if epoch > g.send_epoch() {
                        self.activate_at = Some(after(now, self.opts.activation_delay));
                    }
                    let join_epoch = self.join_epoch;
                    if let Some(m) = &mut self.media {
                        m.pipeline.retry_held(now, g, join_epoch);
                    }
                    let _ = self.events.send(Event::EpochChanged { epoch, code });
                }
                GroupEvent::MembersJoined { epoch, members } => {
                    drop(self.events.send(Event::MembersJoined {
                        epoch,
                        identities: members.iter().map(|m| Arc::clone(&m.identity)).collect(),
                    }))
                }
                GroupEvent::MembersLeft { epoch, members } => {
                    drop(self.events.send(Event::MembersLeft {
                        epoch,
                        identities: members.iter().map(|m| Arc::clone(&m.identity)).collect(),
                    }))
                }
                GroupEvent::ProposalQueued { .. } => {
                    let epoch = g.epoch();
                    self.proposal_epoch = Some(epoch);
                    // The lowest remaining leaf commits at once; the others step in later
                    // if nobody did (the relay sequences whichever comes first).
                    let own = g.own_leaf();
                    let rank = g
                        .roster()
                        .members()
                        .iter()
                        .filter(|m| !self.proposed_removals.contains(&m.leaf))
                        .position(|m| m.leaf == own)
                        .unwrap_or(0);
                    let wait = u32::try_from(rank)
                        .ok()
                        .and_then(|r| self.opts.proposal_fallback_step.checked_mul(r))
                        .unwrap_or(Duration::from_secs(3600));
                    if wait.is_zero() {
                        if !self.intents.contains(&Intent::Proposals) {
                            self.intents.push_back(Intent::Proposals);
                        }
                    } else {
                        self.proposal_fallback = Some(after(now, wait));
                    }
                }
                GroupEvent::PathUpdateDue if !self.intents.contains(&Intent::PathUpdate) => {
                    self.intents.push_back(Intent::PathUpdate)
                }
                GroupEvent::SendEpochActivated { epoch, .. } => {
                    self.keyframe_due = true;
                    let _ = self.events.send(Event::SendEpochActivated { epoch });
                    let _ = self.events.send(Event::KeyframeRequested {
                        cause: KeyframeCause::SendEpochSwitched { epoch },
                    });
                }
                GroupEvent::RemovedFromCall { .. } => {
                    self.end(EndReason::Removed).await;
                    return;
                }
                _ => {}
            }
        }
    }

    /// Queues the intent of a commit that lost its epoch, to be made again in the new one. A
    /// path update is not queued here: the group schedules it again itself
    /// ([`GroupEvent::PathUpdateDue`]), and queueing both would commit two updates.
    fn retry(&mut self, intent: Intent) {
        if intent != Intent::PathUpdate && !self.intents.contains(&intent) {
            self.intents.push_front(intent);
        }
    }

    fn next_intent(&mut self) {
        while self.pending.is_none() {
            let Some(intent) = self.intents.pop_front() else {
                return;
            };
            let Phase::Member(g) = &mut self.phase else {
                self.intents.clear();
                return;
            };
            if !g.is_active() {
                self.intents.clear();
                return;
            }
            let (result, purpose) = match &intent {
                Intent::Approve(conn) => {
                    let Some(entry) = self.waiting.get(conn) else {
                        continue;
                    };
                    (
                        g.add_members(&[entry.key_package.as_slice()]),
                        CommitPurpose::Add,
                    )
                }
                Intent::Remove(leaf) => {
                    if g.roster().get(*leaf).is_none() {
                        continue;
                    }
                    (g.remove_members(&[*leaf]), CommitPurpose::Remove)
                }
                Intent::Proposals => {
                    if self.proposal_epoch != Some(g.epoch()) {
                        continue;
                    }
                    (g.commit_pending_proposals(), CommitPurpose::Proposals)
                }
                Intent::PathUpdate => (g.self_update(), CommitPurpose::PathUpdate),
            };
            let commit = match result {
                Ok(c) => c,
                Err(e) => {
                    warn_to(&self.events, CallWarning::Group(e.to_string()));
                    continue;
                }
            };
            let msg = Commit {
                epoch: commit.from_epoch(),
                commit: VLBytes::new(commit.commit().to_vec()),
                welcome: commit.welcome().map(|w| VLBytes::new(w.to_vec())),
                group_info: commit.group_info().map(|w| VLBytes::new(w.to_vec())),
            };
            if let Some(o) = &self.opts.observer {
                o.commit_sent(&CommitSent {
                    from_epoch: commit.from_epoch(),
                    purpose,
                    at: Instant::now(),
                });
            }
            let _ = self.control.tx.send(Body::Commit(msg));
            self.pending = Some(Pending { commit, intent });
        }
    }
}
