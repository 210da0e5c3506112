//! The JetStream store: NATS JetStream KV, shared by every relay node of a cluster.
//!
//! Claims are create-only writes: a publish to the key's subject with
//! `Nats-Expected-Last-Subject-Sequence: 0`, which the server accepts for exactly one writer
//! (what `Store::create` sends first). Never `update` with an expected revision above 0: on a
//! clustered nats-server 2.9.10 several writers can win it (nats-server#4320). For the same
//! reason the library's `create`, which re-creates a deleted key through such an `update`, is
//! not used: a deleted commit key is refused as tampering ([`CorruptEntry::Deleted`]).

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::stream::StorageType;
use async_nats::{Client, ConnectErrorKind, ConnectOptions, connection::State};

use super::{CommitRecord, CorruptEntry, Sequenced, StoreError, StoreOp, decide};
use crate::ds::RoomId;

/// The default bucket name.
pub const DEFAULT_BUCKET: &str = "blindcall_rooms";
/// The default time allowed for one store operation.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach the JetStream store.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222` (comma-separated for several).
    pub url: String,
    /// KV bucket name (stream `KV_<bucket>`).
    pub bucket: String,
    /// Time allowed for each operation (connect included); beyond it the operation fails
    /// with [`StoreError::Timeout`].
    pub op_timeout: Duration,
    /// Stream replicas when the relay creates the bucket (3 on a 3-node cluster).
    pub replicas: usize,
    /// KV bucket of the nodes' heartbeats (CL-NODE-4), created like the rooms bucket.
    pub nodes_bucket: String,
}

impl JetStreamConfig {
    /// The default bucket, a 2 s operation timeout, one replica.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            bucket: DEFAULT_BUCKET.to_owned(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            replicas: 1,
            nodes_bucket: super::DEFAULT_NODES_BUCKET.to_owned(),
        }
    }
}

/// The KV key of the commit sequenced for (`room`, `epoch`):
/// `room.<hex room id>.epoch.<decimal epoch>.commit` (CL-KEY-1).
pub fn commit_key(room: &RoomId, epoch: u64) -> String {
    format!("room.{}.epoch.{epoch}.commit", hex::encode(&room.0))
}

/// The keys of every room's commits, for a watch (`*` is one token).
pub const COMMIT_KEYS: &str = "room.*.epoch.*.commit";

/// The (room, epoch) a commit key names, if it is one (`room.<hex>.epoch.<e>.commit`).
pub fn parse_commit_key(key: &str) -> Option<(RoomId, u64)> {
    let mut parts = key.split('.');
    let (Some("room"), Some(room), Some("epoch"), Some(epoch), Some("commit"), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    // Only the canonical spelling: lower-case hex, a decimal epoch without leading zeros.
    let room = hex::decode(room).ok().filter(|r| hex::encode(r) == room)?;
    let epoch: u64 = epoch
        .parse()
        .ok()
        .filter(|e: &u64| e.to_string() == epoch)?;
    Some((RoomId(room), epoch))
}

/// A KV watch of one kind of entry: each entry it delivers is decoded, or refused by its
/// reason (a corrupt entry is refused as by reads, CL-REC-1; the watch goes on). Built on the
/// KV watch of async-nats 0.40, which the client re-creates by itself after a reconnect.
pub struct KvWatch<T> {
    watch: std::pin::Pin<Box<kv::Watch>>,
    decode: fn(&kv::Entry) -> Result<T, StoreError>,
}

impl<T> std::fmt::Debug for KvWatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvWatch")
            .field("of", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T> KvWatch<T> {
    fn new(watch: kv::Watch, decode: fn(&kv::Entry) -> Result<T, StoreError>) -> Self {
        Self {
            watch: Box::pin(watch),
            decode,
        }
    }

    /// The next entry decoded, or why the entry seen is not one. `None` when the watch ended.
    pub async fn next(&mut self) -> Option<Result<T, StoreError>> {
        let entry =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(self.watch.as_mut(), cx))
                .await?;
        Some(match entry {
            Ok(entry) => (self.decode)(&entry),
            Err(e) => Err(backend(StoreOp::Watch)(Box::new(e))),
        })
    }
}

/// The commits sequenced from the moment the watch started, every room's, in the order the
/// store took them (so each room's in epoch order): an ordered push consumer on
/// `$KV.<bucket>.room.*.epoch.*.commit` delivering new entries only, resuming after the last
/// entry delivered when the client reconnects.
pub type CommitWatch = KvWatch<CommitRecord>;

/// Every room's bans (room, token id): those written before the watch started, then each new
/// one (`$KV.<bucket>.room.*.ban.*` with history), CL-BAN-1.
pub type BanWatch = KvWatch<(RoomId, [u8; 16])>;

/// Every room's lock changes (room, number, locked): those written before the watch started,
/// then each new one (`$KV.<bucket>.room.*.lock.*` with history), CL-LOCK-1.
pub type LockWatch = KvWatch<(RoomId, u64, bool)>;

/// Every room's waiting joiners: those waiting when the watch started, then each change
/// (`$KV.<bucket>.room.*.waiting.*.*` with history), CL-WAIT-1.
pub type WaitingWatch = KvWatch<WaitingChange>;

/// Every node's heartbeat: those there when the watch started, then each change (the nodes
/// bucket with history), CL-NODE-4.
pub type NodeWatch = KvWatch<NodeChange>;

/// Every room's homes: those written before the watch started, then each new one
/// (`$KV.<bucket>.room.*.home.*` with history), CL-HOME-1.
pub type HomeWatch = KvWatch<super::HomeRecord>;

/// A change of a room's waiting joiners seen by [`WaitingWatch`].
#[derive(Debug, Clone)]
pub struct WaitingChange {
    /// The room.
    pub room: RoomId,
    /// The joiner's node.
    pub node: String,
    /// The joiner's connection on its node.
    pub conn: u64,
    /// The entry (`None`: the joiner no longer waits).
    pub record: Option<super::WaitingRecord>,
}

/// A change of a node's heartbeat seen by [`NodeWatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    /// The node.
    pub node_id: String,
    /// Its heartbeat (`None`: deleted, the node exited cleanly).
    pub record: Option<super::NodeRecord>,
}

/// `entry`'s key refused for `reason`.
fn corrupt_at(entry: &kv::Entry) -> impl Fn(CorruptEntry) -> StoreError + '_ {
    |reason| StoreError::Corrupt {
        key: entry.key.clone(),
        reason,
    }
}

fn decode_ban(entry: &kv::Entry) -> Result<(RoomId, [u8; 16]), StoreError> {
    let corrupt = corrupt_at(entry);
    let (room, token) = super::parse_ban_key(&entry.key).ok_or(corrupt(CorruptEntry::Foreign))?;
    if entry.operation != kv::Operation::Put {
        return Err(corrupt(CorruptEntry::Deleted));
    }
    super::decode_ban(&entry.value, &room, &token)
        .map(|()| (room, token))
        .map_err(corrupt)
}

fn decode_lock(entry: &kv::Entry) -> Result<(RoomId, u64, bool), StoreError> {
    let corrupt = corrupt_at(entry);
    let (room, n) = super::parse_lock_key(&entry.key).ok_or(corrupt(CorruptEntry::Foreign))?;
    if entry.operation != kv::Operation::Put {
        return Err(corrupt(CorruptEntry::Deleted));
    }
    super::decode_lock(&entry.value, &room, n)
        .map(|locked| (room, n, locked))
        .map_err(corrupt)
}

fn decode_waiting(entry: &kv::Entry) -> Result<WaitingChange, StoreError> {
    let corrupt = corrupt_at(entry);
    let (room, node, conn) =
        super::parse_waiting_key(&entry.key).ok_or(corrupt(CorruptEntry::Foreign))?;
    let record = if entry.operation == kv::Operation::Put {
        Some(super::WaitingRecord::decode(&entry.value, &room).map_err(corrupt)?)
    } else {
        None
    };
    Ok(WaitingChange {
        room,
        node,
        conn,
        record,
    })
}

fn decode_node(entry: &kv::Entry) -> Result<NodeChange, StoreError> {
    let corrupt = corrupt_at(entry);
    let node_id = super::parse_node_key(&entry.key).ok_or(corrupt(CorruptEntry::Foreign))?;
    let record = if entry.operation == kv::Operation::Put {
        Some(super::NodeRecord::decode(&entry.value, &node_id).map_err(corrupt)?)
    } else {
        None
    };
    Ok(NodeChange { node_id, record })
}

fn decode_home(entry: &kv::Entry) -> Result<super::HomeRecord, StoreError> {
    let corrupt = corrupt_at(entry);
    let (room, term) = super::parse_home_key(&entry.key).ok_or(corrupt(CorruptEntry::Foreign))?;
    if entry.operation != kv::Operation::Put {
        return Err(corrupt(CorruptEntry::Deleted));
    }
    super::HomeRecord::decode(&entry.value, &room, term).map_err(corrupt)
}

fn decode_entry(entry: &kv::Entry) -> Result<CommitRecord, StoreError> {
    let corrupt = corrupt_at(entry);
    let (room, epoch) = parse_commit_key(&entry.key).ok_or(corrupt(CorruptEntry::Foreign))?;
    if entry.operation != kv::Operation::Put {
        return Err(corrupt(CorruptEntry::Deleted));
    }
    CommitRecord::decode(&entry.value, &room, epoch).map_err(corrupt)
}

/// The KV header that marks a deleted or purged key.
const KV_OPERATION: &str = "KV-Operation";
/// Pause between reads of a key whose create was just refused but which the leader does not
/// show yet (the winner's write is still being applied).
const READ_RETRY: Duration = Duration::from_millis(5);

/// A connection to the JetStream KV bucket. Clones share the connection.
#[derive(Clone)]
pub struct JetStreamStore {
    client: Client,
    kv: kv::Store,
    nodes: kv::Store,
    /// `$KV.<bucket>.`: the stream subject of a key is this plus the key.
    subject_prefix: String,
    op_timeout: Duration,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore")
            .field("state", &self.client.connection_state())
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

/// `fut`, or [`StoreError::Timeout`] after `after`.
async fn within<T>(
    op: StoreOp,
    after: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(after, fut)
        .await
        .unwrap_or(Err(StoreError::Timeout { op, after }))
}

fn backend(op: StoreOp) -> impl FnOnce(async_nats::Error) -> StoreError {
    move |source| StoreError::Backend { op, source }
}

impl JetStreamStore {
    /// Connect and open the bucket, creating it (history 1, file storage) when missing.
    pub async fn connect(cfg: JetStreamConfig) -> Result<Self, StoreError> {
        let after = cfg.op_timeout;
        let client = within(StoreOp::Connect, after, async {
            ConnectOptions::new()
                .connection_timeout(after)
                .connect(cfg.url.as_str())
                .await
                .map_err(|e| match e.kind() {
                    // Nobody answering at that address (yet).
                    ConnectErrorKind::Dns
                    | ConnectErrorKind::Io
                    | ConnectErrorKind::TimedOut
                    | ConnectErrorKind::MaxReconnects => StoreError::Unreachable {
                        op: StoreOp::Connect,
                    },
                    // Someone answers, but not as configured: a bad URL, credentials or TLS.
                    _ => backend(StoreOp::Connect)(Box::new(e)),
                })
        })
        .await?;
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(after);
        let open = |bucket: String, description: &'static str| {
            let js = js.clone();
            let replicas = cfg.replicas.max(1);
            async move {
                if let Ok(kv) = js.get_key_value(bucket.as_str()).await {
                    return Ok(kv);
                }
                let config = kv::Config {
                    bucket: bucket.clone(),
                    description: description.to_owned(),
                    history: 1,
                    storage: StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                };
                match js.create_key_value(config).await {
                    Ok(kv) => Ok(kv),
                    // Another node may have created it between our get and our create.
                    Err(create) => js
                        .get_key_value(bucket.as_str())
                        .await
                        .map_err(|_| backend(StoreOp::OpenBucket)(Box::new(create))),
                }
            }
        };
        let kv = within(
            StoreOp::OpenBucket,
            after,
            open(cfg.bucket.clone(), "blindcall relay room store"),
        )
        .await?;
        let nodes = within(
            StoreOp::OpenBucket,
            after,
            open(cfg.nodes_bucket.clone(), "blindcall relay node heartbeats"),
        )
        .await?;
        Ok(Self {
            client,
            kv,
            nodes,
            subject_prefix: format!("$KV.{}.", cfg.bucket),
            op_timeout: after,
        })
    }

    fn connected(&self, op: StoreOp) -> Result<(), StoreError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            State::Pending | State::Disconnected => Err(StoreError::Unreachable { op }),
        }
    }

    /// Claim the record's (room, epoch); see [`RoomStore::sequence_commit`](super::RoomStore::sequence_commit).
    pub async fn sequence_commit(&self, record: &CommitRecord) -> Result<Sequenced, StoreError> {
        let value = record.encode()?;
        // Not connected: publish nothing (a publish buffered now could land after we answered).
        self.connected(StoreOp::Claim)?;
        let key = commit_key(record.room(), record.epoch());
        let after = self.op_timeout;
        let created = within(StoreOp::Claim, after, async {
            match self.kv.update(key.as_str(), value.into(), 0).await {
                Ok(_revision) => Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) if e.kind() == UpdateErrorKind::TimedOut => Err(StoreError::Timeout {
                    op: StoreOp::Claim,
                    after,
                }),
                Err(e) => Err(backend(StoreOp::Claim)(Box::new(e))),
            }
        })
        .await?;
        if created {
            return Ok(Sequenced::Won);
        }
        // Refused: the key exists. The stream leader refused it, so it holds the winner or is
        // applying it; read it from the leader until it shows.
        let deadline = Instant::now() + after;
        loop {
            if let Some(holder) = self.sequenced_commit(record.room(), record.epoch()).await? {
                return Ok(decide(record, holder));
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout {
                    op: StoreOp::Read,
                    after,
                });
            }
            tokio::time::sleep(READ_RETRY).await;
        }
    }

    /// Watch every room's commit keys from now on ([`CommitWatch`]).
    pub async fn watch_commits(&self) -> Result<CommitWatch, StoreError> {
        self.connected(StoreOp::Watch)?;
        within(StoreOp::Watch, self.op_timeout, async {
            self.kv
                .watch(COMMIT_KEYS)
                .await
                .map(|w| KvWatch::new(w, decode_entry))
                .map_err(|e| backend(StoreOp::Watch)(Box::new(e)))
        })
        .await
    }

    /// Ban `token_id` from `room`: a create-only write; a ban already there is `Ok`.
    pub async fn put_ban(&self, room: &RoomId, token_id: &[u8; 16]) -> Result<(), StoreError> {
        let value = super::encode_ban(room, token_id)?;
        self.connected(StoreOp::Claim)?;
        let key = super::ban_key(room, token_id);
        let after = self.op_timeout;
        within(StoreOp::Claim, after, async {
            match self.kv.update(key.as_str(), value.into(), 0).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
                Err(e) if e.kind() == UpdateErrorKind::TimedOut => Err(StoreError::Timeout {
                    op: StoreOp::Claim,
                    after,
                }),
                Err(e) => Err(backend(StoreOp::Claim)(Box::new(e))),
            }
        })
        .await
    }

    /// Write lock change `n` of `room`: a create-only write; a number already held is read
    /// back from the stream's leader and answered [`LockWrite::Taken`](super::LockWrite) when
    /// its state differs.
    pub async fn write_lock(
        &self,
        room: &RoomId,
        n: u64,
        locked: bool,
    ) -> Result<super::LockWrite, StoreError> {
        let value = super::encode_lock(room, n, locked)?;
        self.connected(StoreOp::Claim)?;
        let key = super::lock_key(room, n);
        let after = self.op_timeout;
        let created = within(StoreOp::Claim, after, async {
            match self.kv.update(key.as_str(), value.into(), 0).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) if e.kind() == UpdateErrorKind::TimedOut => Err(StoreError::Timeout {
                    op: StoreOp::Claim,
                    after,
                }),
                Err(e) => Err(backend(StoreOp::Claim)(Box::new(e))),
            }
        })
        .await?;
        if created {
            return Ok(super::LockWrite::Written);
        }
        let subject = format!("{}{key}", self.subject_prefix);
        let deadline = Instant::now() + after;
        loop {
            let message = within(StoreOp::Read, after, async {
                match self
                    .kv
                    .stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                {
                    Ok(m) => Ok(Some(m)),
                    Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                        Ok(None)
                    }
                    Err(e) => Err(backend(StoreOp::Read)(Box::new(e))),
                }
            })
            .await?;
            if let Some(message) = message {
                let deleted = message
                    .headers
                    .get(KV_OPERATION)
                    .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
                if deleted {
                    return Err(StoreError::Corrupt {
                        key,
                        reason: CorruptEntry::Deleted,
                    });
                }
                let held = super::decode_lock(&message.payload, room, n)
                    .map_err(|reason| StoreError::Corrupt { key, reason })?;
                return Ok(if held == locked {
                    super::LockWrite::Written
                } else {
                    super::LockWrite::Taken { locked: held }
                });
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout {
                    op: StoreOp::Read,
                    after,
                });
            }
            tokio::time::sleep(READ_RETRY).await;
        }
    }

    /// Watch every room's lock changes, those already written first ([`LockWatch`]).
    pub async fn watch_locks(&self) -> Result<LockWatch, StoreError> {
        self.connected(StoreOp::Watch)?;
        within(StoreOp::Watch, self.op_timeout, async {
            self.kv
                .watch_with_history(super::LOCK_KEYS)
                .await
                .map(|w| KvWatch::new(w, decode_lock))
                .map_err(|e| backend(StoreOp::Watch)(Box::new(e)))
        })
        .await
    }

    /// Put joiner `conn` of node `node` as waiting (its node is the entry's one writer).
    pub async fn put_waiting(
        &self,
        node: &str,
        conn: u64,
        record: &super::WaitingRecord,
    ) -> Result<(), StoreError> {
        let value = record.encode()?;
        self.connected(StoreOp::Claim)?;
        let key = super::waiting_key(&record.room, node, conn);
        within(StoreOp::Claim, self.op_timeout, async {
            self.kv
                .put(key.as_str(), value.into())
                .await
                .map(drop)
                .map_err(|e| backend(StoreOp::Claim)(Box::new(e)))
        })
        .await
    }

    /// Delete joiner `conn` of node `node` from `room`'s waiting joiners.
    pub async fn delete_waiting(
        &self,
        room: &RoomId,
        node: &str,
        conn: u64,
    ) -> Result<(), StoreError> {
        self.connected(StoreOp::Claim)?;
        let key = super::waiting_key(room, node, conn);
        within(StoreOp::Claim, self.op_timeout, async {
            self.kv
                .delete(key.as_str())
                .await
                .map_err(|e| backend(StoreOp::Claim)(Box::new(e)))
        })
        .await
    }

    /// Watch every room's waiting joiners, those waiting now first ([`WaitingWatch`]).
    pub async fn watch_waiting(&self) -> Result<WaitingWatch, StoreError> {
        self.connected(StoreOp::Watch)?;
        within(StoreOp::Watch, self.op_timeout, async {
            self.kv
                .watch_with_history(super::WAITING_KEYS)
                .await
                .map(|w| KvWatch::new(w, decode_waiting))
                .map_err(|e| backend(StoreOp::Watch)(Box::new(e)))
        })
        .await
    }

    /// Watch every room's bans, those already written first ([`BanWatch`]).
    pub async fn watch_bans(&self) -> Result<BanWatch, StoreError> {
        self.connected(StoreOp::Watch)?;
        within(StoreOp::Watch, self.op_timeout, async {
            self.kv
                .watch_with_history(super::BAN_KEYS)
                .await
                .map(|w| KvWatch::new(w, decode_ban))
                .map_err(|e| backend(StoreOp::Watch)(Box::new(e)))
        })
        .await
    }

    /// The commit sequenced for (`room`, `epoch`), if any, read from the stream's leader (a
    /// direct get may be answered by a replica that does not hold the latest write yet). A
    /// deleted or purged key is [`CorruptEntry::Deleted`]: winners are never removed.
    pub async fn sequenced_commit(
        &self,
        room: &RoomId,
        epoch: u64,
    ) -> Result<Option<CommitRecord>, StoreError> {
        self.connected(StoreOp::Read)?;
        let key = commit_key(room, epoch);
        let subject = format!("{}{key}", self.subject_prefix);
        let after = self.op_timeout;
        let message = within(StoreOp::Read, after, async {
            match self
                .kv
                .stream
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(m) => Ok(Some(m)),
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
                Err(e) => Err(backend(StoreOp::Read)(Box::new(e))),
            }
        })
        .await?;
        let Some(message) = message else {
            return Ok(None);
        };
        let deleted = message
            .headers
            .get(KV_OPERATION)
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
        if deleted {
            return Err(StoreError::Corrupt {
                key,
                reason: CorruptEntry::Deleted,
            });
        }
        CommitRecord::decode(&message.payload, room, epoch)
            .map(Some)
            .map_err(|reason| StoreError::Corrupt { key, reason })
    }

    /// Write `record` as its room's genesis, create-only; see
    /// [`RoomStore::create_genesis`](super::RoomStore::create_genesis).
    pub async fn create_genesis(
        &self,
        record: &super::GenesisRecord,
    ) -> Result<super::Genesis, StoreError> {
        let value = record.encode()?;
        self.connected(StoreOp::Claim)?;
        let key = super::genesis_key(record.room());
        let after = self.op_timeout;
        let created = within(StoreOp::Claim, after, async {
            match self.kv.update(key.as_str(), value.into(), 0).await {
                Ok(_revision) => Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) if e.kind() == UpdateErrorKind::TimedOut => Err(StoreError::Timeout {
                    op: StoreOp::Claim,
                    after,
                }),
                Err(e) => Err(backend(StoreOp::Claim)(Box::new(e))),
            }
        })
        .await?;
        if created {
            return Ok(super::Genesis::Created);
        }
        let deadline = Instant::now() + after;
        loop {
            if let Some(holder) = self.genesis(record.room()).await? {
                return Ok(super::genesis::decide_genesis(record, holder));
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout {
                    op: StoreOp::Read,
                    after,
                });
            }
            tokio::time::sleep(READ_RETRY).await;
        }
    }

    /// `room`'s genesis, if any, read from the stream's leader. A deleted genesis is
    /// [`CorruptEntry::Deleted`]: a room's genesis is never removed while it lives.
    pub async fn genesis(&self, room: &RoomId) -> Result<Option<super::GenesisRecord>, StoreError> {
        self.connected(StoreOp::Read)?;
        let key = super::genesis_key(room);
        let subject = format!("{}{key}", self.subject_prefix);
        let after = self.op_timeout;
        let message = within(StoreOp::Read, after, async {
            match self
                .kv
                .stream
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(m) => Ok(Some(m)),
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
                Err(e) => Err(backend(StoreOp::Read)(Box::new(e))),
            }
        })
        .await?;
        let Some(message) = message else {
            return Ok(None);
        };
        let deleted = message
            .headers
            .get(KV_OPERATION)
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
        if deleted {
            return Err(StoreError::Corrupt {
                key,
                reason: CorruptEntry::Deleted,
            });
        }
        super::GenesisRecord::decode(&message.payload, room)
            .map(Some)
            .map_err(super::genesis::corrupt(key))
    }

    /// The last value under `key` of the rooms bucket read from the stream's leader, if any;
    /// a deleted or purged key is [`CorruptEntry::Deleted`].
    async fn read_leader(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let subject = format!("{}{key}", self.subject_prefix);
        let message = within(StoreOp::Read, self.op_timeout, async {
            match self
                .kv
                .stream
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(m) => Ok(Some(m)),
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
                Err(e) => Err(backend(StoreOp::Read)(Box::new(e))),
            }
        })
        .await?;
        let Some(message) = message else {
            return Ok(None);
        };
        let deleted = message
            .headers
            .get(KV_OPERATION)
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
        if deleted {
            return Err(StoreError::Corrupt {
                key: key.to_owned(),
                reason: CorruptEntry::Deleted,
            });
        }
        Ok(Some(message.payload.to_vec()))
    }

    /// Claim the record's term of its room's home: a create-only write (CL-HOME-1); a term
    /// already held is read back from the stream's leader.
    pub async fn claim_home(
        &self,
        record: &super::HomeRecord,
    ) -> Result<super::HomeClaim, StoreError> {
        let value = record.encode()?;
        self.connected(StoreOp::Claim)?;
        let key = super::home_key(&record.room, record.term);
        let after = self.op_timeout;
        let created = within(StoreOp::Claim, after, async {
            match self.kv.update(key.as_str(), value.into(), 0).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) if e.kind() == UpdateErrorKind::TimedOut => Err(StoreError::Timeout {
                    op: StoreOp::Claim,
                    after,
                }),
                Err(e) => Err(backend(StoreOp::Claim)(Box::new(e))),
            }
        })
        .await?;
        if created {
            return Ok(super::HomeClaim::Won);
        }
        let deadline = Instant::now() + after;
        loop {
            if let Some(bytes) = self.read_leader(&key).await? {
                let holder = super::HomeRecord::decode(&bytes, &record.room, record.term).map_err(
                    |reason| StoreError::Corrupt {
                        key: key.clone(),
                        reason,
                    },
                )?;
                return Ok(if holder == *record {
                    super::HomeClaim::Won
                } else {
                    super::HomeClaim::Lost { holder }
                });
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout {
                    op: StoreOp::Read,
                    after,
                });
            }
            tokio::time::sleep(READ_RETRY).await;
        }
    }

    /// Watch every room's homes, those already written first ([`HomeWatch`]).
    pub async fn watch_homes(&self) -> Result<HomeWatch, StoreError> {
        self.connected(StoreOp::Watch)?;
        within(StoreOp::Watch, self.op_timeout, async {
            self.kv
                .watch_with_history(super::HOME_KEYS)
                .await
                .map(|w| KvWatch::new(w, decode_home))
                .map_err(|e| backend(StoreOp::Watch)(Box::new(e)))
        })
        .await
    }

    /// Put this node's heartbeat (its node is the key's one writer, CL-NODE-4).
    pub async fn put_node(&self, record: &super::NodeRecord) -> Result<(), StoreError> {
        let value = record.encode()?;
        self.connected(StoreOp::Claim)?;
        let key = super::node_key(&record.node_id);
        within(StoreOp::Claim, self.op_timeout, async {
            self.nodes
                .put(key.as_str(), value.into())
                .await
                .map(drop)
                .map_err(|e| backend(StoreOp::Claim)(Box::new(e)))
        })
        .await
    }

    /// Delete this node's heartbeat (a clean exit).
    pub async fn delete_node(&self, node_id: &str) -> Result<(), StoreError> {
        self.connected(StoreOp::Claim)?;
        let key = super::node_key(node_id);
        within(StoreOp::Claim, self.op_timeout, async {
            self.nodes
                .delete(key.as_str())
                .await
                .map_err(|e| backend(StoreOp::Claim)(Box::new(e)))
        })
        .await
    }

    /// Every node's heartbeat and every room's home, epoch and member count, as the store holds
    /// them now (for `blindcall cluster status`; reads by key, not from the stream's leader).
    pub async fn status(&self) -> Result<super::ClusterStatus, StoreError> {
        use std::collections::BTreeMap;
        self.connected(StoreOp::Read)?;
        let after = self.op_timeout;
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut out = super::ClusterStatus::default();
        for key in within(StoreOp::Read, after, keys_of(&self.nodes)).await? {
            let Some(id) = super::parse_node_key(&key) else {
                continue;
            };
            if let Some((value, created_ns)) =
                within(StoreOp::Read, after, entry_of(&self.nodes, &key)).await?
            {
                match super::NodeRecord::decode(&value, &id) {
                    Ok(record) => {
                        let age_ns = now_ns.saturating_sub(u128::try_from(created_ns).unwrap_or(0));
                        let age = Duration::from_nanos(u64::try_from(age_ns).unwrap_or(u64::MAX));
                        out.nodes.push(super::NodeStatus { record, age });
                    }
                    Err(reason) => out.refused.push(format!("{key}: {reason}")),
                }
            }
        }
        // Per room: the highest home term, the highest commit epoch, the genesis.
        let mut homes: BTreeMap<RoomId, u64> = BTreeMap::new();
        let mut epochs: BTreeMap<RoomId, u64> = BTreeMap::new();
        let mut rooms: BTreeMap<RoomId, ()> = BTreeMap::new();
        for key in within(StoreOp::Read, after, keys_of(&self.kv)).await? {
            if let Some((room, term)) = super::parse_home_key(&key) {
                let t = homes.entry(room.clone()).or_insert(term);
                *t = (*t).max(term);
                rooms.insert(room, ());
            } else if let Some((room, epoch)) = parse_commit_key(&key) {
                let e = epochs.entry(room.clone()).or_insert(epoch);
                *e = (*e).max(epoch);
                rooms.insert(room, ());
            } else if let Some(hex_room) = key
                .strip_prefix("room.")
                .and_then(|k| k.strip_suffix(".genesis"))
                && let Ok(room) = hex::decode(hex_room)
            {
                rooms.insert(RoomId(room), ());
            }
        }
        for room in rooms.into_keys() {
            let home = match homes.get(&room) {
                Some(&term) => {
                    let key = super::home_key(&room, term);
                    match within(StoreOp::Read, after, entry_of(&self.kv, &key)).await? {
                        Some((value, _)) => match super::HomeRecord::decode(&value, &room, term) {
                            Ok(h) => Some(h),
                            Err(reason) => {
                                out.refused.push(format!("{key}: {reason}"));
                                None
                            }
                        },
                        None => None,
                    }
                }
                None => None,
            };
            let info = match epochs.get(&room) {
                Some(&e) => match self.sequenced_commit(&room, e).await {
                    Ok(Some(r)) => Some((e.saturating_add(1), r.group_info().map(<[u8]>::to_vec))),
                    Ok(None) => None,
                    Err(err) => {
                        out.refused.push(format!("{}: {err}", commit_key(&room, e)));
                        None
                    }
                },
                None => match self.genesis(&room).await {
                    Ok(Some(g)) => Some((g.epoch(), Some(g.group_info().to_vec()))),
                    Ok(None) => None,
                    Err(err) => {
                        out.refused.push(err.to_string());
                        None
                    }
                },
            };
            let (epoch, members) = match info {
                Some((e, gi)) => (Some(e), gi.and_then(|b| crate::ds::group_info_members(&b))),
                None => (None, None),
            };
            out.rooms.push(super::RoomStatus {
                room,
                home,
                epoch,
                members,
            });
        }
        out.nodes
            .sort_by(|a, b| a.record.node_id.cmp(&b.record.node_id));
        Ok(out)
    }

    /// Watch every node's heartbeat, those there now first ([`NodeWatch`]).
    pub async fn watch_nodes(&self) -> Result<NodeWatch, StoreError> {
        self.connected(StoreOp::Watch)?;
        within(StoreOp::Watch, self.op_timeout, async {
            self.nodes
                .watch_with_history(super::NODE_KEYS)
                .await
                .map(|w| KvWatch::new(w, decode_node))
                .map_err(|e| backend(StoreOp::Watch)(Box::new(e)))
        })
        .await
    }
}

/// Every key of `kv` (none for an empty bucket).
async fn keys_of(kv: &kv::Store) -> Result<Vec<String>, StoreError> {
    let mut keys = match kv.keys().await {
        Ok(k) => Box::pin(k),
        Err(e) => return Err(backend(StoreOp::Read)(Box::new(e))),
    };
    let mut out = Vec::new();
    while let Some(k) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(keys.as_mut(), cx)).await
    {
        match k {
            Ok(k) => out.push(k),
            Err(e) => return Err(backend(StoreOp::Read)(Box::new(e))),
        }
    }
    Ok(out)
}

/// The value of `key` in `kv` and when it was written (Unix nanoseconds, the server's clock),
/// unless deleted.
async fn entry_of(kv: &kv::Store, key: &str) -> Result<Option<(Vec<u8>, i128)>, StoreError> {
    match kv.entry(key).await {
        Ok(Some(e)) if matches!(e.operation, kv::Operation::Put) => {
            Ok(Some((e.value.to_vec(), e.created.unix_timestamp_nanos())))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(backend(StoreOp::Read)(Box::new(e))),
    }
}
