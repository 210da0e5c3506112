//! One simulated participant: its [`CallCore`], the control link it is connected by, what its
//! application does (answers join requests as the scenario says, publishes media, keeps
//! keyframes coming), and an observer recording what happens inside its call.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use blindcall_client::observer::{
    CallObserver, CommitSent, EpochEntered, FrameOpened, FrameSent, MembershipChange,
    MembershipChanged,
};
use blindcall_client::{CallCore, MediaKind};
use blindcall_group::{IdentityKey, MlsSuite, SecurityCode};
use blindcall_proto::FrameDecoder;

use openmls::prelude::SignatureScheme;
use openmls_basic_credential::SignatureKeyPair;

use crate::net::Link;
use crate::relay::SetupError;
use crate::rng::Rng;
use crate::scenario::Participant as Plan;

/// Something the observer saw, in the order the call did it.
#[derive(Debug, Clone)]
pub enum Observed {
    /// A frame was sealed.
    Sent {
        /// Audio or video.
        kind: MediaKind,
        /// Its epoch.
        epoch: u64,
        /// Its counter.
        counter: u64,
        /// The application's frame tag (sender, sequence), if it carries one.
        tag: Option<FrameTag>,
    },
    /// A frame was opened.
    Opened {
        /// The relay's id of the stream it came on.
        participant: u64,
        /// Who its key names.
        sender: Arc<str>,
        /// Audio or video.
        kind: MediaKind,
        /// Its epoch.
        epoch: u64,
        /// Its counter.
        counter: u64,
        /// The tag, if the plaintext carries a valid one.
        tag: Option<FrameTag>,
        /// Whether the plaintext is exactly the frame its tag names.
        intact: bool,
    },
    /// An epoch was entered.
    Epoch {
        /// Epoch.
        epoch: u64,
        /// Its security code (a digest of the epoch authenticator).
        code: SecurityCode,
    },
    /// An own commit was sent.
    Commit {
        /// The epoch it was made in.
        from_epoch: u64,
    },
    /// Membership changed.
    Membership {
        /// What.
        change: MembershipChange,
        /// In which epoch.
        epoch: u64,
    },
}

/// Identifies one published frame: (participant index, sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameTag {
    /// The publishing participant's index.
    pub from: u32,
    /// Its sequence number (over all its frames).
    pub seq: u64,
}

const MAGIC: &[u8; 4] = b"SIMF";
const TAG_LEN: usize = 4 + 4 + 8;

/// The plaintext of frame `tag`: the tag, then `len` filler bytes that depend on it.
pub fn frame_bytes(tag: FrameTag, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(TAG_LEN + len);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&tag.from.to_be_bytes());
    v.extend_from_slice(&tag.seq.to_be_bytes());
    v.extend((0..len).map(|i| filler(tag, i)));
    v
}

fn filler(tag: FrameTag, i: usize) -> u8 {
    (tag.seq as u8)
        .wrapping_mul(31)
        .wrapping_add(tag.from as u8)
        .wrapping_add(i as u8)
}

/// The tag of a plaintext, and whether the rest is exactly what that frame carries.
pub fn parse_frame(plaintext: &[u8]) -> (Option<FrameTag>, bool) {
    let (Some(magic), Some(from), Some(seq)) = (
        plaintext.get(..4),
        plaintext
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok()),
        plaintext
            .get(8..TAG_LEN)
            .and_then(|b| <[u8; 8]>::try_from(b).ok()),
    ) else {
        return (None, false);
    };
    if magic != MAGIC {
        return (None, false);
    }
    let tag = FrameTag {
        from: u32::from_be_bytes(from),
        seq: u64::from_be_bytes(seq),
    };
    let rest = plaintext.get(TAG_LEN..).unwrap_or_default();
    let intact = rest.iter().enumerate().all(|(i, b)| *b == filler(tag, i));
    (Some(tag), intact)
}

/// Participant `index`'s identity key in the run of `seed`: an Ed25519 key whose private half
/// comes from the seed, so that everything the call derives from its identity key (the
/// backoff jitter of its reconnections) is the same in every run of the seed.
pub fn identity_key(seed: u64, index: usize) -> Result<IdentityKey, SetupError> {
    use openmls::prelude::tls_codec::Serialize as _;
    use ring::signature::KeyPair as _;
    let mut rng = Rng::derive(seed, 0x1d00 + index as u64);
    let mut private = zeroize::Zeroizing::new(vec![0u8; 32]);
    for chunk in private.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
    }
    let public = ring::signature::Ed25519KeyPair::from_seed_unchecked(&private)
        .map_err(|_| SetupError::IdentityKey)?
        .public_key()
        .as_ref()
        .to_vec();
    let pair = SignatureKeyPair::from_raw(SignatureScheme::ED25519, private.to_vec(), public);
    let suite = MlsSuite::default();
    if suite.ciphersuite().signature_algorithm() != SignatureScheme::ED25519 {
        return Err(SetupError::IdentityKey);
    }
    // `IdentityKey::to_bytes`' encoding: "BCIK", version 1, the suite, the key pair.
    let mut bytes = zeroize::Zeroizing::new(b"BCIK\x01".to_vec());
    bytes.extend_from_slice(&suite.id().to_be_bytes());
    pair.tls_serialize(&mut *bytes)
        .map_err(|_| SetupError::IdentityKey)?;
    IdentityKey::from_bytes(&bytes).map_err(|_| SetupError::IdentityKey)
}

/// Records what one participant's call does (the observer runs synchronously inside the
/// core's calls; the simulation drains it after each).
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<Observed>>);

impl Recorder {
    fn push(&self, o: Observed) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(o);
    }

    /// Takes everything recorded so far.
    pub fn take(&self) -> Vec<Observed> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl CallObserver for Recorder {
    fn frame_sent(&self, f: &FrameSent<'_>) {
        self.push(Observed::Sent {
            kind: f.kind,
            epoch: f.epoch,
            counter: f.counter,
            tag: parse_frame(f.plaintext).0,
        });
    }

    fn frame_opened(&self, f: &FrameOpened<'_>) {
        let (tag, intact) = parse_frame(f.plaintext);
        self.push(Observed::Opened {
            participant: f.participant,
            sender: Arc::clone(f.sender),
            kind: f.kind,
            epoch: f.epoch,
            counter: f.counter,
            tag,
            intact,
        });
    }

    fn epoch_entered(&self, e: &EpochEntered<'_>) {
        self.push(Observed::Epoch {
            epoch: e.epoch,
            code: e.code.clone(),
        });
    }

    fn commit_sent(&self, c: &CommitSent) {
        self.push(Observed::Commit {
            from_epoch: c.from_epoch,
        });
    }

    fn membership_changed(&self, m: &MembershipChanged) {
        self.push(Observed::Membership {
            change: m.change,
            epoch: m.epoch,
        });
    }
}

/// Where a participant's media stands, as its shell sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaSide {
    /// The core asked for a transport and got one.
    pub opened: bool,
    /// The transport's connection is up (packets flow).
    pub connected: bool,
}

/// What a participant's application keeps.
#[derive(Debug, Default)]
pub struct App {
    /// The next typed video frame must be a keyframe.
    pub keyframe_due: bool,
    /// Sequence number of the next frame published.
    pub next_seq: u64,
    /// Publishing is scheduled.
    pub publishing: bool,
}

/// A participant's reconnections, as the simulation follows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeTrack {
    /// Its call said it is reconnecting (`Event::Reconnecting`) and has not said it is back.
    pub away: bool,
    /// Its leaf when it lost the connection.
    pub leaf: Option<u32>,
    /// The epoch the relay's `ResumeAccepted` named on its latest connection.
    pub accepted_epoch: Option<u64>,
    /// The leaf the relay resumed it on (`MemberResumed`).
    pub resumed_leaf: Option<u32>,
    /// Resumes the relay accepted.
    pub resumed: u32,
}

/// One participant of the simulation.
pub struct Member {
    /// Its index in the scenario.
    pub index: usize,
    /// Its identity and display name (`p<index>`).
    pub name: String,
    /// Its plan.
    pub plan: Plan,
    /// Its identity key (from the run's seed).
    pub identity_key: Arc<IdentityKey>,
    /// Its core, from the moment it starts joining.
    pub core: Option<CallCore>,
    /// Its latest control connection (open, or broken while it reconnects).
    pub link: Option<Link>,
    /// Earlier connections the relay may still hold (it learns of their end later, or
    /// never: a lost TCP reset).
    pub old_links: Vec<Link>,
    /// The connection being established (its generation), if any.
    pub connecting: Option<u32>,
    /// Its network is down until then: no new connection can be made (an outage after a
    /// disconnect, or a partition).
    pub offline_until: crate::clock::SimTime,
    /// What the simulation tracks of its reconnections.
    pub resume: ResumeTrack,
    /// Reads the relay's byte stream (as the client's reader task does).
    pub decoder: FrameDecoder,
    /// What its call did.
    pub recorder: Arc<Recorder>,
    /// Its media transport, as the shell sees it.
    pub media: MediaSide,
    /// Its application.
    pub app: App,
    /// Randomness of its links.
    pub rng: Rng,
    /// The first epoch it held.
    pub joined_epoch: Option<u64>,
    /// Connections it opened so far.
    pub generations: u32,
    /// Incoming streams (relay participant, video?) already reported started.
    pub started: BTreeSet<(u64, bool)>,
    /// The latest counters its call reported.
    pub last_stats: Option<blindcall_client::CallStats>,
}

impl Member {
    /// A participant that has not started yet.
    pub fn new(index: usize, plan: Plan, rng: Rng, identity_key: IdentityKey) -> Self {
        Self {
            index,
            name: format!("p{index}"),
            plan,
            identity_key: Arc::new(identity_key),
            core: None,
            link: None,
            old_links: Vec::new(),
            connecting: None,
            offline_until: crate::clock::SimTime::ZERO,
            resume: ResumeTrack::default(),
            decoder: FrameDecoder::new(blindcall_proto::DEFAULT_MAX_FRAME_LEN),
            recorder: Arc::new(Recorder::default()),
            media: MediaSide::default(),
            app: App::default(),
            rng,
            joined_epoch: None,
            generations: 0,
            started: BTreeSet::new(),
            last_stats: None,
        }
    }

    /// Whether its call is running (started and not over).
    pub fn is_running(&self) -> bool {
        self.core.as_ref().is_some_and(|c| !c.is_ended())
    }

    /// Whether it is a member of the group and still connected to the relay.
    pub fn is_connected_member(&self) -> bool {
        self.is_running()
            && self.core.as_ref().and_then(|c| c.call_group()).is_some()
            && self.link.as_ref().is_some_and(Link::is_up)
    }

    /// Its connection number `generation`, the latest or an earlier one.
    pub fn link_of(&mut self, generation: u32) -> Option<&mut Link> {
        match self.link.as_mut() {
            Some(l) if l.generation == generation => Some(l),
            _ => self
                .old_links
                .iter_mut()
                .find(|l| l.generation == generation),
        }
    }

    /// Its connection that the relay knows as `conn`, the latest or an earlier one.
    pub fn link_by_conn(&mut self, conn: blindcall_relay::ConnId) -> Option<&mut Link> {
        match self.link.as_mut() {
            Some(l) if l.conn == conn => Some(l),
            _ => self.old_links.iter_mut().find(|l| l.conn == conn),
        }
    }

    /// Its core's next deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.core.as_ref().and_then(CallCore::poll_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_tag_and_are_checked_whole() {
        let tag = FrameTag { from: 3, seq: 77 };
        let mut f = frame_bytes(tag, 100);
        assert_eq!(parse_frame(&f), (Some(tag), true));
        f[50] ^= 1;
        assert_eq!(parse_frame(&f), (Some(tag), false));
        assert_eq!(parse_frame(b"nope"), (None, false));
    }
}
