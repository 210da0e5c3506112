//! Epoch confirmations: members tell each other, through the relay but signed with their leaf
//! keys, which epoch they are in and a tag only members of that exact epoch can compute. A
//! relay that confirmed two different commits for one epoch (splitting the group in two) is
//! detected by the members on both sides: same epoch, valid signature, different tag.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::identity::RosterMember;

/// MLS exporter label of the confirmation tag (context: the epoch, 8 bytes big-endian).
pub const CONFIRMATION_LABEL: &str = "blindcall epoch confirmation";
/// Length of the confirmation tag.
pub const TAG_LEN: usize = 32;
/// Prefix of the signed content.
const SIGN_LABEL: &[u8] = b"blindcall epoch confirmation v1";
/// Encoding version.
const VERSION: u8 = 1;
/// Longest group id and signature accepted.
const MAX_FIELD: usize = 255;
/// Future epochs for which early confirmations are kept.
const AHEAD: u64 = 2;

/// Why a peer message was refused. Nothing changed; the caller counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMessageError {
    /// Truncated, trailing bytes, unknown kind or version, oversized field.
    #[error("malformed peer message")]
    Malformed,
    /// For another group.
    #[error("peer message for another group")]
    WrongGroup,
    /// Signed by a leaf that is not a member (in the epoch it names), or the signature does
    /// not verify: not from the member it claims (e.g. made up by the relay).
    #[error("peer message not signed by the member it names")]
    BadSignature,
    /// Names an epoch too old or too far ahead to be checked.
    #[error("peer message for epoch {epoch}, not checkable now")]
    Stale {
        /// The epoch it names.
        epoch: u64,
    },
    /// A signed media manifest that failed its checks.
    #[error("media manifest refused")]
    Manifest,
    /// This member is not in the call any more.
    #[error("not a member")]
    NotAMember,
}

/// One member's signed statement "I am in `epoch` and my tag is `tag`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Confirmation {
    pub group_id: Vec<u8>,
    pub epoch: u64,
    pub leaf: u32,
    pub tag: [u8; TAG_LEN],
    pub signature: Vec<u8>,
}

impl Confirmation {
    /// The bytes the signature covers.
    pub fn signed_content(group_id: &[u8], epoch: u64, leaf: u32, tag: &[u8; TAG_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGN_LABEL.len() + 1 + 1 + group_id.len() + 12 + TAG_LEN);
        out.extend_from_slice(SIGN_LABEL);
        out.push(VERSION);
        // ok: group ids longer than 255 bytes are refused before signing or after decoding.
        out.push(group_id.len().min(MAX_FIELD) as u8);
        out.extend_from_slice(group_id);
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&leaf.to_be_bytes());
        out.extend_from_slice(tag);
        out
    }

    /// `uint8 version; opaque group_id<0..255>; uint64 epoch; uint32 leaf; opaque tag[32];
    /// opaque signature<0..255>`.
    pub fn encode(&self) -> Result<Vec<u8>, PeerMessageError> {
        if self.group_id.len() > MAX_FIELD || self.signature.len() > MAX_FIELD {
            return Err(PeerMessageError::Malformed);
        }
        let mut out = Vec::with_capacity(2 + self.group_id.len() + 12 + TAG_LEN + 1 + 72);
        out.push(VERSION);
        // ok: both lengths checked above.
        out.push(self.group_id.len() as u8);
        out.extend_from_slice(&self.group_id);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.leaf.to_be_bytes());
        out.extend_from_slice(&self.tag);
        out.push(self.signature.len() as u8);
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, PeerMessageError> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return Err(PeerMessageError::Malformed);
        }
        let len = usize::from(r.u8()?);
        let group_id = r.take(len)?.to_vec();
        let epoch = u64::from_be_bytes(r.array()?);
        let leaf = u32::from_be_bytes(r.array()?);
        let tag: [u8; TAG_LEN] = r.array()?;
        let len = usize::from(r.u8()?);
        let signature = r.take(len)?.to_vec();
        if !r.0.is_empty() {
            return Err(PeerMessageError::Malformed);
        }
        Ok(Self {
            group_id,
            epoch,
            leaf,
            tag,
            signature,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PeerMessageError> {
        if self.0.len() < n {
            return Err(PeerMessageError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, PeerMessageError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PeerMessageError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// What a checked confirmation showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Same epoch, same tag.
    Agrees,
    /// Same epoch, valid signature, different tag: the member is in another group state.
    Split,
    /// For a later epoch: kept until this member gets there.
    Early,
    /// Already seen (or older than the current epoch): nothing to do.
    Ignored,
}

/// The state of the current epoch's confirmations.
pub(crate) struct Confirmations {
    timeout: Duration,
    epoch: u64,
    tag: [u8; TAG_LEN],
    deadline: Option<Instant>,
    /// Members expected to confirm (their leaves advertise blindcall's member messages).
    expected: BTreeMap<u32, RosterMember>,
    agreed: BTreeSet<u32>,
    split: BTreeSet<u32>,
    /// Signed confirmations for later epochs, checked once this member gets there.
    early: BTreeMap<(u64, u32), Confirmation>,
    consistent_reported: bool,
}

impl Confirmations {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            epoch: 0,
            tag: [0; TAG_LEN],
            deadline: None,
            expected: BTreeMap::new(),
            agreed: BTreeSet::new(),
            split: BTreeSet::new(),
            early: BTreeMap::new(),
            consistent_reported: false,
        }
    }

    /// Enters `epoch` with this member's `tag`; `expected` are the other members that confirm.
    /// Returns the early confirmations for this epoch, to be checked now.
    pub fn enter(
        &mut self,
        now: Instant,
        epoch: u64,
        tag: [u8; TAG_LEN],
        expected: impl Iterator<Item = RosterMember>,
    ) -> Vec<Confirmation> {
        self.epoch = epoch;
        self.tag = tag;
        self.expected = expected.map(|m| (m.leaf, m)).collect();
        self.agreed.clear();
        self.split.clear();
        self.consistent_reported = false;
        self.deadline =
            (!self.expected.is_empty()).then(|| now.checked_add(self.timeout).unwrap_or(now));
        let due: Vec<(u64, u32)> = self
            .early
            .range((epoch, 0)..=(epoch, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        let now_due = due
            .into_iter()
            .filter_map(|k| self.early.remove(&k))
            .collect();
        self.early.retain(|(e, _), _| *e > epoch);
        now_due
    }

    /// Whether a confirmation for `epoch` can be checked now or kept for later.
    pub fn classify_epoch(&self, epoch: u64) -> Result<bool, PeerMessageError> {
        if epoch == self.epoch {
            Ok(true)
        } else if epoch > self.epoch && epoch - self.epoch <= AHEAD {
            Ok(false)
        } else {
            Err(PeerMessageError::Stale { epoch })
        }
    }

    /// Keeps a signed confirmation for a later epoch (one per member and epoch).
    pub fn keep_early(&mut self, c: Confirmation) -> Outcome {
        self.early.insert((c.epoch, c.leaf), c);
        Outcome::Early
    }

    /// Records a verified confirmation of the current epoch.
    pub fn record(&mut self, leaf: u32, tag: &[u8; TAG_LEN]) -> Outcome {
        use subtle::ConstantTimeEq as _;
        if self.agreed.contains(&leaf) || self.split.contains(&leaf) {
            return Outcome::Ignored;
        }
        if bool::from(tag.ct_eq(&self.tag)) {
            self.agreed.insert(leaf);
            Outcome::Agrees
        } else {
            self.split.insert(leaf);
            Outcome::Split
        }
    }

    /// Whether every expected member agreed (reported once per epoch).
    pub fn take_consistent(&mut self) -> bool {
        let all = !self.expected.is_empty()
            && self.split.is_empty()
            && self.expected.keys().all(|l| self.agreed.contains(l));
        if all && !self.consistent_reported {
            self.consistent_reported = true;
            self.deadline = None;
            return true;
        }
        false
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// At the deadline: the expected members that did not confirm (reported once).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<RosterMember> {
        if self.deadline.is_none_or(|t| t > now) {
            return Vec::new();
        }
        self.deadline = None;
        self.expected
            .values()
            .filter(|m| !self.agreed.contains(&m.leaf) && !self.split.contains(&m.leaf))
            .cloned()
            .collect()
    }
}
