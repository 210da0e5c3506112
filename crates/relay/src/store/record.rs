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
//!     uint8  version = 1;
//!     uint8  kind = 1;              // sequenced commit
//!     opaque room_id<1..64>;        // one length byte
//!     uint64 epoch;                 // the epoch the commit was sent in (it leads to epoch + 1)
//!     opaque commit_hash[32];       // SHA-256 of commit
//!     opaque commit<0..2^32-1>;     // four length bytes, big-endian: the MLSMessage as sequenced
//! } CommitRecord;                   // nothing after it
//! ```

use thiserror::Error;

use crate::ds::RoomId;
use crate::token::MAX_ROOM_ID_LEN;

/// The first bytes of every record the relay writes.
pub const RECORD_MAGIC: [u8; 4] = *b"BCRS";
/// The record version this relay writes and reads.
pub const RECORD_VERSION: u8 = 1;
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
}

impl std::fmt::Debug for CommitRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitRecord")
            .field("room", &hex::encode(&self.room.0))
            .field("epoch", &self.epoch)
            .field("hash", &hex::encode(self.hash))
            .field("commit_len", &self.commit.len())
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
        }
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
        let (room_len, commit_len) = self.lengths()?;
        let mut out =
            Vec::with_capacity(4 + 2 + 1 + self.room.0.len() + 8 + 32 + 4 + self.commit.len());
        out.extend_from_slice(&RECORD_MAGIC);
        out.push(RECORD_VERSION);
        out.push(KIND_COMMIT);
        out.push(room_len);
        out.extend_from_slice(&self.room.0);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&commit_len.to_be_bytes());
        out.extend_from_slice(&self.commit);
        Ok(out)
    }

    /// Checks that the record can be stored (what [`CommitRecord::encode`] checks).
    pub fn validate(&self) -> Result<(), EncodeError> {
        self.lengths().map(|_| ())
    }

    fn lengths(&self) -> Result<(u8, u32), EncodeError> {
        let room_len = u8::try_from(self.room.0.len())
            .ok()
            .filter(|l| (1..=MAX_ROOM_ID_LEN).contains(&usize::from(*l)))
            .ok_or(EncodeError::RoomId)?;
        let commit_len = u32::try_from(self.commit.len()).map_err(|_| EncodeError::TooLarge)?;
        Ok((room_len, commit_len))
    }

    /// Decode a record read under the key of (`room`, `epoch`), checking that it is a commit
    /// record of this version, for that room and epoch, whose hash matches its commit.
    pub fn decode(bytes: &[u8], room: &RoomId, epoch: u64) -> Result<Self, CorruptEntry> {
        let mut r = Reader(bytes);
        if r.take(4)? != RECORD_MAGIC {
            return Err(CorruptEntry::Foreign);
        }
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(CorruptEntry::UnsupportedVersion(version));
        }
        let kind = r.u8()?;
        if kind != KIND_COMMIT {
            return Err(CorruptEntry::WrongKind(kind));
        }
        let room_len = usize::from(r.u8()?);
        if room_len == 0 || room_len > MAX_ROOM_ID_LEN {
            return Err(CorruptEntry::BadRoomId);
        }
        let found_room = r.take(room_len)?;
        if found_room != room.0.as_slice() {
            return Err(CorruptEntry::WrongRoom);
        }
        let found_epoch = u64::from_be_bytes(r.array()?);
        if found_epoch != epoch {
            return Err(CorruptEntry::WrongEpoch { found: found_epoch });
        }
        let hash: CommitHash = r.array()?;
        let commit_len =
            usize::try_from(u32::from_be_bytes(r.array()?)).map_err(|_| CorruptEntry::Truncated)?;
        let commit = r.take(commit_len)?;
        if !r.0.is_empty() {
            return Err(CorruptEntry::TrailingBytes);
        }
        if commit_hash(commit) != hash {
            return Err(CorruptEntry::HashMismatch);
        }
        Ok(Self {
            room: room.clone(),
            epoch,
            hash,
            commit: commit.to_vec(),
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

/// A bounds-checked reader: every short read is [`CorruptEntry::Truncated`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptEntry> {
        if self.0.len() < n {
            return Err(CorruptEntry::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CorruptEntry> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CorruptEntry> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
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
        v[4] = 2;
        assert_eq!(decode(&v), Err(CorruptEntry::UnsupportedVersion(2)));
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
        let mut v = bytes.clone();
        let last = v.len() - 1;
        v[last] ^= 1;
        assert_eq!(decode(&v), Err(CorruptEntry::HashMismatch));
        let mut v = bytes.clone();
        v.push(0);
        assert_eq!(decode(&v), Err(CorruptEntry::TrailingBytes));
        // A huge length prefix is truncation, not an allocation.
        let mut v = bytes[..bytes.len() - b"commit bytes".len() - 4].to_vec();
        v.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&v), Err(CorruptEntry::Truncated));
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
        ) {
            let rec = CommitRecord::new(RoomId(r.clone()), epoch, commit);
            let bytes = rec.encode().unwrap();
            prop_assert_eq!(CommitRecord::decode(&bytes, &RoomId(r), epoch).unwrap(), rec);
        }
    }
}
