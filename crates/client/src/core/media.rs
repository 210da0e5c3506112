//! The media side of the call: the transport's lifecycle (open once a member, then `Join` the
//! forwarder and answer its offers, SDK-MEDIA-1), packets in and out of the media pipeline,
//! publishing with the keyframe rule (SDK-MEDIA-3), video selection (SDK-VIDEO-1), and what
//! the group's sender authentication reports about incoming streams (SDK-AUTH-*).

use std::time::Instant;

use blindcall_group::{Event as GroupEvent, RosterMember};
use blindcall_media::MediaKind;
use blindcall_proto::{Body, MediaSignal, MediaSignalPayload, VLBytes, VideoFilter};
use blindcall_transport::ConnectionState;

use super::join::Phase;
use super::{CallCore, MediaInput, Output, TransportOp};
use crate::error::{CallError, CallWarning, TransportWarning};
use crate::event::{Event, KeyframeCause};
use crate::media::{HoldLimits, MediaPipeline, kind_of};
use crate::observer::MembershipChange;
use crate::options::{MediaMode, VideoSelection};

/// Where the media transport stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No transport (media off, not a member yet, or the call ended).
    Off,
    /// [`TransportOp::Open`] was asked for.
    Opening,
    /// The transport exists; `connected` once its connection first came up.
    Open { connected: bool },
    /// The transport could not be created or stopped: the call goes on without media.
    Failed,
}

/// Media state of the call.
pub(super) struct Media {
    state: State,
    pub(super) pipeline: Option<MediaPipeline>,
    /// Whose video the application wants, and the filter last sent to the relay for it.
    video: VideoSelection,
    video_sent: Option<VideoFilter>,
    /// The relay's id of this participant's connection (from its `HelloAck`), which its
    /// media streams carry.
    pub(super) relay_participant: Option<u64>,
}

impl Media {
    pub(super) fn new(video: VideoSelection) -> Self {
        Self {
            state: State::Off,
            pipeline: None,
            video,
            video_sent: None,
            relay_participant: None,
        }
    }

    /// The call ended: nothing more goes in or out.
    pub(super) fn close(&mut self) {
        self.state = State::Off;
        self.pipeline = None;
    }

    /// The connection was lost: no transport until the membership is resumed. The pipeline
    /// stays (its streams' receive state goes on across the reconnection).
    pub(super) fn suspend(&mut self) {
        if self.state != State::Failed {
            self.state = State::Off;
        }
        self.video_sent = None;
    }
}

fn signal(payload: &MediaSignalPayload) -> Body {
    Body::MediaSignal(MediaSignal {
        payload: VLBytes::new(payload.encode()),
    })
}

impl CallCore {
    fn publishes(&self) -> Option<bool> {
        match self.opts.media {
            MediaMode::Off => None,
            MediaMode::ReceiveOnly => Some(false),
            MediaMode::App => Some(true),
        }
    }

    /// A new member names its relay participant in its signed manifests (SDK-AUTH-2) and
    /// opens its media transport (unless media is off).
    pub(super) fn start_media(&mut self) {
        if let (Phase::Member(g), Some(id)) = (&mut self.phase, self.media.relay_participant) {
            g.set_media_participant(self.now, id);
        }
        let Some(publish) = self.publishes() else {
            return;
        };
        self.media.state = State::Opening;
        self.out
            .push_back(Output::Transport(TransportOp::Open { publish }));
    }

    /// One report of the transport.
    pub(super) fn on_media(&mut self, now: Instant, input: MediaInput) {
        match input {
            MediaInput::Opened if self.media.state == State::Opening => {
                let publish = self.publishes().unwrap_or(false);
                self.media.state = State::Open { connected: false };
                let hold = HoldLimits {
                    time: self.opts.hold_future_frames,
                    frames: self.opts.hold_max_frames,
                    bytes: self.opts.hold_max_bytes,
                };
                // After a reconnection the pipeline goes on: its streams' replay state and
                // its packetizers' sequence numbers continue.
                if self.media.pipeline.is_none() {
                    self.media.pipeline = Some(MediaPipeline::new(0x5eed, hold));
                }
                self.send(signal(&MediaSignalPayload::Join { publish }));
                let selection = self.media.video.clone();
                self.select_video(selection);
            }
            MediaInput::OpenFailed => {
                self.media.state = State::Failed;
                self.warn(CallWarning::Transport(TransportWarning::Open));
            }
            MediaInput::Answer(sdp) => self.send(signal(&MediaSignalPayload::Answer(sdp))),
            MediaInput::OfferFailed => self.warn(CallWarning::Transport(TransportWarning::Offer)),
            MediaInput::Packet { from, kind, packet } => {
                let Phase::Member(g) = &mut self.phase else {
                    return;
                };
                if let Some(p) = &mut self.media.pipeline {
                    let sink = super::Sink {
                        out: &mut self.out,
                        observer: self.observer.as_deref(),
                    };
                    p.on_packet(now, g, self.epochs.join_epoch, from, kind, packet, sink);
                }
            }
            MediaInput::TrackEnded { from, kind } => {
                if let Some(p) = &mut self.media.pipeline {
                    p.end_track(from, kind);
                }
            }
            MediaInput::TrackStarted {
                from,
                kind: MediaKind::Video,
            } => self
                .out
                .push_back(Output::Transport(TransportOp::RequestKeyframe { from })),
            MediaInput::KeyframeRequested {
                kind: MediaKind::Video,
            } => self.emit(Event::KeyframeRequested {
                cause: KeyframeCause::Receiver,
            }),
            MediaInput::Connection(ConnectionState::Connected)
                if self.media.state == (State::Open { connected: false }) =>
            {
                self.media.state = State::Open { connected: true };
                let epoch = match &self.phase {
                    Phase::Member(g) => g.epoch(),
                    _ => 0,
                };
                self.observe_membership(MembershipChange::MediaReady, epoch, now);
                self.emit(Event::MediaConnected);
            }
            MediaInput::Connection(ConnectionState::Failed) => {
                self.warn(CallWarning::Transport(TransportWarning::ConnectionFailed));
                // The media path is gone; the relay's forwarder knows media by connection, so
                // the member comes back on a new one (the relay keeps its leaf meanwhile).
                if self.link_up() && matches!(self.phase, Phase::Member(_)) {
                    self.out.push_back(Output::DropControl);
                    self.link_lost(now);
                }
            }
            MediaInput::Connection(ConnectionState::Closed) => {
                self.warn(CallWarning::Transport(TransportWarning::ConnectionClosed))
            }
            MediaInput::EventsEnded => {
                self.media.state = State::Failed;
                self.media.pipeline = None;
                self.warn(CallWarning::Transport(TransportWarning::EventsEnded));
            }
            _ => {}
        }
    }

    /// A `MediaSignal` from the relay: the forwarder only ever offers (CP-MEDIA-3).
    pub(super) fn on_media_signal(&mut self, payload: &[u8]) {
        let Ok(MediaSignalPayload::Offer(sdp)) = MediaSignalPayload::decode(payload) else {
            self.warn(CallWarning::BadMediaSignal);
            return;
        };
        if matches!(self.media.state, State::Open { .. }) {
            self.out
                .push_back(Output::Transport(TransportOp::ApplyOffer(sdp)));
        }
    }

    /// Records the application's video selection and sends the relay its filter.
    pub(super) fn select_video(&mut self, selection: VideoSelection) {
        self.media.video = selection;
        self.sync_video();
    }

    /// Sends the relay the video filter for the current selection when it changed: listed
    /// identities become the relay's participant ids of the streams they were authenticated on.
    pub(super) fn sync_video(&mut self) {
        let Some(p) = &self.media.pipeline else {
            return;
        };
        let filter = match &self.media.video {
            VideoSelection::All => VideoFilter::All,
            VideoSelection::Only(names) => VideoFilter::Only(p.participants_of(names)),
        };
        if self.media.video_sent.as_ref() == Some(&filter) {
            return;
        }
        // Nothing sent yet and everything wanted: the relay's default already is "all".
        if self.media.video_sent.is_none() && filter == VideoFilter::All {
            self.media.video_sent = Some(filter);
            return;
        }
        self.send(signal(&MediaSignalPayload::Video(filter.clone())));
        self.media.video_sent = Some(filter);
    }

    /// Seals, packetizes and queues one frame of the application.
    pub(super) fn publish_frame(
        &mut self,
        now: Instant,
        kind: MediaKind,
        frame: &[u8],
        keyframe: Option<bool>,
    ) -> Result<(), CallError> {
        if !self.link_up() && matches!(self.phase, Phase::Member(_)) {
            // Away: dropped before sealing (no counter used), never queued.
            self.drop_away();
            return Err(CallError::Reconnecting);
        }
        let Phase::Member(g) = &mut self.phase else {
            return Err(CallError::NotMember);
        };
        if self.opts.media != MediaMode::App {
            return Err(CallError::MediaDisabled);
        }
        let pipeline = match (self.media.state, &mut self.media.pipeline) {
            (State::Open { connected: true }, Some(p)) => p,
            (State::Opening | State::Open { .. }, _) => return Err(CallError::MediaNotConnected),
            _ => return Err(CallError::MediaDisabled),
        };
        let typed = kind == MediaKind::Video && keyframe.is_some();
        if typed && self.epochs.keyframe_due && keyframe == Some(false) {
            return Err(CallError::KeyframeRequired);
        }
        let sink = super::Sink {
            out: &mut self.out,
            observer: self.observer.as_deref(),
        };
        pipeline
            .publish(now, g, kind, frame, sink)
            .map_err(CallError::FrameRejected)?;
        if typed {
            self.epochs.keyframe_due = false;
        }
        Ok(())
    }

    /// Members left: the streams pinned to them are closed (SDK-AUTH-4).
    pub(super) fn close_streams_of(&mut self, members: &[RosterMember]) {
        let leaves: Vec<u32> = members.iter().map(|m| m.leaf).collect();
        if let (Phase::Member(g), Some(p)) = (&mut self.phase, &mut self.media.pipeline) {
            p.close_streams_pinned_to(g, &leaves);
        }
    }

    /// What the group's sender authentication found on an incoming stream, as an SDK event
    /// naming the stream by the relay's participant id and media kind (SDK-AUTH-3).
    pub(super) fn on_auth_event(&mut self, event: GroupEvent) {
        let Phase::Member(g) = &self.phase else {
            return;
        };
        let kind_of_stream = |id: u64, kid: Option<blindcall_sframe::Kid>| {
            self.media
                .pipeline
                .as_ref()
                .and_then(|p| p.kind_of_stream(id))
                .or_else(|| {
                    let parts = g.params().layout.decode(kid?).ok()?;
                    kind_of(parts.context)
                })
                .unwrap_or(MediaKind::Audio)
        };
        let event = match event {
            GroupEvent::Impersonation {
                claimed,
                kid,
                stream,
                reason,
                detected_after,
                ..
            } => {
                tracing::debug!(
                    ?reason,
                    participant = stream.participant,
                    claimed = ?claimed.as_ref().map(|m| m.leaf),
                    "impersonation detected"
                );
                Event::Impersonation {
                    claimed: claimed.as_ref().map(|m| self.sdk_member(m)),
                    participant: stream.participant,
                    kind: kind_of_stream(stream.id, Some(kid)),
                    reason,
                    detected_after,
                }
            }
            GroupEvent::SenderUnauthenticated {
                member,
                leaf,
                epoch,
            } => Event::SenderUnauthenticated {
                epoch,
                leaf,
                member: member.as_ref().map(|m| self.sdk_member(m)),
            },
            GroupEvent::StreamUnblocked { leaf, stream } => Event::StreamUnblocked {
                member: g.roster().get(leaf).map(|m| self.sdk_member(m)),
                participant: stream.participant,
                kind: kind_of_stream(stream.id, None),
            },
            _ => return,
        };
        self.emit(event);
    }

    /// After an epoch change: frames held for it are opened now.
    pub(super) fn retry_held(&mut self, now: Instant) {
        let Phase::Member(g) = &mut self.phase else {
            return;
        };
        if let Some(p) = &mut self.media.pipeline {
            let sink = super::Sink {
                out: &mut self.out,
                observer: self.observer.as_deref(),
            };
            p.retry_held(now, g, self.epochs.join_epoch, sink);
        }
    }
}
