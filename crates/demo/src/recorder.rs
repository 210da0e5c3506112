//! The recorder for end-to-end checks: what every participant sent, opened and saw (the relay's
//! own view of the control channel is recorded by `blindcall_relay::ControlRecorder`). Each
//! participant's call feeds it through the SDK's observer hook ([`CallLog::observer`]); the
//! demo records its own video selections. For tests, demos and audits.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub use blindcall_client::observer::MembershipChange;
use blindcall_client::observer::{
    CallObserver, CommitSent, EpochEntered, FrameOpened, FrameSent, MembershipChanged,
};
use blindcall_client::{MediaKind, VideoSelection};
use blindcall_media::source::verify;

/// A frame a participant sealed and sent.
#[derive(Debug, Clone)]
pub struct SentFrame {
    /// Sender's identity.
    pub sender: Arc<str>,
    /// Audio or video.
    pub kind: MediaKind,
    /// Per-stream sequence number (the synthetic frame's own, or the publish count).
    pub seq: u64,
    /// The MLS epoch whose key sealed it.
    pub epoch: u64,
    /// When it was sealed.
    pub at: Instant,
    /// The plaintext, when the log keeps plaintexts.
    pub plaintext: Option<Vec<u8>>,
}

/// A frame a participant opened.
#[derive(Debug, Clone)]
pub struct OpenedRecord {
    /// Receiver's identity.
    pub receiver: Arc<str>,
    /// Sender's identity, as authenticated by its SFrame key.
    pub sender: Arc<str>,
    /// Audio or video (from the SFrame context).
    pub kind: MediaKind,
    /// Sequence number inside the frame (synthetic frames only; else the SFrame counter).
    pub seq: u64,
    /// Epoch whose key opened it.
    pub epoch: u64,
    /// When it was opened.
    pub at: Instant,
}

/// A participant entered an epoch (merged a commit, or joined).
#[derive(Debug, Clone)]
pub struct EpochRecord {
    /// Who.
    pub identity: Arc<str>,
    /// The epoch.
    pub epoch: u64,
    /// The security code shown for it.
    pub code: String,
    /// When.
    pub at: Instant,
}

/// A commit a participant sent to the relay.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    /// Committer.
    pub identity: Arc<str>,
    /// Epoch the commit was made in.
    pub from_epoch: u64,
    /// What it did (`add`, `remove`, `update`, `proposals`).
    pub kind: &'static str,
    /// When it was sent.
    pub sent_at: Instant,
}

/// A participant's membership changed.
#[derive(Debug, Clone)]
pub struct MembershipRecord {
    /// Who.
    pub identity: Arc<str>,
    /// What happened.
    pub change: MembershipChange,
    /// The epoch it happened in (for `Joined`, the first epoch it holds).
    pub epoch: u64,
    /// When.
    pub at: Instant,
}

/// A participant chose whose video to receive.
#[derive(Debug, Clone)]
pub struct VideoRecord {
    /// Who chose.
    pub identity: Arc<str>,
    /// The identities whose video it receives (`None`: everyone's).
    pub only: Option<Vec<Arc<str>>>,
    /// When.
    pub at: Instant,
}

/// Everything recorded.
#[derive(Debug, Default)]
pub struct CallLogData {
    /// Frames sent.
    pub sent: Vec<SentFrame>,
    /// Frames opened.
    pub opened: Vec<OpenedRecord>,
    /// Epoch entries.
    pub epochs: Vec<EpochRecord>,
    /// Commits sent.
    pub commits: Vec<CommitRecord>,
    /// Membership changes.
    pub membership: Vec<MembershipRecord>,
    /// Video selections.
    pub video: Vec<VideoRecord>,
    /// Frames that authenticated but whose synthetic content failed its integrity check, per
    /// receiver (never delivered as opened).
    pub integrity_failures: BTreeMap<Arc<str>, u64>,
    /// Highest sequence number sent per (sender, kind slot): kept as records arrive so that
    /// progress checks during a call do not rescan every record under the lock.
    last_sent: HashMap<(Arc<str>, u8), u64>,
    /// Highest sequence number opened per receiver, sender and kind slot.
    last_opened: HashMap<Arc<str>, PerSender>,
}

/// Highest sequence number opened per sender, audio and video.
type PerSender = HashMap<Arc<str>, [Option<u64>; 2]>;

/// 0 for audio, 1 for video.
pub(crate) fn kind_slot(k: MediaKind) -> u8 {
    match k {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

impl CallLogData {
    /// Records a sent frame.
    pub fn push_sent(&mut self, f: SentFrame) {
        let e = self
            .last_sent
            .entry((Arc::clone(&f.sender), kind_slot(f.kind)))
            .or_insert(f.seq);
        *e = (*e).max(f.seq);
        self.sent.push(f);
    }

    /// Records an opened frame.
    pub fn push_opened(&mut self, o: OpenedRecord) {
        let slots = self
            .last_opened
            .entry(Arc::clone(&o.receiver))
            .or_default()
            .entry(Arc::clone(&o.sender))
            .or_default();
        let e = &mut slots[usize::from(kind_slot(o.kind))];
        *e = Some(e.map_or(o.seq, |s| s.max(o.seq)));
        self.opened.push(o);
    }

    /// The highest sequence number `sender` sent on `kind` (0 audio, 1 video).
    pub fn last_sent(&self) -> impl Iterator<Item = (&str, u8, u64)> {
        self.last_sent.iter().map(|((s, k), q)| (&**s, *k, *q))
    }

    /// The highest sequence number `receiver` opened from `sender` on `kind` (0 audio,
    /// 1 video), if any.
    pub fn last_opened(&self, receiver: &str, sender: &str, kind: u8) -> Option<u64> {
        self.last_opened
            .get(receiver)?
            .get(sender)?
            .get(usize::from(kind))
            .copied()
            .flatten()
    }

    /// Whether `receiver` ever chose a video selection that left `sender` out.
    pub fn video_excluded(&self, receiver: &str, sender: &str) -> bool {
        self.video.iter().any(|v| {
            &*v.identity == receiver
                && v.only
                    .as_ref()
                    .is_some_and(|only| !only.iter().any(|s| &**s == sender))
        })
    }
}

/// A shared recorder; clone it into every participant's options.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    inner: Arc<Mutex<CallLogData>>,
    keep_plaintext: bool,
    closed: Arc<AtomicBool>,
}

impl CallLog {
    /// A recorder; `keep_plaintext` also keeps every sent plaintext (for the plaintext check).
    pub fn new(keep_plaintext: bool) -> Self {
        Self {
            inner: Arc::default(),
            keep_plaintext,
            closed: Arc::default(),
        }
    }

    /// Stops recording (e.g. when a scripted call's measured part is over).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether sent plaintexts are kept.
    pub fn keeps_plaintext(&self) -> bool {
        self.keep_plaintext
    }

    /// Locks the recorded data (a poisoned lock still yields the data).
    pub fn lock(&self) -> MutexGuard<'_, CallLogData> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with(&self, f: impl FnOnce(&mut CallLogData)) {
        if !self.closed.load(Ordering::Relaxed) {
            f(&mut self.lock());
        }
    }

    /// The observer that records what `identity`'s call does (pass it in
    /// `JoinOptions::observer`).
    pub fn observer(&self, identity: &str) -> Arc<dyn CallObserver> {
        Arc::new(Participant {
            identity: Arc::from(identity),
            log: self.clone(),
        })
    }

    /// Records that `identity` chose `selection` (the SDK's choice is the application's own).
    pub fn record_video(&self, identity: &str, selection: &VideoSelection, at: Instant) {
        let only = match selection {
            VideoSelection::All => None,
            VideoSelection::Only(names) => {
                Some(names.iter().map(|n| Arc::<str>::from(n.as_str())).collect())
            }
        };
        let identity = Arc::from(identity);
        self.with(|d| d.video.push(VideoRecord { identity, only, at }));
    }
}

/// One participant's view into the shared [`CallLog`].
struct Participant {
    identity: Arc<str>,
    log: CallLog,
}

impl CallObserver for Participant {
    fn frame_sent(&self, f: &FrameSent<'_>) {
        // Synthetic frames carry their own sequence number; anything else counts by counter.
        let seq = verify(f.plaintext).map_or(f.counter, |i| i.seq);
        let keep = self.log.keeps_plaintext();
        self.log.with(|d| {
            d.push_sent(SentFrame {
                sender: Arc::clone(&self.identity),
                kind: f.kind,
                seq,
                epoch: f.epoch,
                at: f.at,
                plaintext: keep.then(|| f.plaintext.to_vec()),
            })
        });
    }

    fn frame_opened(&self, f: &FrameOpened<'_>) {
        match verify(f.plaintext) {
            Ok(info) if info.kind == f.kind => self.log.with(|d| {
                d.push_opened(OpenedRecord {
                    receiver: Arc::clone(&self.identity),
                    sender: Arc::clone(f.sender),
                    kind: f.kind,
                    seq: info.seq,
                    epoch: f.epoch,
                    at: f.at,
                })
            }),
            _ => self.log.with(|d| {
                *d.integrity_failures
                    .entry(Arc::clone(&self.identity))
                    .or_insert(0) += 1;
            }),
        }
    }

    fn epoch_entered(&self, e: &EpochEntered<'_>) {
        self.log.with(|d| {
            d.epochs.push(EpochRecord {
                identity: Arc::clone(&self.identity),
                epoch: e.epoch,
                code: e.code.to_string(),
                at: e.at,
            })
        });
    }

    fn commit_sent(&self, c: &CommitSent) {
        self.log.with(|d| {
            d.commits.push(CommitRecord {
                identity: Arc::clone(&self.identity),
                from_epoch: c.from_epoch,
                kind: c.purpose.name(),
                sent_at: c.at,
            })
        });
    }

    fn membership_changed(&self, m: &MembershipChanged) {
        self.log.with(|d| {
            d.membership.push(MembershipRecord {
                identity: Arc::clone(&self.identity),
                change: m.change,
                epoch: m.epoch,
                at: m.at,
            })
        });
    }
}
