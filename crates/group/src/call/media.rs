//! Media of a call member: sealing own frames (recorded for signed manifests) and opening
//! others' frames per stream, with sender authentication (spec/media-auth.md).

use std::time::Instant;

use blindcall_sframe::{Counter, Kid, Sender as FrameSender};
use openmls_traits::OpenMlsProvider as _;
use openmls_traits::crypto::OpenMlsCrypto as _;

use super::CallGroup;
use crate::confirm::PeerMessageError;
use crate::error::{ApiMisuse, Error, FrameDropReason, FrameError, MlsFailure};
use crate::event::Event;
use crate::keyring::{DEFAULT_STREAM, OpenedFrame};
use crate::media_auth::{
    AuthenticatedFrame, EPOCH_BINDING_LABEL, EPOCH_BINDING_LEN, FrameAuth, MediaAuthEvent,
    SignedManifest, StreamRef, StreamRefusal, frame_hash,
};

/// What sealing a frame produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The KID it was sealed under.
    pub kid: Kid,
    /// Its counter.
    pub ctr: Counter,
    /// The send epoch.
    pub epoch: u64,
    /// Length of the SFrame frame written.
    pub len: usize,
}

impl CallGroup {
    /// The SFrame sender of own stream `context` in the send epoch (created on first use).
    /// Frames must be sealed through [`CallGroup::seal_into`], which records them for the
    /// signed manifests; a frame sealed otherwise would be flagged by receivers.
    pub(crate) fn sender(&mut self, context: u64) -> Result<&mut FrameSender, Error> {
        if !self.active {
            return Err(ApiMisuse::NotAMember.into());
        }
        if self.media_disabled {
            return Err(ApiMisuse::NotAllowed.into());
        }
        let max = self.params.layout.max_contexts();
        if context >= max {
            return Err(ApiMisuse::ContextOutOfRange { context, max }.into());
        }
        if !self.senders.contains_key(&context) {
            let s = self
                .keyring
                .sender(self.send_epoch, self.own_leaf(), context)?
                .ok_or(MlsFailure::Unreachable("send epoch keys missing"))?;
            self.senders.insert(context, s);
        }
        self.senders
            .get_mut(&context)
            .ok_or_else(|| MlsFailure::Unreachable("sender just inserted").into())
    }

    /// Length of the SFrame frame the next `plaintext_len`-byte frame of own stream `context`
    /// seals to (for checking it fits before using up a counter).
    pub fn sealed_len(&mut self, context: u64, plaintext_len: usize) -> Result<usize, Error> {
        Ok(self.sender(context)?.sealed_len(plaintext_len))
    }

    /// Seals one frame of own stream `context` under the send epoch into `out` (resized to the
    /// SFrame frame; its allocation is reused across calls), and records it for the next
    /// signed manifest (unless this member does not sign).
    pub fn seal_into(
        &mut self,
        now: Instant,
        context: u64,
        metadata: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Sealed, Error> {
        let now = self.clock(now);
        let epoch = self.send_epoch;
        let sender = self.sender(context)?;
        let kid = sender.kid();
        let ctr = sender
            .next_counter()
            .ok_or(blindcall_sframe::SealError::CounterExhausted { kid })?;
        out.resize(sender.sealed_len(plaintext.len()), 0);
        let len = sender.seal_into(metadata, plaintext, out)?;
        out.truncate(len);
        if self.client.signs_media {
            self.media_signer.record(now, epoch, kid, ctr, out);
        }
        Ok(Sealed {
            kid,
            ctr,
            epoch,
            len,
        })
    }

    /// Seals one frame of own stream `context` (see [`CallGroup::seal_into`]).
    pub fn seal(
        &mut self,
        now: Instant,
        context: u64,
        metadata: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.seal_into(now, context, metadata, plaintext, &mut out)?;
        Ok(out)
    }

    /// The relay's id of this member's media connection, named in its signed manifests so
    /// receivers can tell its streams from an impostor's. Set it when the relay assigns one.
    pub fn set_media_participant(&mut self, now: Instant, participant: u64) {
        let now = self.clock(now);
        self.media_signer.set_participant(now, participant);
    }

    /// Finishes the manifest being built now and queues every finished one for
    /// [`CallGroup::poll_peer_message`] (before leaving: the last frames sent get vouched
    /// for instead of being flagged at the receivers when the bound passes).
    pub fn finish_manifests(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.active {
            self.media_signer.flush(now);
            self.flush_manifests(now);
        }
    }

    /// Opens an SFrame frame in place without sender authentication (tools, tests and
    /// known-answer checks); calls use [`CallGroup::open_on`].
    pub fn open<'a>(
        &mut self,
        metadata: &[u8],
        frame: &'a mut [u8],
    ) -> Result<OpenedFrame<'a>, FrameError> {
        let now = self.now;
        self.keyring.open(now, DEFAULT_STREAM, metadata, frame)
    }

    /// Opens an SFrame frame received on `stream` in place: the key is chosen by KID only,
    /// replay state is kept per stream, the stream is pinned to the first leaf that
    /// authenticated on it, and frames of members that sign their media are checked against
    /// their signed manifests ([`FrameAuth`] in the result; impersonation is refused and
    /// reported as [`Event::Impersonation`]).
    pub fn open_on<'a>(
        &mut self,
        now: Instant,
        stream: StreamRef,
        metadata: &[u8],
        frame: &'a mut [u8],
    ) -> Result<OpenedFrame<'a>, FrameError> {
        let now = self.clock(now);
        let (header, parts) = self.keyring.peek(frame)?;
        if let Err(refusal) = self
            .verifier
            .check_stream(now, stream, parts.leaf, header.kid)
        {
            self.drain_auth_events();
            let reason = match refusal {
                StreamRefusal::ForeignKid { .. } => FrameDropReason::ForeignSender,
                _ => FrameDropReason::Impersonated,
            };
            return Err(FrameError {
                reason,
                kid: Some(header.kid),
                origin: None,
            });
        }
        let hash = frame_hash(frame);
        let mut opened = self.keyring.open(now, stream.id, metadata, frame)?;
        let auth = self.verifier.on_opened(
            now,
            &AuthenticatedFrame {
                stream,
                leaf: opened.sender,
                signs: opened.signs_media,
                epoch: opened.epoch,
                kid: header.kid,
                ctr: opened.counter,
                hash,
            },
        );
        self.drain_auth_events();
        if let FrameAuth::Refused(_) = auth {
            return Err(FrameError {
                reason: FrameDropReason::Impersonated,
                kid: Some(header.kid),
                origin: None,
            });
        }
        opened.auth = Some(auth);
        Ok(opened)
    }

    /// Forgets the receive state of `stream` (it ended).
    pub fn close_stream(&mut self, stream: u64) {
        self.keyring.close_stream(stream);
        self.verifier.close_stream(stream);
    }

    /// Sender authentication state and figures (counters, detection and signature-wait
    /// latencies).
    pub fn media_verifier(&self) -> &crate::media_auth::MediaVerifier {
        &self.verifier
    }

    /// Counters of the own manifest signer.
    pub fn manifest_counters(&self) -> crate::media_auth::SignerCounters {
        self.media_signer.counters()
    }

    /// Derives and keeps the manifest epoch binding of the current epoch.
    pub(super) fn enter_media_epoch(&mut self) {
        let epoch = self.epoch();
        if let Ok(b) = self.group.export_secret(
            self.client.provider.crypto(),
            EPOCH_BINDING_LABEL,
            &[],
            EPOCH_BINDING_LEN,
        ) && let Ok(b) = <[u8; EPOCH_BINDING_LEN]>::try_from(b.as_slice())
        {
            self.manifest_bindings.insert(epoch, b);
        }
    }

    /// An epoch's keys are gone: forget what media authentication kept for it.
    pub(super) fn retire_media_epoch(&mut self, epoch: u64) {
        self.manifest_bindings.remove(&epoch);
        self.verifier.retire_epoch(epoch);
    }

    /// Signs and queues every manifest the signer has due.
    pub(super) fn flush_manifests(&mut self, now: Instant) {
        while let Some(body) = self.media_signer.poll_manifest(now) {
            let Some(binding) = self.manifest_bindings.get(&body.epoch) else {
                // The epoch's keys are gone: nobody can open those frames any more.
                continue;
            };
            if let Ok(signed) = body.sign(binding, &self.client.signer) {
                let mut out = Vec::with_capacity(1 + signed.encoded_len());
                out.push(super::PEER_MANIFEST);
                out.extend_from_slice(&signed.encode());
                self.outbox.push_back(out);
            }
        }
    }

    /// A signed media manifest from another member.
    pub(super) fn handle_manifest(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<(), PeerMessageError> {
        let signed = SignedManifest::decode(bytes).map_err(|_| PeerMessageError::Malformed)?;
        let epoch = signed.body().epoch;
        let binding = *self
            .manifest_bindings
            .get(&epoch)
            .ok_or(PeerMessageError::Stale { epoch })?;
        let scheme = self.client.suite.ciphersuite().signature_algorithm();
        let keyring = &self.keyring;
        let crypto = self.client.provider.crypto();
        let verified = signed
            .verify(&binding, |input| {
                keyring
                    .roster(input.epoch)
                    .and_then(|r| r.get(input.leaf))
                    .is_some_and(|m| {
                        crypto
                            .verify_signature(
                                scheme,
                                input.payload,
                                &m.signature_key,
                                input.signature,
                            )
                            .is_ok()
                    })
            })
            .map_err(|_| PeerMessageError::BadSignature)?;
        let result = self
            .verifier
            .on_manifest(now, &verified)
            .map(|_| ())
            .map_err(|_| PeerMessageError::Manifest);
        self.drain_auth_events();
        result
    }

    /// Moves the verifier's events into the group's events, naming the claimed member.
    pub(super) fn drain_auth_events(&mut self) {
        while let Some(e) = self.verifier.poll_event() {
            let event = match e {
                MediaAuthEvent::Impersonation {
                    leaf,
                    kid,
                    stream,
                    reason,
                    detected_after,
                } => Event::Impersonation {
                    claimed: self.roster.get(leaf).cloned(),
                    leaf,
                    kid,
                    stream,
                    reason,
                    detected_after,
                },
                MediaAuthEvent::SenderUnauthenticated { leaf, epoch } => {
                    Event::SenderUnauthenticated {
                        member: self.roster.get(leaf).cloned(),
                        leaf,
                        epoch,
                    }
                }
                MediaAuthEvent::StreamUnblocked { leaf, stream } => {
                    Event::StreamUnblocked { leaf, stream }
                }
            };
            self.events.push_back(event);
        }
    }
}
