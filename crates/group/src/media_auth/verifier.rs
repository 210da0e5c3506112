//! The receiver side: pins streams to leaves, checks frames of signing leaves against their
//! verified manifests, and reports and blocks impersonation.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use blindcall_sframe::{Counter, Kid};

use super::stats::LatencyHistogram;
use super::wire::{ManifestBody, VerifiedManifest};
use super::{FrameHash, StreamRef};
use crate::kid::KidLayout;

/// Queued events beyond this are dropped (and counted).
const MAX_EVENTS: usize = 1024;
/// Leaves with their own counters; further leaves count only per stream.
const MAX_TRACKED_LEAVES: usize = 4096;
/// Epochs whose manifests and participant ids are kept; the oldest goes first.
const MAX_EPOCHS: usize = 4;
/// Epochs a stream remembers having carried frames of.
const STREAM_EPOCHS: usize = 4;

/// Receiver settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifierConfig {
    /// A frame of a signing leaf not covered by a manifest within this time raises
    /// `NoSignature` (default 1 s).
    pub verify_bound: Duration,
    /// Treat frames of leaves that do not sign media as `NoSignature` (a call parameter).
    pub require_signed: bool,
    /// Frames waiting for their manifest per stream (default 256); more is `NoSignature`.
    pub max_pending_per_stream: usize,
    /// How long received manifest hashes are kept for frames that arrive later (default 2 s).
    pub manifest_retention: Duration,
    /// Hashes kept per (epoch, leaf) (default 2048); the oldest manifests go first.
    pub max_hashes_per_leaf: usize,
    /// Offences of one reason on one stream closer than this form one burst, which raises
    /// one event (default 2 s).
    pub burst_gap: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            verify_bound: Duration::from_secs(1),
            require_signed: false,
            max_pending_per_stream: 256,
            manifest_retention: Duration::from_secs(2),
            max_hashes_per_leaf: 2048,
            burst_gap: Duration::from_secs(2),
        }
    }
}

/// Why a frame is taken for another member's impersonation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImpersonationReason {
    /// The claimed sender's signed manifest has another hash for this KID and counter.
    HashMismatch,
    /// No signed manifest covered the frame within the bound (or the sender does not sign and
    /// signatures are required).
    NoSignature,
    /// The claimed sender's signed manifests name another relay participant than the stream's.
    WrongParticipant,
    /// The stream is pinned to another leaf (refused before decryption).
    ForeignKidOnStream,
}

impl ImpersonationReason {
    fn index(self) -> usize {
        match self {
            Self::HashMismatch => 0,
            Self::NoSignature => 1,
            Self::WrongParticipant => 2,
            Self::ForeignKidOnStream => 3,
        }
    }
}

/// The verdict on an authenticated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameAuth {
    /// A verified manifest of the sender covers this frame on this stream.
    Verified,
    /// Waiting for the sender's manifest; the outcome comes later (event or counters).
    Pending,
    /// The sender does not sign media: show it as unauthenticated.
    Unsigned,
    /// Impersonation: drop the frame.
    Refused(ImpersonationReason),
}

/// Why a frame is refused before decryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamRefusal {
    /// The stream is pinned to another leaf.
    #[error("stream pinned to leaf {pinned} carries a frame of leaf {claimed}")]
    ForeignKid {
        /// Leaf the stream is pinned to.
        pinned: u32,
        /// Leaf the frame's KID names.
        claimed: u32,
    },
    /// The stream is blocked for this leaf after an impersonation was detected.
    #[error("stream blocked for leaf {leaf} ({reason:?})")]
    Blocked {
        /// Blocked (claimed) leaf.
        leaf: u32,
        /// Why it was blocked.
        reason: ImpersonationReason,
    },
}

/// Why a verified manifest was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestRefusal {
    /// An entry's KID names another leaf or epoch than the manifest's signer and epoch.
    #[error("manifest entry KID {kid:?} is not the signer's in its epoch")]
    ForeignKid {
        /// Offending KID.
        kid: Kid,
    },
}

/// What the verifier reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaAuthEvent {
    /// Frames on `stream` claim to come from `leaf` but do not; the stream is blocked for
    /// `leaf` (for `ForeignKidOnStream` it was already pinned to another leaf).
    Impersonation {
        /// Claimed (impersonated) leaf.
        leaf: u32,
        /// KID of the offending frame.
        kid: Kid,
        /// Stream that carried it.
        stream: StreamRef,
        /// What gave it away.
        reason: ImpersonationReason,
        /// Time from opening the first offending frame of the burst to detection.
        detected_after: Duration,
    },
    /// `leaf` does not sign media: its frames are unauthenticated within the group.
    SenderUnauthenticated {
        /// Leaf.
        leaf: u32,
        /// Epoch in which this was first seen.
        epoch: u64,
    },
    /// A `NoSignature` block ended: `leaf` signed a manifest naming this stream's participant.
    StreamUnblocked {
        /// Leaf.
        leaf: u32,
        /// Stream.
        stream: StreamRef,
    },
}

/// A frame that passed SFrame authentication, as `on_opened` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthenticatedFrame {
    /// Stream it arrived on.
    pub stream: StreamRef,
    /// Leaf named by its KID.
    pub leaf: u32,
    /// Whether that leaf advertises the signs-media capability.
    pub signs: bool,
    /// Epoch whose keys opened it.
    pub epoch: u64,
    /// Its KID.
    pub kid: Kid,
    /// Its counter.
    pub ctr: Counter,
    /// [`super::frame_hash`] of the frame as received (before decryption in place).
    pub hash: FrameHash,
}

/// Frame counters (per stream and per claimed leaf).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthCounters {
    /// Frames verified by a manifest.
    pub verified: u64,
    /// Frames that had to wait for their manifest.
    pub pending: u64,
    /// Frames of leaves that do not sign.
    pub unsigned: u64,
    /// Frames whose hash contradicts the claimed sender's manifest.
    pub forged: u64,
    /// Frames never covered in time (including those dropped when their stream was blocked).
    pub no_signature: u64,
    /// Frames on a stream of another participant than the claimed sender's.
    pub wrong_participant: u64,
    /// Frames refused before decryption: stream pinned to another leaf.
    pub foreign: u64,
    /// Frames refused because their stream is blocked for the claimed leaf.
    pub blocked: u64,
}

impl AuthCounters {
    fn add(&mut self, reason: ImpersonationReason, n: u64) {
        let c = match reason {
            ImpersonationReason::HashMismatch => &mut self.forged,
            ImpersonationReason::NoSignature => &mut self.no_signature,
            ImpersonationReason::WrongParticipant => &mut self.wrong_participant,
            ImpersonationReason::ForeignKidOnStream => &mut self.foreign,
        };
        *c += n;
    }
}

/// Verifier-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifierCounters {
    /// Verified manifests used.
    pub manifests: u64,
    /// Verified manifests refused (`ManifestRefusal`).
    pub manifests_refused: u64,
    /// Stored hashes evicted by the per-leaf cap before their retention ended.
    pub hashes_evicted: u64,
    /// Manifests naming another participant than the same leaf's earlier ones in the epoch.
    pub participant_changes: u64,
    /// Impersonation events raised.
    pub events: u64,
    /// Detections folded into an ongoing burst (no event).
    pub events_suppressed: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// `NoSignature` blocks lifted.
    pub unblocked: u64,
    /// Counter updates for leaves past the tracked-leaf cap.
    pub untracked_leaves: u64,
}

/// The state of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStatus {
    /// Relay participant id.
    pub participant: u64,
    /// Leaf it is pinned to.
    pub pinned: Option<u32>,
    /// Why it is blocked for its pinned leaf, if it is.
    pub blocked: Option<ImpersonationReason>,
    /// Frames waiting for their manifest.
    pub pending: usize,
}

struct PendingFrame {
    epoch: u64,
    kid: Kid,
    ctr: Counter,
    hash: FrameHash,
    opened_at: Instant,
}

#[derive(Clone, Copy)]
struct Block {
    reason: ImpersonationReason,
    /// Lifted by a manifest of the leaf naming this stream's participant (`NoSignature` only).
    provisional: bool,
    since: Instant,
}

struct Stream {
    participant: u64,
    pinned: Option<u32>,
    block: Option<Block>,
    pending: VecDeque<PendingFrame>,
    epochs: Vec<u64>,
    /// KID of the last authenticated frame of the pinned leaf.
    last_kid: Option<Kid>,
    last_offense: [Option<Instant>; 4],
    counters: AuthCounters,
}

impl Stream {
    fn new(participant: u64) -> Self {
        Self {
            participant,
            pinned: None,
            block: None,
            pending: VecDeque::new(),
            epochs: Vec::new(),
            last_kid: None,
            last_offense: [None; 4],
            counters: AuthCounters::default(),
        }
    }

    fn note_epoch(&mut self, epoch: u64) {
        if !self.epochs.contains(&epoch) {
            if self.epochs.len() >= STREAM_EPOCHS {
                self.epochs.remove(0);
            }
            self.epochs.push(epoch);
        }
    }

    fn saw(&self, epoch: u64) -> bool {
        self.epochs.contains(&epoch)
    }
}

struct StoredRange {
    kid: Kid,
    first: Counter,
    hashes: Vec<FrameHash>,
    participant: u64,
    received: Instant,
}

#[derive(Default)]
struct LeafEpoch {
    participant: Option<u64>,
    ranges: VecDeque<StoredRange>,
    hashes: usize,
    unsigned_reported: bool,
}

impl LeafEpoch {
    /// The stored hash for (`kid`, `ctr`) and the participant its manifest named.
    fn lookup(&self, kid: Kid, ctr: Counter) -> Option<(FrameHash, u64)> {
        self.ranges.iter().rev().find_map(|r| {
            if r.kid != kid {
                return None;
            }
            let i = usize::try_from(ctr.0.checked_sub(r.first.0)?).ok()?;
            r.hashes.get(i).map(|h| (*h, r.participant))
        })
    }
}

/// A detection to apply to one stream.
struct Detection {
    now: Instant,
    leaf: u32,
    kid: Kid,
    reason: ImpersonationReason,
    /// When the first offending frame was opened.
    since: Instant,
    /// Offending frames besides pending ones dropped by a block.
    frames: u64,
    /// Block the stream (`Some(provisional)`) or not.
    block: Option<bool>,
}

#[derive(Default)]
struct Outputs {
    events: VecDeque<MediaAuthEvent>,
    leaf_counters: HashMap<u32, AuthCounters>,
    counters: VerifierCounters,
    detection: LatencyHistogram,
    signature_wait: LatencyHistogram,
}

impl Outputs {
    fn push(&mut self, e: MediaAuthEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.counters.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }

    fn count(&mut self, s: &mut Stream, leaf: u32, f: impl Fn(&mut AuthCounters)) {
        f(&mut s.counters);
        if self.leaf_counters.len() >= MAX_TRACKED_LEAVES && !self.leaf_counters.contains_key(&leaf)
        {
            self.counters.untracked_leaves += 1;
            return;
        }
        f(self.leaf_counters.entry(leaf).or_default());
    }

    fn detect(&mut self, cfg: &VerifierConfig, id: u64, s: &mut Stream, d: Detection) {
        let mut frames = d.frames;
        if let Some(provisional) = d.block {
            frames += u64::try_from(s.pending.len()).unwrap_or(u64::MAX);
            s.pending.clear();
            s.block = Some(Block {
                reason: d.reason,
                provisional,
                since: d.since,
            });
        }
        self.count(s, d.leaf, |c| c.add(d.reason, frames));
        let slot = &mut s.last_offense[d.reason.index()];
        let in_burst = slot.is_some_and(|l| d.now.saturating_duration_since(l) < cfg.burst_gap);
        *slot = Some(d.now);
        if in_burst {
            self.counters.events_suppressed += 1;
            return;
        }
        let detected_after = d.now.saturating_duration_since(d.since);
        self.detection.record(detected_after);
        self.counters.events += 1;
        self.push(MediaAuthEvent::Impersonation {
            leaf: d.leaf,
            kid: d.kid,
            stream: StreamRef {
                id,
                participant: s.participant,
            },
            reason: d.reason,
            detected_after,
        });
    }

    /// Counts a frame refused on a blocked stream and keeps the block's burst open.
    fn refuse_blocked(&mut self, s: &mut Stream, leaf: u32, now: Instant, b: Block) {
        self.count(s, leaf, |c| c.blocked += 1);
        s.last_offense[b.reason.index()] = Some(now);
    }
}

/// One member's media-authentication state for all incoming streams (sans-IO).
///
/// Per frame: [`MediaVerifier::check_stream`] before decryption, then after SFrame
/// authentication [`MediaVerifier::on_opened`]. Per peer manifest (signature verified):
/// [`MediaVerifier::on_manifest`]. Timers: [`MediaVerifier::poll_timeout`] /
/// [`MediaVerifier::handle_timeout`]. Output: [`MediaVerifier::poll_event`]. A `now` older
/// than the last one seen is treated as the last one.
pub struct MediaVerifier {
    layout: KidLayout,
    config: VerifierConfig,
    streams: HashMap<u64, Stream>,
    leaves: BTreeMap<(u64, u32), LeafEpoch>,
    out: Outputs,
    now: Option<Instant>,
}

impl std::fmt::Debug for MediaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaVerifier")
            .field("streams", &self.streams.len())
            .field("leaf_epochs", &self.leaves.len())
            .field("counters", &self.out.counters)
            .finish_non_exhaustive()
    }
}

/// `t + d`, or `None` (never) if that is not representable.
fn deadline(t: Instant, d: Duration) -> Option<Instant> {
    t.checked_add(d)
}

/// The (epoch, leaf) record, created if absent; keeps at most `MAX_EPOCHS` epochs.
fn leaf_epoch(
    leaves: &mut BTreeMap<(u64, u32), LeafEpoch>,
    epoch: u64,
    leaf: u32,
) -> &mut LeafEpoch {
    if !leaves.contains_key(&(epoch, leaf)) {
        let epochs: BTreeSet<u64> = leaves.keys().map(|(e, _)| *e).collect();
        if !epochs.contains(&epoch)
            && epochs.len() >= MAX_EPOCHS
            && let Some(oldest) = epochs.first().copied()
        {
            leaves.retain(|(e, _), _| *e != oldest);
        }
    }
    leaves.entry((epoch, leaf)).or_default()
}

impl MediaVerifier {
    /// A verifier for a call with KID layout `layout`.
    pub fn new(layout: KidLayout, config: VerifierConfig) -> Self {
        Self {
            layout,
            config,
            streams: HashMap::new(),
            leaves: BTreeMap::new(),
            out: Outputs::default(),
            now: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |last| last.max(now));
        self.now = Some(now);
        now
    }

    /// Before decrypting a frame whose KID names `leaf`: refuses it if `stream` is pinned to
    /// another leaf (counted and reported as `ForeignKidOnStream`) or blocked for `leaf`.
    pub fn check_stream(
        &mut self,
        now: Instant,
        stream: StreamRef,
        leaf: u32,
        kid: Kid,
    ) -> Result<(), StreamRefusal> {
        let now = self.clamp(now);
        let Some(s) = self.streams.get_mut(&stream.id) else {
            return Ok(());
        };
        match (s.pinned, s.block) {
            (Some(pinned), _) if pinned != leaf => {
                let d = Detection {
                    now,
                    leaf,
                    kid,
                    reason: ImpersonationReason::ForeignKidOnStream,
                    since: now,
                    frames: 1,
                    block: None,
                };
                self.out.detect(&self.config, stream.id, s, d);
                Err(StreamRefusal::ForeignKid {
                    pinned,
                    claimed: leaf,
                })
            }
            (_, Some(b)) => {
                self.out.refuse_blocked(s, leaf, now, b);
                Err(StreamRefusal::Blocked {
                    leaf,
                    reason: b.reason,
                })
            }
            _ => Ok(()),
        }
    }

    /// After a frame authenticated: pins its stream, and checks it against the claimed
    /// sender's manifests (or queues it until one arrives). A stream's participant is the one
    /// given with its first frame (a stream id never moves to another participant).
    pub fn on_opened(&mut self, now: Instant, f: &AuthenticatedFrame) -> FrameAuth {
        let now = self.clamp(now);
        let cfg = &self.config;
        let out = &mut self.out;
        let id = f.stream.id;
        let s = self
            .streams
            .entry(id)
            .or_insert_with(|| Stream::new(f.stream.participant));
        let detection = |reason, block| Detection {
            now,
            leaf: f.leaf,
            kid: f.kid,
            reason,
            since: now,
            frames: 1,
            block,
        };
        if *s.pinned.get_or_insert(f.leaf) != f.leaf {
            let reason = ImpersonationReason::ForeignKidOnStream;
            out.detect(cfg, id, s, detection(reason, None));
            return FrameAuth::Refused(reason);
        }
        if let Some(b) = s.block {
            out.refuse_blocked(s, f.leaf, now, b);
            return FrameAuth::Refused(b.reason);
        }
        s.note_epoch(f.epoch);
        s.last_kid = Some(f.kid);
        if !f.signs {
            out.count(s, f.leaf, |c| c.unsigned += 1);
            let le = leaf_epoch(&mut self.leaves, f.epoch, f.leaf);
            if !le.unsigned_reported {
                le.unsigned_reported = true;
                out.push(MediaAuthEvent::SenderUnauthenticated {
                    leaf: f.leaf,
                    epoch: f.epoch,
                });
            }
            if cfg.require_signed {
                let reason = ImpersonationReason::NoSignature;
                out.detect(cfg, id, s, detection(reason, Some(false)));
                return FrameAuth::Refused(reason);
            }
            return FrameAuth::Unsigned;
        }
        let le = self.leaves.get(&(f.epoch, f.leaf));
        let verdict = match le.and_then(|le| le.lookup(f.kid, f.ctr)) {
            Some((hash, _)) if hash != f.hash => Some(ImpersonationReason::HashMismatch),
            Some((_, participant)) if participant != s.participant => {
                Some(ImpersonationReason::WrongParticipant)
            }
            Some(_) => {
                out.count(s, f.leaf, |c| c.verified += 1);
                out.signature_wait.record(Duration::ZERO);
                return FrameAuth::Verified;
            }
            None if le
                .and_then(|le| le.participant)
                .is_some_and(|p| p != s.participant) =>
            {
                Some(ImpersonationReason::WrongParticipant)
            }
            None => None,
        };
        if let Some(reason) = verdict {
            out.detect(cfg, id, s, detection(reason, Some(false)));
            return FrameAuth::Refused(reason);
        }
        if s.pending.len() >= cfg.max_pending_per_stream {
            let reason = ImpersonationReason::NoSignature;
            let since = s.pending.front().map_or(now, |p| p.opened_at);
            let d = Detection {
                since,
                ..detection(reason, Some(true))
            };
            out.detect(cfg, id, s, d);
            return FrameAuth::Refused(reason);
        }
        out.count(s, f.leaf, |c| c.pending += 1);
        s.pending.push_back(PendingFrame {
            epoch: f.epoch,
            kid: f.kid,
            ctr: f.ctr,
            hash: f.hash,
            opened_at: now,
        });
        FrameAuth::Pending
    }

    /// A manifest whose signature the caller verified: stores its hashes, resolves pending
    /// frames of its signer, and checks the participant of every stream pinned to the signer.
    /// Returns the number of pending frames it verified.
    pub fn on_manifest(
        &mut self,
        now: Instant,
        manifest: &VerifiedManifest,
    ) -> Result<usize, ManifestRefusal> {
        let now = self.clamp(now);
        let m = manifest.body();
        let epoch_low = self.layout.epoch_low(m.epoch);
        if let Some(e) = m.entries.iter().find(|e| {
            !self
                .layout
                .decode(e.kid)
                .is_ok_and(|p| p.leaf == m.leaf && p.epoch_low == epoch_low)
        }) {
            self.out.counters.manifests_refused += 1;
            return Err(ManifestRefusal::ForeignKid { kid: e.kid });
        }
        self.out.counters.manifests += 1;
        self.store(now, m);

        let cfg = &self.config;
        let out = &mut self.out;
        let mut verified_total = 0;
        for (&id, s) in self
            .streams
            .iter_mut()
            .filter(|(_, s)| s.pinned == Some(m.leaf))
        {
            let stream = StreamRef {
                id,
                participant: s.participant,
            };
            let kid = s
                .last_kid
                .or_else(|| m.entries.first().map(|e| e.kid))
                .unwrap_or(Kid(0));
            let wrong = |since, block| Detection {
                now,
                leaf: m.leaf,
                kid,
                reason: ImpersonationReason::WrongParticipant,
                since,
                frames: 0,
                block: Some(block),
            };
            if let Some(b) = s.block {
                if !b.provisional {
                    continue;
                }
                if s.participant == m.participant {
                    s.block = None;
                    out.counters.unblocked += 1;
                    out.push(MediaAuthEvent::StreamUnblocked {
                        leaf: m.leaf,
                        stream,
                    });
                } else if s.saw(m.epoch) {
                    out.detect(cfg, id, s, wrong(b.since, false));
                }
                continue;
            }
            if s.participant != m.participant {
                if s.saw(m.epoch) {
                    let since = s.pending.front().map_or(now, |p| p.opened_at);
                    out.detect(cfg, id, s, wrong(since, false));
                }
                continue;
            }
            let (verified, mismatch) = match_pending(s, m, now, &mut out.signature_wait);
            if verified > 0 {
                let n = u64::try_from(verified).unwrap_or(u64::MAX);
                out.count(s, m.leaf, |c| c.verified += n);
                verified_total += verified;
            }
            if let Some((kid, since)) = mismatch {
                let d = Detection {
                    now,
                    leaf: m.leaf,
                    kid,
                    reason: ImpersonationReason::HashMismatch,
                    since,
                    frames: 1,
                    block: Some(false),
                };
                out.detect(cfg, id, s, d);
            }
        }
        Ok(verified_total)
    }

    fn store(&mut self, now: Instant, m: &ManifestBody) {
        let cap = self.config.max_hashes_per_leaf;
        let le = leaf_epoch(&mut self.leaves, m.epoch, m.leaf);
        if le.participant.is_some_and(|p| p != m.participant) {
            self.out.counters.participant_changes += 1;
        }
        le.participant = Some(m.participant);
        for e in &m.entries {
            le.hashes += e.hashes.len();
            le.ranges.push_back(StoredRange {
                kid: e.kid,
                first: e.first_ctr,
                hashes: e.hashes.clone(),
                participant: m.participant,
                received: now,
            });
        }
        while le.hashes > cap {
            let Some(r) = le.ranges.pop_front() else {
                break;
            };
            le.hashes = le.hashes.saturating_sub(r.hashes.len());
            self.out.counters.hashes_evicted += u64::try_from(r.hashes.len()).unwrap_or(u64::MAX);
        }
    }

    /// Raises `NoSignature` for streams with a frame pending past the bound, and forgets
    /// manifests past their retention.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        let cfg = &self.config;
        for (&id, s) in &mut self.streams {
            let (Some(leaf), Some(front)) = (s.pinned, s.pending.front()) else {
                continue;
            };
            if deadline(front.opened_at, cfg.verify_bound).is_none_or(|t| t > now) {
                continue;
            }
            let d = Detection {
                now,
                leaf,
                kid: front.kid,
                reason: ImpersonationReason::NoSignature,
                since: front.opened_at,
                frames: 0,
                block: Some(true),
            };
            self.out.detect(cfg, id, s, d);
        }
        for le in self.leaves.values_mut() {
            while le.ranges.front().is_some_and(|r| {
                deadline(r.received, cfg.manifest_retention).is_some_and(|t| t <= now)
            }) {
                if let Some(r) = le.ranges.pop_front() {
                    le.hashes = le.hashes.saturating_sub(r.hashes.len());
                }
            }
        }
    }

    /// The next time [`MediaVerifier::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self
            .streams
            .values()
            .filter_map(|s| s.pending.front())
            .filter_map(|p| deadline(p.opened_at, self.config.verify_bound));
        let manifests = self
            .leaves
            .values()
            .filter_map(|le| le.ranges.front())
            .filter_map(|r| deadline(r.received, self.config.manifest_retention));
        pending.chain(manifests).min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MediaAuthEvent> {
        self.out.events.pop_front()
    }

    /// Forgets `epoch`'s manifests and participant ids (its keys are gone).
    pub fn retire_epoch(&mut self, epoch: u64) {
        self.leaves.retain(|(e, _), _| *e != epoch);
    }

    /// Forgets a stream (its pin, block and pending frames); returns its counters.
    pub fn close_stream(&mut self, id: u64) -> Option<AuthCounters> {
        self.streams.remove(&id).map(|s| s.counters)
    }

    /// A stream's state.
    pub fn stream_status(&self, id: u64) -> Option<StreamStatus> {
        self.streams.get(&id).map(|s| StreamStatus {
            participant: s.participant,
            pinned: s.pinned,
            blocked: s.block.map(|b| b.reason),
            pending: s.pending.len(),
        })
    }

    /// A stream's counters.
    pub fn stream_counters(&self, id: u64) -> Option<AuthCounters> {
        self.streams.get(&id).map(|s| s.counters)
    }

    /// Counters of frames claiming `leaf`, over all streams.
    pub fn leaf_counters(&self, leaf: u32) -> Option<AuthCounters> {
        self.out.leaf_counters.get(&leaf).copied()
    }

    /// Verifier-wide counters.
    pub fn counters(&self) -> VerifierCounters {
        self.out.counters
    }

    /// Detection latencies (time from the first offending frame to its event).
    pub fn detection_latency(&self) -> &LatencyHistogram {
        &self.out.detection
    }

    /// Signature waits: time from opening a frame to its covering manifest (0 if the
    /// manifest came first), over all verified frames.
    pub fn signature_wait(&self) -> &LatencyHistogram {
        &self.out.signature_wait
    }

    /// Frames waiting for a manifest, over all streams.
    pub fn pending_frames(&self) -> usize {
        self.streams.values().map(|s| s.pending.len()).sum()
    }

    /// Hashes kept from received manifests, over all leaves and epochs.
    pub fn stored_hashes(&self) -> usize {
        self.leaves.values().map(|le| le.hashes).sum()
    }
}

/// Resolves `s`'s pending frames of `m`'s epoch that `m` covers: returns how many verified
/// and the first one whose hash differs (its KID and open time).
fn match_pending(
    s: &mut Stream,
    m: &ManifestBody,
    now: Instant,
    waits: &mut LatencyHistogram,
) -> (usize, Option<(Kid, Instant)>) {
    let mut verified = 0;
    let mut mismatch = None;
    s.pending.retain(|p| {
        if mismatch.is_some() || p.epoch != m.epoch {
            return true;
        }
        let covering = m
            .entries
            .iter()
            .filter(|e| e.kid == p.kid)
            .find_map(|e| e.hash_for(p.ctr));
        match covering {
            Some(h) if *h == p.hash => {
                verified += 1;
                waits.record(now.saturating_duration_since(p.opened_at));
                false
            }
            Some(_) => {
                mismatch = Some((p.kid, p.opened_at));
                false
            }
            None => true,
        }
    });
    (verified, mismatch)
}
