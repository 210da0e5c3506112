//! `RoomStore`: where the delivery service keeps what it must not lose, so that more than one
//! relay node can serve a room (spec/cluster.md).
//!
//! The store belongs to the shell, never to the sans-IO [`Ds`](crate::ds::Ds): its operations
//! are `async` and may fail; the DS core asks for commit claims as outputs
//! ([`Output::Claim`](crate::ds::Output::Claim)) and learns their results as inputs
//! ([`Ds::handle_claim`](crate::ds::Ds::handle_claim)). What is built: commit sequencing, the one
//! decision that must be made once for all nodes — the first valid commit for (room, epoch)
//! wins — as a create-only key per (room, epoch).
//!
//! Two implementations behind one enum ([`RoomStore`]; an enum rather than a trait object, so
//! the `async fn`s need no boxing):
//! - [`MemoryStore`], the default: one process, nothing to run.
//! - [`JetStreamStore`]: NATS JetStream KV (nats-server 2.9.10, async-nats 0.40.0), shared by
//!   every node of a cluster.

mod ban;
mod error;
mod genesis;
mod home;
mod jetstream;
mod lock;
mod memory;
mod record;
mod status;
mod waiting;

pub use ban::{BAN_KEYS, KIND_BAN, ban_key, decode_ban, encode_ban, parse_ban_key};
pub use error::{StoreError, StoreOp};
pub use genesis::{Genesis, GenesisRecord, KIND_GENESIS, genesis_key};
pub use home::{
    DEFAULT_NODES_BUCKET, HOME_KEYS, HomeClaim, HomeRecord, KIND_HOME, KIND_NODE, NODE_KEYS,
    NodeRecord, home_key, node_key, parse_home_key, parse_node_key, valid_node_id,
};
pub use jetstream::{
    BanWatch, COMMIT_KEYS, CommitWatch, DEFAULT_BUCKET, DEFAULT_OP_TIMEOUT, HomeWatch,
    JetStreamConfig, JetStreamStore, KvWatch, LockWatch, NodeChange, NodeWatch, WaitingChange,
    WaitingWatch, commit_key, parse_commit_key,
};
pub use lock::{
    KIND_LOCK, LOCK_KEYS, LockWrite, decode_lock, encode_lock, lock_key, parse_lock_key,
};
pub use memory::MemoryStore;
pub use record::{
    COMMIT_HASH_LEN, CommitHash, CommitRecord, CorruptEntry, EncodeError, KIND_COMMIT,
    RECORD_MAGIC, RECORD_VERSION, RECORD_VERSION_1, commit_hash,
};
pub use status::{ClusterStatus, NodeStatus, RoomStatus};
pub use waiting::{KIND_WAITING, WAITING_KEYS, WaitingRecord, parse_waiting_key, waiting_key};

use crate::ds::{ClaimAnswer, ClaimRequest, RoomId};

/// The outcome of a commit claim for (room, epoch).
#[must_use = "a lost claim must not be broadcast: the winner's commit is the epoch's"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sequenced {
    /// This claim holds the epoch (also when the same commit — same hash — was already there:
    /// a retried claim whose first answer was lost, CL-SEQ-2).
    Won,
    /// Another commit holds the epoch; here it is, as stored.
    Lost {
        /// The epoch's winner.
        winner: CommitRecord,
    },
}

/// The delivery service's durable state. Cheap to clone: clones share the same store.
#[derive(Debug, Clone)]
pub enum RoomStore {
    /// In this process only (the default).
    Memory(MemoryStore),
    /// NATS JetStream KV, shared by every node.
    JetStream(Box<JetStreamStore>),
}

impl Default for RoomStore {
    fn default() -> Self {
        Self::Memory(MemoryStore::default())
    }
}

impl RoomStore {
    /// Connect to JetStream and open (or create) the bucket. Fails closed: an unreachable
    /// server is [`StoreError::Unreachable`] or [`StoreError::Timeout`], never a store that
    /// pretends to work.
    pub async fn jetstream(cfg: JetStreamConfig) -> Result<Self, StoreError> {
        JetStreamStore::connect(cfg)
            .await
            .map(|j| Self::JetStream(Box::new(j)))
    }

    /// Claim `record.epoch()` of `record.room()` for `record`'s commit: exactly one claim per
    /// (room, epoch) wins, across every process sharing the store; every other claim gets the
    /// winner (CL-SEQ-1). An error means this claim did not sequence anything (CL-FAIL-1); a
    /// [`StoreError::Timeout`] on a write means its outcome is unknown until the key is read.
    pub async fn sequence_commit(&self, record: &CommitRecord) -> Result<Sequenced, StoreError> {
        match self {
            Self::Memory(m) => m.sequence_commit(record),
            Self::JetStream(j) => j.sequence_commit(record).await,
        }
    }

    /// The commit sequenced for (`room`, `epoch`), if any.
    pub async fn sequenced_commit(
        &self,
        room: &RoomId,
        epoch: u64,
    ) -> Result<Option<CommitRecord>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.sequenced_commit(room, epoch)),
            Self::JetStream(j) => j.sequenced_commit(room, epoch).await,
        }
    }

    /// Watch every room's commits from now on, to follow the winners other nodes sequence
    /// (CL-FOLLOW-1). The memory store has nothing to watch (`None`): it serves one process,
    /// whose DS sequences every commit itself.
    pub async fn watch_commits(&self) -> Result<Option<CommitWatch>, StoreError> {
        match self {
            Self::Memory(_) => Ok(None),
            Self::JetStream(j) => j.watch_commits().await.map(Some),
        }
    }

    /// Answer the delivery service's [`ClaimRequest`] (store mode, spec/cluster.md CL-DS-1):
    /// read the key first when the request says so (a commit found there is the answer),
    /// then claim. Every failure is [`ClaimAnswer::Failed`].
    pub async fn answer_claim(&self, req: &ClaimRequest) -> ClaimAnswer {
        if req.read_first {
            match self
                .sequenced_commit(req.record.room(), req.record.epoch())
                .await
            {
                Ok(Some(winner)) => return ClaimAnswer::Lost { winner },
                Ok(None) => {}
                Err(e) => return ClaimAnswer::Failed(e),
            }
        }
        match self.sequence_commit(&req.record).await {
            Ok(Sequenced::Won) => ClaimAnswer::Won,
            Ok(Sequenced::Lost { winner }) => ClaimAnswer::Lost { winner },
            Err(e) => ClaimAnswer::Failed(e),
        }
    }

    /// Write `record` as its room's genesis (CL-GEN-1): create-only, so the first creation of a
    /// room wins across every node sharing the store ([`Genesis::Created`]; the same record
    /// again is `Created` too, as after a timed-out write), and every other one gets the
    /// holder ([`Genesis::Exists`]).
    pub async fn create_genesis(&self, record: &GenesisRecord) -> Result<Genesis, StoreError> {
        match self {
            Self::Memory(m) => m.create_genesis(record),
            Self::JetStream(j) => j.create_genesis(record).await,
        }
    }

    /// `room`'s genesis, if its group was created on any node.
    pub async fn genesis(&self, room: &RoomId) -> Result<Option<GenesisRecord>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.genesis(room)),
            Self::JetStream(j) => j.genesis(room).await,
        }
    }

    /// The cluster's nodes and rooms as the store holds them (CL-STATUS-1); the memory store
    /// of a single relay has no nodes and reports none.
    pub async fn status(&self) -> Result<ClusterStatus, StoreError> {
        match self {
            Self::Memory(_) => Ok(ClusterStatus::default()),
            Self::JetStream(j) => j.status().await,
        }
    }

    /// Ban `token_id` from `room` (CL-BAN-1): a create-only entry, so a ban is written once
    /// and never changed; a ban already there (the same token banned by another node, or a
    /// retried write) is `Ok` too.
    pub async fn put_ban(&self, room: &RoomId, token_id: &[u8; 16]) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => m.put_ban(room, token_id),
            Self::JetStream(j) => j.put_ban(room, token_id).await,
        }
    }

    /// Watch every room's bans, those already written first, then each new one (CL-BAN-1). The
    /// memory store has nothing to watch (`None`): the DS that bans is the only one.
    pub async fn watch_bans(&self) -> Result<Option<BanWatch>, StoreError> {
        match self {
            Self::Memory(_) => Ok(None),
            Self::JetStream(j) => j.watch_bans().await.map(Some),
        }
    }

    /// Write lock change `n` of `room` (CL-LOCK-1): create-only, so each number holds one
    /// change; a number already held is [`LockWrite::Taken`] with the holder's state (the same
    /// state is `Written`, as after a retried write).
    pub async fn write_lock(
        &self,
        room: &RoomId,
        n: u64,
        locked: bool,
    ) -> Result<LockWrite, StoreError> {
        match self {
            Self::Memory(m) => m.write_lock(room, n, locked),
            Self::JetStream(j) => j.write_lock(room, n, locked).await,
        }
    }

    /// Watch every room's lock changes, those already written first, then each new one
    /// (CL-LOCK-1). The memory store has nothing to watch (`None`).
    pub async fn watch_locks(&self) -> Result<Option<LockWatch>, StoreError> {
        match self {
            Self::Memory(_) => Ok(None),
            Self::JetStream(j) => j.watch_locks().await.map(Some),
        }
    }

    /// Show joiner `conn` of node `node` waiting in the record's room to the other nodes
    /// (CL-WAIT-1): a `put`, by the joiner's node only.
    pub async fn put_waiting(
        &self,
        node: &str,
        conn: u64,
        record: &WaitingRecord,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => record.encode().map(drop).map_err(Into::into),
            Self::JetStream(j) => j.put_waiting(node, conn, record).await,
        }
    }

    /// Joiner `conn` of node `node` no longer waits in `room` (CL-WAIT-1).
    pub async fn delete_waiting(
        &self,
        room: &RoomId,
        node: &str,
        conn: u64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::JetStream(j) => j.delete_waiting(room, node, conn).await,
        }
    }

    /// Watch every room's waiting joiners, those waiting now first (CL-WAIT-1). The memory
    /// store has nothing to watch (`None`).
    pub async fn watch_waiting(&self) -> Result<Option<WaitingWatch>, StoreError> {
        match self {
            Self::Memory(_) => Ok(None),
            Self::JetStream(j) => j.watch_waiting().await.map(Some),
        }
    }

    /// Claim `record.term` of its room's home (CL-HOME-1): create-only, so one node holds
    /// each term; a term already held is [`HomeClaim::Lost`] with its holder (the same record
    /// again is `Won`, as after a retried write).
    pub async fn claim_home(&self, record: &HomeRecord) -> Result<HomeClaim, StoreError> {
        match self {
            Self::Memory(m) => m.claim_home(record),
            Self::JetStream(j) => j.claim_home(record).await,
        }
    }

    /// Watch every room's homes, those written first (CL-HOME-1). The memory store has
    /// nothing to watch (`None`).
    pub async fn watch_homes(&self) -> Result<Option<HomeWatch>, StoreError> {
        match self {
            Self::Memory(_) => Ok(None),
            Self::JetStream(j) => j.watch_homes().await.map(Some),
        }
    }

    /// Put this node's heartbeat (CL-NODE-4); the memory store keeps none.
    pub async fn put_node(&self, record: &NodeRecord) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => record.encode().map(drop).map_err(Into::into),
            Self::JetStream(j) => j.put_node(record).await,
        }
    }

    /// Delete this node's heartbeat (a clean exit, CL-NODE-4).
    pub async fn delete_node(&self, node_id: &str) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::JetStream(j) => j.delete_node(node_id).await,
        }
    }

    /// Watch every node's heartbeat, those there now first (CL-NODE-4). The memory store
    /// has nothing to watch (`None`).
    pub async fn watch_nodes(&self) -> Result<Option<NodeWatch>, StoreError> {
        match self {
            Self::Memory(_) => Ok(None),
            Self::JetStream(j) => j.watch_nodes().await.map(Some),
        }
    }

    /// Which implementation this is, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::JetStream(_) => "jetstream",
        }
    }
}

/// The decision every implementation makes once the key's holder is known: our own commit
/// (same hash) is a win, anything else is the winner.
fn decide(ours: &CommitRecord, holder: CommitRecord) -> Sequenced {
    if holder.hash() == ours.hash() {
        Sequenced::Won
    } else {
        Sequenced::Lost { winner: holder }
    }
}
