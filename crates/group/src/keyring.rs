//! Per-epoch SFrame key sets (RFC 9605 §5.2): one receive ring for every member's streams of
//! every live epoch, retention of old epochs, and zeroization on removal.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blindcall_sframe::{
    BaseKey, CipherSuite, Counter, Header, Kid, Receiver, ReceiverConfig, Sender,
    mls::sender_base_key,
};

use crate::error::{Error, FrameDropReason, FrameError, FrameOrigin};
use crate::event::RetireReason;
use crate::identity::Roster;
use crate::kid::{KidLayout, KidParts};

/// The MLS exporter label of RFC 9605 §5.2.
pub const EXPORTER_LABEL: &str = "SFrame 1.0 Base Key";

/// A frame that authenticated, with the member and stream that sent it.
#[derive(Debug)]
pub struct OpenedFrame<'a> {
    /// Sender's leaf index.
    pub sender: u32,
    /// Sender's display identity (in the frame's epoch).
    pub identity: Arc<str>,
    /// Sender's stream context.
    pub context: u64,
    /// MLS epoch whose keys opened it.
    pub epoch: u64,
    /// The frame's SFrame counter.
    pub counter: Counter,
    /// Decrypted payload (inside the caller's buffer).
    pub plaintext: &'a [u8],
    /// Whether the sender's leaf advertises signed media.
    pub signs_media: bool,
    /// Sender authentication (`None` when opened without it, by `CallGroup::open`).
    pub auth: Option<crate::media_auth::FrameAuth>,
}

/// Derives a member's SFrame sender base key for one epoch (RFC 9605 §5.2).
pub fn member_base_key(
    suite: CipherSuite,
    epoch_secret: &BaseKey,
    leaf: u32,
) -> Result<BaseKey, Error> {
    Ok(sender_base_key(suite, epoch_secret, leaf)?)
}

/// The stream frames arrive on when the caller does not name one ([`crate::CallGroup::open`]).
pub const DEFAULT_STREAM: u64 = u64::MAX;

struct EpochKeys {
    epoch: u64,
    secret: BaseKey,
    roster: Arc<Roster>,
    /// (stream, KID) pairs whose receive keys are installed.
    installed: Vec<(u64, Kid)>,
    /// Leaves a newer epoch removed: their frames under this epoch are refused.
    revoked: BTreeSet<u32>,
    expires_at: Option<Instant>,
}

/// Receive state: one SFrame receiver (keys and replay windows) per incoming stream, so frames
/// on one stream can never move another stream's replay window.
pub(crate) struct KeyRing {
    suite: CipherSuite,
    layout: KidLayout,
    config: ReceiverConfig,
    streams: HashMap<u64, Receiver>,
    /// Ascending by epoch; the last one is the current epoch and never expires.
    epochs: Vec<EpochKeys>,
}

impl KeyRing {
    pub(crate) fn new(suite: CipherSuite, layout: KidLayout, replay_window: u64) -> Self {
        Self {
            suite,
            layout,
            config: ReceiverConfig { replay_window },
            streams: HashMap::new(),
            epochs: Vec::new(),
        }
    }

    /// Makes `epoch` the current epoch. The previous current epoch expires `retention` after
    /// `now`; a held epoch with the same low E bits is dropped at once.
    pub(crate) fn install(
        &mut self,
        epoch: u64,
        secret: BaseKey,
        roster: Arc<Roster>,
        now: Instant,
        retention: Duration,
    ) -> Vec<(u64, RetireReason)> {
        let mut retired = Vec::new();
        let low = self.layout.epoch_low(epoch);
        let mut i = 0;
        while i < self.epochs.len() {
            if self.layout.epoch_low(self.epochs[i].epoch) == low {
                let old = self.epochs.remove(i);
                retired.push((old.epoch, RetireReason::EpochBitsReused));
                self.drop_keys(old);
            } else {
                i += 1;
            }
        }
        if let Some(prev) = self.epochs.last_mut()
            && prev.expires_at.is_none()
        {
            prev.expires_at = Some(now.checked_add(retention).unwrap_or(now));
        }
        self.epochs.push(EpochKeys {
            epoch,
            secret,
            roster,
            installed: Vec::new(),
            revoked: BTreeSet::new(),
            expires_at: None,
        });
        retired
    }

    /// After a commit that removed members: in every older epoch, frames of a leaf the current
    /// roster no longer holds (with the same identity key) are refused from now on, and the
    /// older epochs expire no later than `retention` after `now`.
    pub(crate) fn revoke_removed(&mut self, now: Instant, retention: Duration) {
        let Some((current, older)) = self.epochs.split_last_mut() else {
            return;
        };
        let deadline = now.checked_add(retention).unwrap_or(now);
        for keys in older {
            for m in keys.roster.members() {
                let stays = current
                    .roster
                    .get(m.leaf)
                    .is_some_and(|n| n.signature_key == m.signature_key);
                if !stays && keys.revoked.insert(m.leaf) {
                    let layout = self.layout;
                    keys.installed.retain(|(stream, kid)| {
                        let gone = layout.decode(*kid).is_ok_and(|p| p.leaf == m.leaf);
                        if gone && let Some(r) = self.streams.get_mut(stream) {
                            r.remove_key(*kid);
                        }
                        !gone
                    });
                }
            }
            keys.expires_at = Some(keys.expires_at.map_or(deadline, |t| t.min(deadline)));
        }
    }

    fn drop_keys(&mut self, keys: EpochKeys) {
        for (stream, kid) in &keys.installed {
            if let Some(r) = self.streams.get_mut(stream) {
                r.remove_key(*kid);
            }
        }
        self.streams.retain(|_, r| r.key_count() > 0);
        // `keys.secret` (a BaseKey) zeroizes on drop.
    }

    /// Forgets a stream's receive state (its keys and replay windows).
    pub(crate) fn close_stream(&mut self, stream: u64) {
        self.streams.remove(&stream);
        for keys in &mut self.epochs {
            keys.installed.retain(|(s, _)| *s != stream);
        }
    }

    /// A copy holding the same epochs (fresh receive state; keys re-derived on demand).
    #[cfg(feature = "bench-internals")]
    pub(crate) fn duplicate(&self, replay_window: u64) -> Self {
        Self {
            suite: self.suite,
            layout: self.layout,
            config: ReceiverConfig { replay_window },
            streams: HashMap::new(),
            epochs: self
                .epochs
                .iter()
                .map(|e| EpochKeys {
                    epoch: e.epoch,
                    secret: BaseKey::new(e.secret.expose_secret()),
                    roster: Arc::clone(&e.roster),
                    installed: Vec::new(),
                    revoked: e.revoked.clone(),
                    expires_at: e.expires_at,
                })
                .collect(),
        }
    }

    /// Drops every epoch whose retention ended at or before `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<u64> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.epochs.len() {
            if self.epochs[i].expires_at.is_some_and(|t| t <= now) {
                let old = self.epochs.remove(i);
                gone.push(old.epoch);
                self.drop_keys(old);
            } else {
                i += 1;
            }
        }
        gone
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) -> Vec<u64> {
        let all: Vec<EpochKeys> = self.epochs.drain(..).collect();
        let epochs = all.iter().map(|e| e.epoch).collect();
        for e in all {
            self.drop_keys(e);
        }
        epochs
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.epochs.iter().filter_map(|e| e.expires_at).min()
    }

    pub(crate) fn epochs(&self) -> impl Iterator<Item = u64> + '_ {
        self.epochs.iter().map(|e| e.epoch)
    }

    /// The roster of a held epoch.
    pub(crate) fn roster(&self, epoch: u64) -> Option<&Roster> {
        self.epochs
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| &*e.roster)
    }

    pub(crate) fn current_epoch(&self) -> Option<u64> {
        self.epochs.last().map(|e| e.epoch)
    }

    pub(crate) fn receive_key_count(&self) -> usize {
        self.streams.values().map(Receiver::key_count).sum()
    }

    #[cfg(test)]
    pub(crate) fn secret(&self, epoch: u64) -> Option<&[u8]> {
        self.epochs
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.secret.expose_secret())
    }

    /// A sender for `leaf`'s stream `context` in `epoch`.
    pub(crate) fn sender(
        &self,
        epoch: u64,
        leaf: u32,
        context: u64,
    ) -> Result<Option<Sender>, Error> {
        let Some(keys) = self.epochs.iter().find(|e| e.epoch == epoch) else {
            return Ok(None);
        };
        let kid = self.layout.encode(context, leaf, epoch)?;
        let base = member_base_key(self.suite, &keys.secret, leaf)?;
        Ok(Some(Sender::new(self.suite, kid, &base)?))
    }

    /// Parses a frame's SFrame header and decodes its KID; changes nothing.
    pub(crate) fn peek(&self, frame: &[u8]) -> Result<(Header, KidParts), FrameError> {
        let header = match Header::decode(frame) {
            Ok((h, _)) => h,
            Err(_) => {
                return Err(FrameError {
                    reason: FrameDropReason::Malformed,
                    kid: None,
                    origin: None,
                });
            }
        };
        let parts = self.layout.decode(header.kid).map_err(|_| FrameError {
            reason: FrameDropReason::KidOutOfLayout,
            kid: Some(header.kid),
            origin: None,
        })?;
        Ok((header, parts))
    }

    /// Opens a frame received on `stream` in place, choosing the key by KID only.
    pub(crate) fn open<'a>(
        &mut self,
        stream: u64,
        metadata: &[u8],
        frame: &'a mut [u8],
    ) -> Result<OpenedFrame<'a>, FrameError> {
        let (header, parts) = self.peek(frame)?;
        let kid = header.kid;
        let mut origin = FrameOrigin {
            leaf: parts.leaf,
            context: parts.context,
            epoch: None,
            epoch_low: parts.epoch_low,
        };
        let layout = self.layout;
        let Some(keys) = self
            .epochs
            .iter_mut()
            .find(|e| layout.epoch_low(e.epoch) == parts.epoch_low)
        else {
            return Err(FrameError {
                reason: FrameDropReason::UnknownEpoch,
                kid: Some(kid),
                origin: Some(origin),
            });
        };
        origin.epoch = Some(keys.epoch);
        let fail = |reason| FrameError {
            reason,
            kid: Some(kid),
            origin: Some(origin),
        };
        if keys.revoked.contains(&parts.leaf) {
            return Err(fail(FrameDropReason::SenderRemoved));
        }
        let Some(member) = keys.roster.get(parts.leaf) else {
            return Err(fail(FrameDropReason::UnknownSender));
        };
        let identity = Arc::clone(&member.identity);
        let signs_media = member.signs_media;
        let config = self.config;
        let receiver = self
            .streams
            .entry(stream)
            .or_insert_with(|| Receiver::new(config));
        if !receiver.has_key(kid) {
            let base = member_base_key(self.suite, &keys.secret, parts.leaf)
                .map_err(|_| fail(FrameDropReason::Other))?;
            receiver
                .add_key(self.suite, kid, &base)
                .map_err(|_| fail(FrameDropReason::Other))?;
            keys.installed.push((stream, kid));
        }
        let epoch = keys.epoch;
        match receiver.open_in_place(metadata, frame) {
            Ok(opened) => Ok(OpenedFrame {
                sender: parts.leaf,
                identity,
                context: parts.context,
                epoch,
                counter: opened.header.ctr,
                plaintext: opened.plaintext,
                signs_media,
                auth: None,
            }),
            Err(e) => Err(fail(e.reason().into())),
        }
    }
}
