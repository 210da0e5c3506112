//! The stored form of a sequenced commit: a versioned record bound to its key.
//!
//! Sans-IO: encoding and decoding only. A record read back is checked against the key it was
//! read under (room and epoch) and against its own SHA-256 of the commit, so a foreign, stale
//! or tampered entry is refused with a [`CorruptEntry`] reason and never taken for a winner
//! (spec/cluster.md, CL-REC-1).
//!
//! ```text
//! struct {
//!     opaque magic[4] = "BCRS";     // blindcall room store
//!     uint8  version = 2;           // 1 is still read (it has no group_info nor welcome)
//!     uint8  kind = 1;              // sequenced commit
//!     opaque room_id<1..64>;        // one length byte
//!     uint64 epoch;                 // the epoch the commit was sent in (it leads to epoch + 1)
//!     opaque commit_hash[32];       // SHA-256 of commit
//!     opaque commit<0..2^32-1>;     // four length bytes, big-endian: the MLSMessage as sequenced
//!     opaque group_info<0..2^32-1>; // version 2: the GroupInfo of epoch + 1 (empty: none)
//!     opaque welcome<0..2^32-1>;    // version 2: the commit's Welcome (empty: none)
//! } CommitRecord;                   // nothing after it
//! ```
//!
//! The hash covers the commit only: it names the commit (two records of one commit are the same
//! claim, CL-SEQ-2). The GroupInfo and the Welcome are not trusted for it: a node that applies
//! the record checks them against the commit as it checks a member's (CL-FOLLOW-2).

use thiserror::Error;

use crate::ds::RoomId;
use crate::token::MAX_ROOM_ID_LEN;

/// The first bytes of every record the relay writes.
pub const RECORD_MAGIC: [u8; 4] = *b"BCRS";
/// The record version this relay writes (it reads this one and [`RECORD_VERSION_1`]).
pub const RECORD_VERSION: u8 = 2;
/// The first record version, still read: a commit without GroupInfo or Welcome.
pub const RECORD_VERSION_1: u8 = 1;
/// The record kind of a sequenced commit.
pub const KIND_COMMIT: u8 = 1;
/// Length of a commit hash (SHA-256).
pub const COMMIT_HASH_LEN: usize = 32;

/// A SHA-256 of a commit's bytes: how sequencers compare commits without comparing bytes.
pub type CommitHash = [u8; COMMIT_HASH_LEN];

/// Why a stored entry was refused (the entry's fault: tampering, another application's data, a
/// newer relay's format, or a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CorruptEntry {
    /// Shorter than its fields or lengths say.
    #[error("entry is truncated")]
    Truncated,
    /// Not a blindcall record (another application's data under our key).
    #[error("entry is not a blindcall record")]
    Foreign,
    /// A record version this relay does not read.
    #[error("entry has unsupported record version {0}")]
    UnsupportedVersion(u8),
    /// Another kind of record than the key holds.
    #[error("entry has record kind {0}, expected a sequenced commit")]
    WrongKind(u8),
    /// The room id is empty or longer than a room id can be.
    #[error("entry has an invalid room id length")]
    BadRoomId,
    /// The record names another room than its key.
    #[error("entry belongs to another room")]
    WrongRoom,
    /// The record names another epoch than its key.
    #[error("entry is for epoch {found}, not for its key's epoch")]
    WrongEpoch {
        /// The epoch the record names.
        found: u64,
    },
    /// The commit's SHA-256 differs from the hash the record carries.
    #[error("entry's commit does not match its hash")]
    HashMismatch,
    /// A ban record names another token than its key (CL-BAN-1).
    #[error("entry bans another token than its key names")]
    WrongToken,
    /// A lock record names another change number than its key, or a state other than 0 or 1
    /// (CL-LOCK-2).
    #[error("entry is not the lock change its key names")]
    WrongLock,
    /// A node heartbeat or room home names another node than its key, or a node id or
    /// address that is not one (CL-NODE-4, CL-HOME-1).
    #[error("entry names another or an invalid node")]
    WrongNode,
    /// Bytes after the commit.
    #[error("entry has trailing bytes")]
    TrailingBytes,
    /// The key was deleted or purged: an epoch's winner is never removed, so this is tampering;
    /// the epoch is not sequenced again.
    #[error("entry was deleted")]
    Deleted,
}

/// A sequenced commit as stored: room, epoch, the commit's bytes and their SHA-256. The hash
/// always matches the bytes (computed on creation, verified on decoding).
#[derive(Clone, PartialEq, Eq)]
pub struct CommitRecord {
    room: RoomId,
    epoch: u64,
    hash: CommitHash,
    commit: Vec<u8>,
    group_info: Vec<u8>,
    welcome: Vec<u8>,
}

impl std::fmt::Debug for CommitRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitRecord")
            .field("room", &hex::encode(&self.room.0))
            .field("epoch", &self.epoch)
            .field("hash", &hex::encode(self.hash))
            .field("commit_len", &self.commit.len())
            .field("group_info_len", &self.group_info.len())
            .field("welcome_len", &self.welcome.len())
            .finish()
    }
}

/// SHA-256 of `commit`.
pub fn commit_hash(commit: &[u8]) -> CommitHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, commit);
    let mut out = [0u8; COMMIT_HASH_LEN];
    out.copy_from_slice(digest.as_ref());
    out
}

impl CommitRecord {
    /// The record of `commit` (an MLSMessage as the DS sequences it) for `epoch` of `room`.
    pub fn new(room: RoomId, epoch: u64, commit: Vec<u8>) -> Self {
        Self {
            hash: commit_hash(&commit),
            room,
            epoch,
            commit,
            group_info: Vec::new(),
            welcome: Vec::new(),
        }
    }

    /// The same record carrying the GroupInfo of the next epoch and the commit's Welcome (empty
    /// when the commit adds nobody), so that another node can serve the new epoch.
    pub fn with_group_info(mut self, group_info: Vec<u8>, welcome: Vec<u8>) -> Self {
        self.group_info = group_info;
        self.welcome = welcome;
        self
    }

    /// The GroupInfo of the next epoch, if the record carries one.
    pub fn group_info(&self) -> Option<&[u8]> {
        Some(self.group_info.as_slice()).filter(|b| !b.is_empty())
    }

    /// The commit's Welcome, if the record carries one.
    pub fn welcome(&self) -> Option<&[u8]> {
        Some(self.welcome.as_slice()).filter(|b| !b.is_empty())
    }

    /// The room.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// The epoch the commit was sent in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// SHA-256 of the commit.
    pub fn hash(&self) -> &CommitHash {
        &self.hash
    }

    /// The commit's bytes.
    pub fn commit(&self) -> &[u8] {
        &self.commit
    }

    /// The record's bytes. Fails only for a room id no token can carry (empty or over
    /// [`MAX_ROOM_ID_LEN`] bytes) or a commit of 4 GiB or more.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.validate()?;
        let mut out = Vec::with_capacity(
            4 + 2
                + 1
                + self.room.0.len()
                + 8
                + 32
                + 12
                + self.commit.len()
                + self.group_info.len()
                + self.welcome.len(),
        );
        head(&mut out, KIND_COMMIT);
        put_short(&mut out, &self.room.0, MAX_ROOM_ID_LEN)?;
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.hash);
        put_long(&mut out, &self.commit)?;
        put_long(&mut out, &self.group_info)?;
        put_long(&mut out, &self.welcome)?;
        Ok(out)
    }

    /// Checks that the record can be stored (what [`CommitRecord::encode`] checks).
    pub fn validate(&self) -> Result<(), EncodeError> {
        if !(1..=MAX_ROOM_ID_LEN).contains(&self.room.0.len()) {
            return Err(EncodeError::RoomId);
        }
        let too_large = |b: &[u8]| u32::try_from(b.len()).is_err();
        if too_large(&self.commit) || too_large(&self.group_info) || too_large(&self.welcome) {
            return Err(EncodeError::TooLarge);
        }
        Ok(())
    }

    /// Decode a record read under the key of (`room`, `epoch`), checking that it is a commit
    /// record of a version this relay reads (2, or 1 without GroupInfo and Welcome), for that
    /// room and epoch, whose hash matches its commit.
    pub fn decode(bytes: &[u8], room: &RoomId, epoch: u64) -> Result<Self, CorruptEntry> {
        let mut r = Reader(bytes);
        if r.take(4)? != RECORD_MAGIC {
            return Err(CorruptEntry::Foreign);
        }
        let version = r.u8()?;
        if version != RECORD_VERSION && version != RECORD_VERSION_1 {
            return Err(CorruptEntry::UnsupportedVersion(version));
        }
        let kind = r.u8()?;
        if kind != KIND_COMMIT {
            return Err(CorruptEntry::WrongKind(kind));
        }
        r.room(room)?;
        let found_epoch = r.u64()?;
        if found_epoch != epoch {
            return Err(CorruptEntry::WrongEpoch { found: found_epoch });
        }
        let hash: CommitHash = r.array()?;
        let commit = r.long()?;
        let (group_info, welcome) = if version == RECORD_VERSION_1 {
            (&[][..], &[][..])
        } else {
            (r.long()?, r.long()?)
        };
        r.end()?;
        if commit_hash(commit) != hash {
            return Err(CorruptEntry::HashMismatch);
        }
        Ok(Self {
            room: room.clone(),
            epoch,
            hash,
            commit: commit.to_vec(),
            group_info: group_info.to_vec(),
            welcome: welcome.to_vec(),
        })
    }
}

/// Why a record could not be encoded (caller fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The room id is empty or longer than a token's room id can be.
    #[error("room id must be 1..={MAX_ROOM_ID_LEN} bytes")]
    RoomId,
    /// The commit is 4 GiB or larger.
    #[error("commit too large for a record")]
    TooLarge,
}

/// Writes a record's first bytes: magic, version, `kind`.
pub(super) fn head(out: &mut Vec<u8>, kind: u8) {
    out.extend_from_slice(&RECORD_MAGIC);
    out.push(RECORD_VERSION);
    out.push(kind);
}

/// Writes `b` after a one-byte length, which must be in 1..=`max` ([`EncodeError::RoomId`]).
pub(super) fn put_short(out: &mut Vec<u8>, b: &[u8], max: usize) -> Result<(), EncodeError> {
    let len = u8::try_from(b.len())
        .ok()
        .filter(|l| (1..=max).contains(&usize::from(*l)))
        .ok_or(EncodeError::RoomId)?;
    out.push(len);
    out.extend_from_slice(b);
    Ok(())
}

/// Writes `b` after a four-byte length.
pub(super) fn put_long(out: &mut Vec<u8>, b: &[u8]) -> Result<(), EncodeError> {
    let len = u32::try_from(b.len()).map_err(|_| EncodeError::TooLarge)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// A bounds-checked reader of a record: every short read is [`CorruptEntry::Truncated`].
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptEntry> {
        if self.0.len() < n {
            return Err(CorruptEntry::Truncated);
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }

    pub(super) fn u8(&mut self) -> Result<u8, CorruptEntry> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, CorruptEntry> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, CorruptEntry> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], CorruptEntry> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Bytes after a one-byte length.
    pub(super) fn short(&mut self) -> Result<&'a [u8], CorruptEntry> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    /// Bytes after a four-byte length.
    pub(super) fn long(&mut self) -> Result<&'a [u8], CorruptEntry> {
        let n = usize::try_from(self.u32()?).map_err(|_| CorruptEntry::Truncated)?;
        self.take(n)
    }

    /// The magic, this relay's version and `kind`.
    pub(super) fn head(&mut self, kind: u8) -> Result<(), CorruptEntry> {
        if self.take(4)? != RECORD_MAGIC {
            return Err(CorruptEntry::Foreign);
        }
        let version = self.u8()?;
        if version != RECORD_VERSION {
            return Err(CorruptEntry::UnsupportedVersion(version));
        }
        let k = self.u8()?;
        if k != kind {
            return Err(CorruptEntry::WrongKind(k));
        }
        Ok(())
    }

    /// A room id (one length byte) that must be `room`.
    pub(super) fn room(&mut self, room: &RoomId) -> Result<(), CorruptEntry> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > MAX_ROOM_ID_LEN {
            return Err(CorruptEntry::BadRoomId);
        }
        if self.take(len)? != room.0 {
            return Err(CorruptEntry::WrongRoom);
        }
        Ok(())
    }

    /// Text (one length byte) that `valid` accepts, else [`CorruptEntry::WrongNode`].
    pub(super) fn text(&mut self, valid: fn(&str) -> bool) -> Result<String, CorruptEntry> {
        let b = self.short()?;
        std::str::from_utf8(b)
            .ok()
            .filter(|s| valid(s))
            .map(str::to_owned)
            .ok_or(CorruptEntry::WrongNode)
    }

    /// Nothing may follow.
    pub(super) fn end(&self) -> Result<(), CorruptEntry> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CorruptEntry::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn room() -> RoomId {
        RoomId(b"standup".to_vec())
    }

    // covers: CL-REC-1
    #[test]
    fn a_record_round_trips_and_every_defect_is_named() {
        let rec = CommitRecord::new(room(), 7, b"commit bytes".to_vec());
        let bytes = rec.encode().unwrap();
        assert_eq!(CommitRecord::decode(&bytes, &room(), 7).unwrap(), rec);

        let decode = |b: &[u8]| CommitRecord::decode(b, &room(), 7);
        assert_eq!(decode(b"{\"json\":1}"), Err(CorruptEntry::Foreign));
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Err(CorruptEntry::Truncated)
        );
        assert_eq!(decode(&[]), Err(CorruptEntry::Truncated));
        let mut v = bytes.clone();
        v[4] = 3;
        assert_eq!(decode(&v), Err(CorruptEntry::UnsupportedVersion(3)));
        let mut v = bytes.clone();
        v[4] = 0;
        assert_eq!(decode(&v), Err(CorruptEntry::UnsupportedVersion(0)));
        let mut v = bytes.clone();
        v[5] = 9;
        assert_eq!(decode(&v), Err(CorruptEntry::WrongKind(9)));
        let mut v = bytes.clone();
        v[6] = 0;
        assert_eq!(decode(&v), Err(CorruptEntry::BadRoomId));
        assert_eq!(
            CommitRecord::decode(&bytes, &RoomId(b"standuq".to_vec()), 7),
            Err(CorruptEntry::WrongRoom)
        );
        assert_eq!(
            CommitRecord::decode(&bytes, &room(), 8),
            Err(CorruptEntry::WrongEpoch { found: 7 })
        );
        // The commit's last byte (the record ends with two empty lengths, GroupInfo and Welcome).
        let mut v = bytes.clone();
        let last = v.len() - 9;
        v[last] ^= 1;
        assert_eq!(decode(&v), Err(CorruptEntry::HashMismatch));
        let mut v = bytes.clone();
        v.push(0);
        assert_eq!(decode(&v), Err(CorruptEntry::TrailingBytes));
        // A huge length prefix is truncation, not an allocation.
        let mut v = bytes[..bytes.len() - b"commit bytes".len() - 12].to_vec();
        v.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&v), Err(CorruptEntry::Truncated));
    }

    // covers: CL-REC-2
    #[test]
    fn a_version_2_record_carries_group_info_and_welcome_and_version_1_is_still_read() {
        let rec = CommitRecord::new(room(), 7, b"commit".to_vec())
            .with_group_info(b"group info".to_vec(), b"welcome".to_vec());
        let bytes = rec.encode().unwrap();
        assert_eq!(bytes[4], RECORD_VERSION);
        let back = CommitRecord::decode(&bytes, &room(), 7).unwrap();
        assert_eq!(back.group_info(), Some(&b"group info"[..]));
        assert_eq!(back.welcome(), Some(&b"welcome"[..]));
        // The hash names the commit only: the same commit with or without them is one claim.
        assert_eq!(
            back.hash(),
            CommitRecord::new(room(), 7, b"commit".to_vec()).hash()
        );
        // Without a Welcome (no Adds): empty, read as none.
        let no_welcome = CommitRecord::new(room(), 7, b"commit".to_vec())
            .with_group_info(b"gi".to_vec(), Vec::new());
        let back = CommitRecord::decode(&no_welcome.encode().unwrap(), &room(), 7).unwrap();
        assert_eq!(back.welcome(), None);
        // A version 1 record (written by a relay of phase 2) is read: a commit without them.
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"BCRS");
        v1.extend_from_slice(&[1, 1, 7]);
        v1.extend_from_slice(b"standup");
        v1.extend_from_slice(&7u64.to_be_bytes());
        v1.extend_from_slice(&commit_hash(b"commit"));
        v1.extend_from_slice(&6u32.to_be_bytes());
        v1.extend_from_slice(b"commit");
        let old = CommitRecord::decode(&v1, &room(), 7).unwrap();
        assert_eq!(old.commit(), b"commit");
        assert_eq!((old.group_info(), old.welcome()), (None, None));
        // A version 2 record cut after its commit (a version 1 body under version 2) is refused.
        let mut cut = v1.clone();
        cut[4] = 2;
        assert_eq!(
            CommitRecord::decode(&cut, &room(), 7),
            Err(CorruptEntry::Truncated)
        );
    }

    #[test]
    fn room_ids_no_token_carries_are_not_encoded() {
        let empty = CommitRecord::new(RoomId(Vec::new()), 1, Vec::new());
        assert_eq!(empty.encode(), Err(EncodeError::RoomId));
        let long = CommitRecord::new(RoomId(vec![1; MAX_ROOM_ID_LEN + 1]), 1, Vec::new());
        assert_eq!(long.encode(), Err(EncodeError::RoomId));
    }

    proptest! {
        // covers: CL-REC-1
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = CommitRecord::decode(&bytes, &room(), 7);
        }

        #[test]
        fn every_record_round_trips(
            r in proptest::collection::vec(any::<u8>(), 1..=MAX_ROOM_ID_LEN),
            epoch in any::<u64>(),
            commit in proptest::collection::vec(any::<u8>(), 0..300),
            gi in proptest::collection::vec(any::<u8>(), 0..100),
            welcome in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let rec = CommitRecord::new(RoomId(r.clone()), epoch, commit).with_group_info(gi, welcome);
            let bytes = rec.encode().unwrap();
            prop_assert_eq!(CommitRecord::decode(&bytes, &RoomId(r), epoch).unwrap(), rec);
        }
    }
}
