//! The application's handle on a call, and joining one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use blindcall_group::IdentityKey;
use blindcall_media::MediaKind;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{CallCore, Command, ControlEnd, Output};
use crate::driver::{AppChannels, Dialer, Driver, Request};
use crate::error::{CallError, JoinError, ProtocolError};
use crate::event::{CallStats, Event, Member};
use crate::media::IncomingFrame;
use crate::options::{JoinOptions, MediaMode, VideoSelection};
use crate::tls;
use crate::trust::TrustStore;

/// A running call. Cheap to clone; every clone controls the same call. Dropping every
/// handle leaves the call.
#[derive(Debug, Clone)]
pub struct Call {
    identity: Arc<str>,
    /// This participant's identity key (public half).
    own_key: Arc<[u8]>,
    cmds: mpsc::UnboundedSender<Request>,
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

impl Call {
    /// Connects to the relay at `relay_addr` over TLS (or, if it cannot be reached, to the
    /// next of [`JoinOptions::relays`], in order), presents `token`, and enters the call
    /// as `identity`: a host token in an empty room creates the call's group (and tells the
    /// relay its GroupInfo); anyone else publishes a KeyPackage and waits in the waiting
    /// room until a host admits it ([`Event::Joined`] follows). Returns once admitted.
    pub async fn join(
        relay_addr: SocketAddr,
        token: &str,
        identity: &str,
        options: JoinOptions,
    ) -> Result<(Call, Events), JoinError> {
        let tls_cfg = tls::client_config(&options.trust)?;
        let server_name = options.server_name.clone();
        let bind = options.bind;
        let step_timeout = options.step_timeout;
        let network = options.media_network;
        let receives = options.media != MediaMode::Off;
        let mut options = options;
        // Without a persistent identity, a key for this call only (so its public half is known
        // here for pairwise codes).
        let key = match &options.identity_key {
            Some(k) => Arc::clone(k),
            None => Arc::new(IdentityKey::generate(options.mls_suite).map_err(|_| {
                JoinError::Group(blindcall_group::Error::Mls(
                    blindcall_group::MlsFailure::Crypto,
                ))
            })?),
        };
        options.identity_key = Some(Arc::clone(&key));
        let own_key: Arc<[u8]> = Arc::from(key.public_key());
        let trust = match &options.trust_store {
            Some(path) => TrustStore::open(path)?,
            None => TrustStore::in_memory(),
        };
        // The relays in order: this address first, then the options' list (SDK-RELAYS-1).
        let relays = relay_list(relay_addr, &options.relays);
        options.relays = relays.clone();
        // The token and identity are checked here, before any network activity.
        let mut core =
            CallCore::new(Instant::now(), identity, token, options)?.with_trust_store(trust);
        let dialer = Dialer {
            addrs: relays,
            tls: tls_cfg,
            server_name: server_name.clone(),
            timeout: step_timeout,
            bind,
        };
        // The first connection: to the relay the core names; if it cannot be opened, the core
        // names the next one (SDK-RELAYS-2) or gives up.
        let mut relay = core.relay_target();
        let mut first = true;
        let control = loop {
            match dialer.dial(relay.clone()).await {
                Ok(control) => break control,
                Err(e) => {
                    core.handle_control_end(Instant::now(), ControlEnd::Closed);
                    let mut next = None;
                    while let Some(o) = core.poll_output(Instant::now()) {
                        if let Output::Connect { relay } = o {
                            next = Some(relay);
                        }
                    }
                    match next {
                        Some(r) => {
                            tracing::debug!(error = %e, relay = ?r, "relay unreachable; trying the next");
                            relay = r;
                            first = false;
                        }
                        None => return Err(e),
                    }
                }
            }
        };
        if !first {
            core.handle_control_connected(Instant::now());
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (stats_tx, stats_rx) = watch::channel(CallStats::default());
        let (frames_tx, frames_rx) = if receives {
            let (tx, rx) = mpsc::channel(1024);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (admitted_tx, admitted_rx) = oneshot::channel();
        let app = AppChannels {
            events: events_tx,
            frames: frames_tx,
            stats: stats_tx,
        };
        tokio::spawn(Driver::new(core, control, dialer, cmd_rx, app, admitted_tx, network).run());
        match admitted_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ProtocolError::Closed.into()),
        }
        Ok((
            Call {
                identity: Arc::from(identity),
                own_key,
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

    async fn ask(&self, command: Command) -> Result<(), CallError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Request { command, reply })
            .map_err(|_| CallError::Ended)?;
        rx.await.map_err(|_| CallError::Ended)?
    }

    /// Admits waiting-room request `request` (hosts): commits its Add.
    pub async fn approve(&self, request: u64) -> Result<(), CallError> {
        self.ask(Command::Approve(request)).await
    }

    /// Denies waiting-room request `request` (hosts): the relay refuses the joiner.
    pub async fn deny(&self, request: u64) -> Result<(), CallError> {
        self.ask(Command::Deny(request)).await
    }

    /// Removes `member` (hosts): commits its Remove. The member is named by leaf and identity
    /// key, never by display name (names are not unique).
    pub async fn remove(&self, member: &Member) -> Result<(), CallError> {
        self.ask(Command::Remove {
            leaf: member.leaf,
            identity_key: member.identity_key.to_vec(),
        })
        .await
    }

    /// Records in the trust store that `member`'s identity key is verified: its pairwise code
    /// ([`Call::pairwise_code`]) was compared out of band and matched.
    pub async fn verify(&self, member: &Member) -> Result<(), CallError> {
        self.ask(Command::Verify {
            leaf: member.leaf,
            identity_key: member.identity_key.to_vec(),
        })
        .await
    }

    /// The pairwise verification code of this participant and `member` (the same on both
    /// screens, in every call).
    pub fn pairwise_code(&self, member: &Member) -> blindcall_group::SecurityCode {
        blindcall_group::SecurityCode::pairwise(&self.own_key, &member.identity_key)
    }

    /// This participant's identity key (public half).
    pub fn identity_key(&self) -> &[u8] {
        &self.own_key
    }

    /// Publishes one encoded frame (with [`crate::MediaMode::App`]): sealed, then packetized.
    /// The SDK does not know whether a video frame published this way is a keyframe; codec
    /// publishers use [`Call::publish_video`].
    pub async fn publish(&self, kind: MediaKind, frame: Vec<u8>) -> Result<(), CallError> {
        self.ask(Command::Publish {
            kind,
            frame,
            keyframe: None,
        })
        .await
    }

    /// Publishes one encoded video frame, saying whether it is a keyframe. The first video
    /// frame, and the first after every switch of the send epoch
    /// ([`crate::event::KeyframeCause::SendEpochSwitched`]), must be a keyframe: a delta
    /// frame then is refused with [`CallError::KeyframeRequired`] and not sent.
    pub async fn publish_video(&self, frame: Vec<u8>, keyframe: bool) -> Result<(), CallError> {
        self.ask(Command::Publish {
            kind: MediaKind::Video,
            frame,
            keyframe: Some(keyframe),
        })
        .await
    }

    /// Locks (or unlocks) the room at the relay (hosts): new joiners are refused while locked.
    pub async fn lock_room(&self, locked: bool) -> Result<(), CallError> {
        self.ask(Command::LockRoom(locked)).await
    }

    /// Chooses whose video this participant receives (audio always flows from everyone).
    /// The relay switches each stream at a frame boundary and asks newly selected senders for
    /// a keyframe; identities are matched to streams by the SFrame keys their media opens with.
    pub async fn select_video(&self, selection: VideoSelection) -> Result<(), CallError> {
        self.ask(Command::SelectVideo(selection)).await
    }

    /// Leaves the call: proposes this member's own removal (a remaining member commits it),
    /// then closes the media and control connections.
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

/// The relays in the order joining tries them: `first`, then `rest` (a repeated address once).
fn relay_list(first: SocketAddr, rest: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut relays = vec![first];
    for a in rest {
        if !relays.contains(a) {
            relays.push(*a);
        }
    }
    relays
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // covers: SDK-RELAYS-1
    #[test]
    fn the_join_address_comes_first_then_the_list_each_once() {
        let [a, b, c]: [SocketAddr; 3] =
            ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"].map(|s| s.parse().unwrap());
        assert_eq!(relay_list(a, &[]), vec![a]);
        assert_eq!(relay_list(a, &[a, b, c]), vec![a, b, c]);
        assert_eq!(relay_list(b, &[a, b, c, a]), vec![b, a, c]);
    }
}
