//! The application's handle on a call, and joining one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use blindcall_group::{CallGroup, Client, MlsSuite, RelaySender};
use blindcall_media::MediaKind;
use blindcall_proto::{
    Body, CreateGroup, ErrorCode, Hello, HelloAck, PublishKeyPackage, RefusedReason, Role, VLBytes,
};
use openmls::prelude::{BasicCredential, Credential};
use tls_codec::Deserialize as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::actor::{Actor, Command, Phase};
use crate::control::{self, Control, ControlIn, body_name};
use crate::error::{CallError, JoinError, ProtocolError};
use crate::event::{CallStats, Event};
use crate::media::IncomingFrame;
use crate::options::{JoinOptions, VideoSelection};
use crate::tls;

/// A running call. Cheap to clone; every clone controls the same call. Dropping every
/// handle leaves the call.
#[derive(Debug, Clone)]
pub struct Call {
    identity: Arc<str>,
    cmds: mpsc::UnboundedSender<Command>,
    stats: watch::Receiver<CallStats>,
}

/// The call's event stream.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
    frames: Option<mpsc::Receiver<IncomingFrame>>,
}

impl Events {
    /// The next event; `None` after [`Event::CallEnded`] has been delivered.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// The decrypted frames (only with [`crate::MediaMode::App`] or `ReceiveOnly`; taken once).
    pub fn take_frames(&mut self) -> Option<mpsc::Receiver<IncomingFrame>> {
        self.frames.take()
    }
}

fn unexpected(got: &Body, expected: &'static str) -> JoinError {
    if let Body::Refused(r) = got {
        return JoinError::Refused(r.reason);
    }
    if let Body::Error(e) = got {
        return ProtocolError::RelayError(e.code).into();
    }
    ProtocolError::Unexpected {
        got: body_name(got),
        expected,
    }
    .into()
}

/// Reads messages until `pick` accepts one; others go to `backlog`.
async fn await_msg<T>(
    control: &mut Control,
    opts: &JoinOptions,
    what: &'static str,
    backlog: &mut Vec<Body>,
    mut pick: impl FnMut(Body) -> Result<Result<T, Body>, JoinError>,
) -> Result<T, JoinError> {
    let deadline = tokio::time::Instant::now() + opts.step_timeout;
    loop {
        let item = tokio::time::timeout_at(deadline, control.rx.recv())
            .await
            .map_err(|_| JoinError::Timeout { what })?;
        match item {
            Some(ControlIn::Msg(body)) => match pick(body)? {
                Ok(v) => return Ok(v),
                Err(other) => backlog.push(other),
            },
            Some(ControlIn::Malformed) => return Err(ProtocolError::Malformed.into()),
            Some(ControlIn::Closed) | None => return Err(ProtocolError::Closed.into()),
        }
    }
}

/// The relay's external-sender identity for `suite`'s signature scheme, from its HelloAck.
fn relay_sender(ack: &HelloAck, suite: MlsSuite) -> Result<RelaySender, ProtocolError> {
    let scheme = suite.ciphersuite().signature_algorithm() as u16;
    let entry = ack
        .external_senders
        .iter()
        .find(|s| s.signature_scheme == scheme)
        .ok_or(ProtocolError::RelayCredential)?;
    let cred = Credential::tls_deserialize_exact(entry.credential.as_slice())
        .map_err(|_| ProtocolError::RelayCredential)?;
    let basic = BasicCredential::try_from(cred).map_err(|_| ProtocolError::RelayCredential)?;
    Ok(RelaySender {
        signature_key: entry.signature_key.as_slice().to_vec(),
        identity: basic.identity().to_vec(),
    })
}

impl Call {
    /// Connects to the relay at `relay_addr` over TLS, presents `token`, and enters the call
    /// as `identity`: a host token in an empty room creates the call's group (and tells the
    /// relay its GroupInfo); anyone else publishes a KeyPackage and waits in the waiting
    /// room until a host admits it ([`Event::Joined`] follows). Returns once admitted.
    pub async fn join(
        relay_addr: SocketAddr,
        token: &str,
        identity: &str,
        options: JoinOptions,
    ) -> Result<(Call, Events), JoinError> {
        let room = tls::room_from_token(token)?;
        let tls_cfg = tls::client_config(&options.trust)?;
        let client = Client::new(identity, options.mls_suite)?;
        let mut control = control::connect(
            relay_addr,
            tls_cfg,
            &options.server_name,
            options.step_timeout,
        )
        .await?;
        let _ = control.tx.send(Body::Hello(Hello {
            room_id: VLBytes::new(room),
            token: VLBytes::new(token.trim().as_bytes().to_vec()),
            display_name: VLBytes::new(identity.as_bytes().to_vec()),
        }));
        let mut backlog = Vec::new();
        let ack = await_msg(
            &mut control,
            &options,
            "HelloAck",
            &mut backlog,
            |b| match b {
                Body::HelloAck(a) => Ok(Ok(a)),
                Body::Refused(r) => Err(JoinError::Refused(r.reason)),
                other => Ok(Err(other)),
            },
        )
        .await?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let _ = events_tx.send(Event::Admitted { role: ack.role });
        let now = Instant::now();
        let creates = ack.role == Role::HOST && ack.room.epoch.is_none();
        let phase = if creates {
            let mut call_config = options.call_config.clone();
            call_config.mls_suite = options.mls_suite;
            call_config.relay = Some(relay_sender(&ack, options.mls_suite)?);
            let group = CallGroup::create(client, &call_config, options.member_config, now)?;
            let _ = control.tx.send(Body::CreateGroup(CreateGroup {
                group_info: VLBytes::new(group.group_info()?),
            }));
            await_msg(
                &mut control,
                &options,
                "GroupCreated",
                &mut backlog,
                |b| match b {
                    Body::GroupCreated(_) => Ok(Ok(())),
                    Body::Error(e) => Err(ProtocolError::RelayError(e.code).into()),
                    Body::Refused(r) => Err(JoinError::Refused(r.reason)),
                    other => Ok(Err(other)),
                },
            )
            .await?;
            Phase::Member(Box::new(group))
        } else {
            let _ = control.tx.send(Body::PublishKeyPackage(PublishKeyPackage {
                key_package: VLBytes::new(client.key_package()?),
            }));
            await_msg(
                &mut control,
                &options,
                "KeyPackageAccepted",
                &mut backlog,
                |b| match b {
                    Body::KeyPackageAccepted(_) => Ok(Ok(())),
                    Body::Error(e) => Err(ProtocolError::RelayError(e.code).into()),
                    Body::Refused(r) => Err(JoinError::Refused(r.reason)),
                    other => Ok(Err(other)),
                },
            )
            .await?;
            let _ = control.tx.send(Body::JoinRequest);
            // The relay answers a JoinRequest with the room state, or an error.
            await_msg(
                &mut control,
                &options,
                "RoomStateUpdate",
                &mut backlog,
                |b| match b {
                    Body::RoomStateUpdate(_) => Ok(Ok(())),
                    Body::Error(e) if e.code == ErrorCode::NO_GROUP => {
                        Err(ProtocolError::RelayError(e.code).into())
                    }
                    Body::Refused(r) => Err(JoinError::Refused(r.reason)),
                    other => Ok(Err(other)),
                },
            )
            .await
            .map_err(|e| match e {
                JoinError::Refused(RefusedReason::ROOM_LOCKED) => e,
                other => other,
            })?;
            let _ = events_tx.send(Event::Waiting);
            Phase::Waiting(Some(Box::new(client)))
        };
        for b in &backlog {
            if !matches!(
                b,
                Body::RoomStateUpdate(_) | Body::Pong(_) | Body::WaitingRoomUpdate(_)
            ) {
                return Err(unexpected(b, "admission"));
            }
        }
        let identity: Arc<str> = Arc::from(identity);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (stats_tx, stats_rx) = watch::channel(CallStats::default());
        let (frames_tx, frames_rx) = match options.media {
            crate::MediaMode::App | crate::MediaMode::ReceiveOnly => {
                let (tx, rx) = mpsc::channel(1024);
                (Some(tx), Some(rx))
            }
            crate::MediaMode::Off => (None, None),
        };
        let actor = Actor::new(
            options, control, phase, events_tx, cmd_rx, stats_tx, frames_tx, backlog, now,
        );
        tokio::spawn(actor.run());
        Ok((
            Call {
                identity,
                cmds: cmd_tx,
                stats: stats_rx,
            },
            Events {
                rx: events_rx,
                frames: frames_rx,
            },
        ))
    }

    /// This participant's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), CallError>>) -> Command,
    ) -> Result<(), CallError> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).map_err(|_| CallError::Ended)?;
        rx.await.map_err(|_| CallError::Ended)?
    }

    /// Admits waiting-room request `request` (hosts): commits its Add.
    pub async fn approve(&self, request: u64) -> Result<(), CallError> {
        self.ask(|r| Command::Approve(request, r)).await
    }

    /// Denies waiting-room request `request` (hosts): the relay refuses the joiner.
    pub async fn deny(&self, request: u64) -> Result<(), CallError> {
        self.ask(|r| Command::Deny(request, r)).await
    }

    /// Removes the member named `identity` (hosts): commits its Remove.
    pub async fn remove(&self, identity: &str) -> Result<(), CallError> {
        let id = identity.to_owned();
        self.ask(|r| Command::Remove(id, r)).await
    }

    /// Publishes one encoded frame (with [`crate::MediaMode::App`]): sealed, then packetized.
    /// The SDK does not know whether a video frame published this way is a keyframe; codec
    /// publishers use [`Call::publish_video`].
    pub async fn publish(&self, kind: MediaKind, frame: Vec<u8>) -> Result<(), CallError> {
        self.ask(|r| Command::Publish(kind, frame, None, r)).await
    }

    /// Publishes one encoded video frame, saying whether it is a keyframe. The first video
    /// frame, and the first after every switch of the send epoch
    /// ([`crate::event::KeyframeCause::SendEpochSwitched`]), must be a keyframe: a delta
    /// frame then is refused with [`CallError::KeyframeRequired`] and not sent.
    pub async fn publish_video(&self, frame: Vec<u8>, keyframe: bool) -> Result<(), CallError> {
        self.ask(|r| Command::Publish(MediaKind::Video, frame, Some(keyframe), r))
            .await
    }

    /// Locks (or unlocks) the room at the relay (hosts): new joiners are refused while locked.
    pub async fn lock_room(&self, locked: bool) -> Result<(), CallError> {
        self.ask(|r| Command::Lock(locked, r)).await
    }

    /// Chooses whose video this participant receives (audio always flows from everyone).
    /// The relay switches each stream at a frame boundary and asks newly selected senders for
    /// a keyframe; identities are matched to streams by the SFrame keys their media opens with.
    pub async fn select_video(&self, selection: VideoSelection) -> Result<(), CallError> {
        self.ask(|r| Command::SelectVideo(selection, r)).await
    }

    /// Leaves the call: closes the media and control connections; the relay proposes this
    /// member's removal and a remaining member commits it.
    pub async fn leave(&self) -> Result<(), CallError> {
        self.ask(Command::Leave).await
    }

    /// The latest counters.
    pub fn stats(&self) -> CallStats {
        self.stats.borrow().clone()
    }

    /// A receiver of counter updates (for dashboards and for waiting on progress).
    pub fn watch_stats(&self) -> watch::Receiver<CallStats> {
        self.stats.clone()
    }
}
