//! Per-epoch SFrame key sets (RFC 9605 §5.2): one receive ring for every member's streams of
//! every live epoch, retention of old epochs, and zeroization on removal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blindcall_sframe::{
    BaseKey, CipherSuite, Counter, Header, Kid, Receiver, ReceiverConfig, Sender,
    mls::sender_base_key,
};

use crate::error::{Error, FrameDropReason, FrameError, FrameOrigin};
use crate::event::RetireReason;
use crate::identity::Roster;
use crate::kid::KidLayout;

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
}

/// Derives a member's SFrame sender base key for one epoch (RFC 9605 §5.2).
pub fn member_base_key(
    suite: CipherSuite,
    epoch_secret: &BaseKey,
    leaf: u32,
) -> Result<BaseKey, Error> {
    Ok(sender_base_key(suite, epoch_secret, leaf)?)
}

struct EpochKeys {
    epoch: u64,
    secret: BaseKey,
    roster: Arc<Roster>,
    installed: Vec<Kid>,
    expires_at: Option<Instant>,
}

pub(crate) struct KeyRing {
    suite: CipherSuite,
    layout: KidLayout,
    receiver: Receiver,
    /// Ascending by epoch; the last one is the current epoch and never expires.
    epochs: Vec<EpochKeys>,
}

impl KeyRing {
    pub(crate) fn new(suite: CipherSuite, layout: KidLayout, replay_window: u64) -> Self {
        Self {
            suite,
            layout,
            receiver: Receiver::new(ReceiverConfig { replay_window }),
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
            expires_at: None,
        });
        retired
    }

    fn drop_keys(&mut self, keys: EpochKeys) {
        for kid in &keys.installed {
            self.receiver.remove_key(*kid);
        }
        // `keys.secret` (a BaseKey) zeroizes on drop.
    }

    /// A copy holding the same epochs (fresh receive state; keys re-derived on demand).
    #[cfg(feature = "bench-internals")]
    pub(crate) fn duplicate(&self, replay_window: u64) -> Self {
        Self {
            suite: self.suite,
            layout: self.layout,
            receiver: Receiver::new(ReceiverConfig { replay_window }),
            epochs: self
                .epochs
                .iter()
                .map(|e| EpochKeys {
                    epoch: e.epoch,
                    secret: BaseKey::new(e.secret.expose_secret()),
                    roster: Arc::clone(&e.roster),
                    installed: Vec::new(),
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

    pub(crate) fn current_epoch(&self) -> Option<u64> {
        self.epochs.last().map(|e| e.epoch)
    }

    pub(crate) fn receive_key_count(&self) -> usize {
        self.receiver.key_count()
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

    /// Opens a frame in place, choosing the key by KID only.
    pub(crate) fn open<'a>(
        &mut self,
        metadata: &[u8],
        frame: &'a mut [u8],
    ) -> Result<OpenedFrame<'a>, FrameError> {
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
        let kid = header.kid;
        let parts = self.layout.decode(kid).map_err(|_| FrameError {
            reason: FrameDropReason::KidOutOfLayout,
            kid: Some(kid),
            origin: None,
        })?;
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
        let Some(member) = keys.roster.get(parts.leaf) else {
            return Err(FrameError {
                reason: FrameDropReason::UnknownSender,
                kid: Some(kid),
                origin: Some(origin),
            });
        };
        let identity = Arc::clone(&member.identity);
        if !self.receiver.has_key(kid) {
            let fail = FrameError {
                reason: FrameDropReason::Other,
                kid: Some(kid),
                origin: Some(origin),
            };
            let base = member_base_key(self.suite, &keys.secret, parts.leaf).map_err(|_| fail)?;
            self.receiver
                .add_key(self.suite, kid, &base)
                .map_err(|_| fail)?;
            keys.installed.push(kid);
        }
        let epoch = keys.epoch;
        match self.receiver.open_in_place(metadata, frame) {
            Ok(opened) => Ok(OpenedFrame {
                sender: parts.leaf,
                identity,
                context: parts.context,
                epoch,
                counter: opened.header.ctr,
                plaintext: opened.plaintext,
            }),
            Err(e) => Err(FrameError {
                reason: e.reason().into(),
                kid: Some(kid),
                origin: Some(origin),
            }),
        }
    }
}
