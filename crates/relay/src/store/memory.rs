//! The in-memory store: the default, for a single relay process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{CommitRecord, Sequenced, decide};
use crate::ds::RoomId;

/// A ban: (room, token id).
type BanKey = (RoomId, [u8; 16]);

/// Sequenced commits in this process's memory. Clones share the same map, so tasks of one
/// process race exactly as nodes racing on JetStream do. It keeps every record until dropped:
/// pruning to each room's `commit_history` comes with the DS using the store (spec/cluster.md,
/// "Planned").
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    commits: Arc<Mutex<HashMap<(RoomId, u64), CommitRecord>>>,
    geneses: Arc<Mutex<HashMap<RoomId, super::GenesisRecord>>>,
    bans: Arc<Mutex<std::collections::HashSet<BanKey>>>,
    locks: Arc<Mutex<HashMap<(RoomId, u64), bool>>>,
    homes: Arc<Mutex<HashMap<(RoomId, u64), super::HomeRecord>>>,
}

impl MemoryStore {
    /// Claim the record's term of its room's home, create-only (CL-HOME-1).
    pub fn claim_home(
        &self,
        record: &super::HomeRecord,
    ) -> Result<super::HomeClaim, super::StoreError> {
        record.encode()?;
        let mut map = self.homes.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (record.room.clone(), record.term);
        match map.get(&key) {
            Some(holder) if holder == record => Ok(super::HomeClaim::Won),
            Some(holder) => Ok(super::HomeClaim::Lost {
                holder: holder.clone(),
            }),
            None => {
                map.insert(key, record.clone());
                Ok(super::HomeClaim::Won)
            }
        }
    }

    /// The home of `room` with the highest term, if any.
    pub fn home(&self, room: &RoomId) -> Option<super::HomeRecord> {
        let map = self.homes.lock().unwrap_or_else(PoisonError::into_inner);
        map.values()
            .filter(|h| h.room == *room)
            .max_by_key(|h| h.term)
            .cloned()
    }

    /// Claim the record's (room, epoch); see [`RoomStore::sequence_commit`](super::RoomStore::sequence_commit).
    pub fn sequence_commit(&self, record: &CommitRecord) -> Result<Sequenced, super::StoreError> {
        record.validate()?;
        // A panic while holding the lock cannot leave the map half-written (one insert).
        let mut map = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (record.room().clone(), record.epoch());
        match map.get(&key) {
            Some(holder) => Ok(decide(record, holder.clone())),
            None => {
                map.insert(key, record.clone());
                Ok(Sequenced::Won)
            }
        }
    }

    /// The commit sequenced for (`room`, `epoch`), if any.
    pub fn sequenced_commit(&self, room: &RoomId, epoch: u64) -> Option<CommitRecord> {
        let map = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(room.clone(), epoch)).cloned()
    }

    /// Write `record` as its room's genesis, create-only.
    pub fn create_genesis(
        &self,
        record: &super::GenesisRecord,
    ) -> Result<super::Genesis, super::StoreError> {
        record.encode()?;
        let mut map = self.geneses.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(record.room()) {
            Some(holder) => Ok(super::genesis::decide_genesis(record, holder.clone())),
            None => {
                map.insert(record.room().clone(), record.clone());
                Ok(super::Genesis::Created)
            }
        }
    }

    /// `room`'s genesis, if any.
    pub fn genesis(&self, room: &RoomId) -> Option<super::GenesisRecord> {
        let map = self.geneses.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(room).cloned()
    }

    /// Ban `token_id` from `room` (idempotent).
    pub fn put_ban(&self, room: &RoomId, token_id: &[u8; 16]) -> Result<(), super::StoreError> {
        super::encode_ban(room, token_id)?;
        let mut set = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert((room.clone(), *token_id));
        Ok(())
    }

    /// Whether `token_id` is banned from `room`.
    pub fn is_banned(&self, room: &RoomId, token_id: &[u8; 16]) -> bool {
        let set = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
        set.contains(&(room.clone(), *token_id))
    }

    /// Write lock change `n` of `room`, create-only.
    pub fn write_lock(
        &self,
        room: &RoomId,
        n: u64,
        locked: bool,
    ) -> Result<super::LockWrite, super::StoreError> {
        super::encode_lock(room, n, locked)?;
        let mut map = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(&(room.clone(), n)) {
            Some(held) if *held != locked => Ok(super::LockWrite::Taken { locked: *held }),
            Some(_) => Ok(super::LockWrite::Written),
            None => {
                map.insert((room.clone(), n), locked);
                Ok(super::LockWrite::Written)
            }
        }
    }
}
