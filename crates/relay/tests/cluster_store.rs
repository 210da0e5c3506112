//! The cluster's room store (spec/cluster.md): commit sequencing in memory and on a real
//! `nats-server -js`, with racing nodes, an unreachable server and tampered entries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use blindcall_relay::RoomId;
use blindcall_relay::store::CommitWatch;
use blindcall_relay::store::{
    CommitRecord, CorruptEntry, DEFAULT_BUCKET, JetStreamConfig, RoomStore, Sequenced, StoreError,
    StoreOp, commit_key,
};
use nats::{NatsCluster, NatsServer};
use tokio::sync::Barrier;

const RACERS: usize = 16;
const ROUNDS: u64 = 8;

fn room(name: &str) -> RoomId {
    RoomId(name.as_bytes().to_vec())
}

fn config(server: &NatsServer) -> JetStreamConfig {
    let mut cfg = JetStreamConfig::new(server.url());
    cfg.op_timeout = Duration::from_secs(3);
    cfg
}

/// `RACERS` claims with distinct commits for each of `ROUNDS` epochs of one room, all released
/// at once; each claimer uses its own store handle. Checks one winner per epoch and that every
/// loser was handed exactly the winner's commit.
async fn race(stores: Vec<RoomStore>, room: RoomId) {
    let stores: Vec<Arc<RoomStore>> = stores.into_iter().map(Arc::new).collect();
    for epoch in 1..=ROUNDS {
        let barrier = Arc::new(Barrier::new(stores.len()));
        let mut tasks = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            let (store, barrier, room) = (store.clone(), barrier.clone(), room.clone());
            tasks.push(tokio::spawn(async move {
                let record =
                    CommitRecord::new(room, epoch, format!("commit {epoch} by {i}").into_bytes());
                barrier.wait().await;
                let outcome = store.sequence_commit(&record).await.unwrap();
                (record, outcome)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let winners: Vec<&CommitRecord> = results
            .iter()
            .filter(|(_, o)| *o == Sequenced::Won)
            .map(|(r, _)| r)
            .collect();
        assert_eq!(winners.len(), 1, "epoch {epoch}: {} winners", winners.len());
        let winner = winners[0];
        for (record, outcome) in &results {
            match outcome {
                Sequenced::Won => assert_eq!(record, winner),
                Sequenced::Lost { winner: seen } => {
                    assert_eq!(
                        seen, winner,
                        "a loser of epoch {epoch} was shown another commit"
                    );
                    assert_eq!(seen.commit(), winner.commit());
                }
            }
        }
        // Any handle reads the same winner afterwards.
        for store in &stores {
            let stored = store.sequenced_commit(&room, epoch).await.unwrap();
            assert_eq!(stored.as_ref(), Some(winner));
        }
    }
}

// covers: CL-STORE-1
#[test]
fn the_default_store_is_in_memory_and_needs_nothing_else() {
    assert_eq!(RoomStore::default().kind(), "memory");
}

// covers: CL-SEQ-1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_one_winner_per_epoch_among_concurrent_claims() {
    let store = RoomStore::default();
    race(vec![store; RACERS], room("memory-race")).await;
}

// covers: CL-SEQ-1, CL-KEY-1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_one_winner_per_epoch_among_nodes_on_separate_connections() {
    let Some(server) = NatsServer::start_or_skip("jetstream_one_winner_per_epoch") else {
        return;
    };
    let mut stores = Vec::new();
    for _ in 0..RACERS {
        stores.push(RoomStore::jetstream(config(&server)).await.unwrap());
    }
    assert_eq!(stores[0].kind(), "jetstream");
    race(stores, room("jetstream-race")).await;

    // The winner sits under the documented key of the documented bucket, as a record.
    let client = async_nats::connect(server.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(DEFAULT_BUCKET)
        .await
        .unwrap();
    let raw = kv
        .get(commit_key(&room("jetstream-race"), 1))
        .await
        .unwrap()
        .expect("epoch 1 under its key");
    let record = CommitRecord::decode(&raw, &room("jetstream-race"), 1).unwrap();
    assert!(record.commit().starts_with(b"commit 1 by "));
}

// covers: CL-SEQ-1, CL-SEQ-3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_cluster_of_three_one_winner_per_epoch_with_racers_on_every_node() {
    let Some(cluster) = NatsCluster::start_or_skip("jetstream_cluster_of_three", 3) else {
        return;
    };
    let urls: Vec<String> = cluster.nodes.iter().map(NatsServer::url).collect();
    let config = |i: usize| {
        let mut cfg = JetStreamConfig::new(urls[i % urls.len()].clone());
        cfg.replicas = 3;
        cfg.op_timeout = Duration::from_secs(5);
        cfg
    };
    // The first store creates the replicated bucket once the cluster has elected its
    // JetStream leader.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        match RoomStore::jetstream(config(0)).await {
            Ok(store) => break store,
            Err(e) if Instant::now() < deadline => {
                eprintln!("cluster not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the 3-node cluster never served JetStream: {e}"),
        }
    };
    let mut stores = vec![first];
    for i in 1..RACERS {
        stores.push(RoomStore::jetstream(config(i)).await.unwrap());
    }
    race(stores, room("cluster-race")).await;
}

// covers: CL-SEQ-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_claim_of_the_same_commit_wins_again() {
    let server = NatsServer::start_or_skip("a_retried_claim_of_the_same_commit_wins_again");
    let mut stores = vec![RoomStore::default()];
    if let Some(server) = &server {
        stores.push(RoomStore::jetstream(config(server)).await.unwrap());
    }
    for store in stores {
        let mine = CommitRecord::new(room("retry"), 3, b"mine".to_vec());
        let other = CommitRecord::new(room("retry"), 3, b"other".to_vec());
        assert_eq!(store.sequence_commit(&mine).await.unwrap(), Sequenced::Won);
        assert_eq!(
            store.sequence_commit(&mine).await.unwrap(),
            Sequenced::Won,
            "{}: the same commit again is still the winner",
            store.kind()
        );
        assert_eq!(
            store.sequence_commit(&other).await.unwrap(),
            Sequenced::Lost {
                winner: mine.clone()
            }
        );
        // Epochs and rooms are independent keys.
        let next = CommitRecord::new(room("retry"), 4, b"other".to_vec());
        assert_eq!(store.sequence_commit(&next).await.unwrap(), Sequenced::Won);
        let elsewhere = CommitRecord::new(room("retry-2"), 3, b"other".to_vec());
        assert_eq!(
            store.sequence_commit(&elsewhere).await.unwrap(),
            Sequenced::Won
        );
        // A room id no token carries is refused before anything is written.
        let bad = CommitRecord::new(RoomId(Vec::new()), 3, b"x".to_vec());
        assert!(matches!(
            store.sequence_commit(&bad).await,
            Err(StoreError::Encode(_))
        ));
    }
}

// covers: CL-FAIL-1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_a_typed_error_and_sequences_nothing() {
    let Some(mut server) = NatsServer::start_or_skip("an_unreachable_store_is_a_typed_error")
    else {
        return;
    };

    // No server at all: connecting fails closed, quickly.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = JetStreamConfig::new(format!("nats://127.0.0.1:{dead}"));
    cfg.op_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = RoomStore::jetstream(cfg).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unreachable {
                op: StoreOp::Connect
            } | StoreError::Timeout {
                op: StoreOp::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A URL that does not parse is a configuration error, not an outage.
    let err = RoomStore::jetstream(JetStreamConfig::new("nats://[::1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Backend {
                op: StoreOp::Connect,
                ..
            }
        ),
        "{err:?}"
    );

    // Connected, then the server dies: claims and reads fail with a typed error in bounded
    // time; none is sequenced.
    let store = RoomStore::jetstream(config(&server)).await.unwrap();
    let before = CommitRecord::new(room("outage"), 1, b"before".to_vec());
    assert_eq!(
        store.sequence_commit(&before).await.unwrap(),
        Sequenced::Won
    );
    server.kill();
    let during = CommitRecord::new(room("outage"), 2, b"during".to_vec());
    let started = Instant::now();
    let err = store.sequence_commit(&during).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unreachable { op: StoreOp::Claim }
                | StoreError::Timeout {
                    op: StoreOp::Claim,
                    ..
                }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = store
        .sequenced_commit(&room("outage"), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unreachable { op: StoreOp::Read }
                | StoreError::Timeout {
                    op: StoreOp::Read,
                    ..
                }
        ),
        "{err:?}"
    );
    drop(store);

    // Back up (same store directory): epoch 1 survived, epoch 2 was never sequenced.
    server.restart();
    let store = RoomStore::jetstream(config(&server)).await.unwrap();
    assert_eq!(
        store.sequenced_commit(&room("outage"), 1).await.unwrap(),
        Some(before)
    );
    assert_eq!(
        store.sequenced_commit(&room("outage"), 2).await.unwrap(),
        None
    );
    let after = CommitRecord::new(room("outage"), 2, b"after".to_vec());
    assert_eq!(store.sequence_commit(&after).await.unwrap(), Sequenced::Won);
}

// covers: CL-FAIL-1, CL-SEQ-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_the_store_does_not_answer_times_out_and_its_retry_learns_the_outcome() {
    let Some(server) = NatsServer::start_or_skip("a_claim_the_store_does_not_answer") else {
        return;
    };
    let mut cfg = config(&server);
    cfg.op_timeout = Duration::from_millis(500);
    let store = RoomStore::jetstream(cfg).await.unwrap();
    let r = room("frozen");
    let mine = CommitRecord::new(r.clone(), 1, b"mine".to_vec());

    // The server is frozen: the connection looks alive, the claim goes out, no answer comes.
    server.pause();
    let started = Instant::now();
    let err = store.sequence_commit(&mine).await.unwrap_err();
    let took = started.elapsed();
    server.resume();
    assert!(
        matches!(
            err,
            StoreError::Timeout {
                op: StoreOp::Claim,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");

    // The write may have landed once the server woke up: retrying the same commit is
    // answered `Won` either way, and a different commit for the epoch loses to it.
    assert_eq!(store.sequence_commit(&mine).await.unwrap(), Sequenced::Won);
    let other = CommitRecord::new(r.clone(), 1, b"other".to_vec());
    assert_eq!(
        store.sequence_commit(&other).await.unwrap(),
        Sequenced::Lost { winner: mine }
    );
}

// covers: CL-REC-1, CL-KEY-1, CL-SEQ-3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_foreign_entry_is_refused_with_its_reason() {
    let Some(server) = NatsServer::start_or_skip("a_corrupt_or_foreign_entry_is_refused") else {
        return;
    };
    let store = RoomStore::jetstream(config(&server)).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let kv: kv::Store = async_nats::jetstream::new(client)
        .get_key_value(DEFAULT_BUCKET)
        .await
        .unwrap();
    let r = room("tampered");

    // Another application's bytes.
    kv.put(commit_key(&r, 1), b"{\"hello\":\"world\"}".to_vec().into())
        .await
        .unwrap();
    // A valid record of another room, copied under this room's key.
    let foreign = CommitRecord::new(room("elsewhere"), 2, b"c".to_vec());
    kv.put(commit_key(&r, 2), foreign.encode().unwrap().into())
        .await
        .unwrap();
    // A record whose commit was altered after hashing.
    let mut altered = CommitRecord::new(r.clone(), 3, b"commit".to_vec())
        .encode()
        .unwrap();
    // The commit's last byte: the record ends with its (empty) GroupInfo and Welcome, four
    // length bytes each.
    let last_of_commit = altered.len() - 9;
    altered[last_of_commit] ^= 0x01;
    kv.put(commit_key(&r, 3), altered.into()).await.unwrap();
    // A winner deleted behind the relay's back.
    let won = CommitRecord::new(r.clone(), 4, b"won".to_vec());
    assert_eq!(store.sequence_commit(&won).await.unwrap(), Sequenced::Won);
    kv.delete(commit_key(&r, 4)).await.unwrap();
    // A truncated record.
    let whole = CommitRecord::new(r.clone(), 5, b"commit".to_vec())
        .encode()
        .unwrap();
    kv.put(commit_key(&r, 5), whole[..whole.len() - 2].to_vec().into())
        .await
        .unwrap();

    let expected = [
        (1, CorruptEntry::Foreign),
        (2, CorruptEntry::WrongRoom),
        (3, CorruptEntry::HashMismatch),
        (4, CorruptEntry::Deleted),
        (5, CorruptEntry::Truncated),
    ];
    for (epoch, reason) in expected {
        let claim = CommitRecord::new(r.clone(), epoch, b"honest".to_vec());
        for result in [
            store.sequence_commit(&claim).await.map(|_| ()),
            store.sequenced_commit(&r, epoch).await.map(|_| ()),
        ] {
            match result {
                Err(StoreError::Corrupt { key, reason: got }) => {
                    assert_eq!(got, reason, "epoch {epoch}");
                    assert_eq!(key, commit_key(&r, epoch));
                }
                other => panic!("epoch {epoch}: expected Corrupt({reason:?}), got {other:?}"),
            }
        }
    }
    // The honest claim did not overwrite any of them, and other epochs still work.
    let raw = kv.get(commit_key(&r, 1)).await.unwrap().unwrap();
    assert_eq!(&raw[..], b"{\"hello\":\"world\"}");
    let next = CommitRecord::new(r.clone(), 6, b"honest".to_vec());
    assert_eq!(store.sequence_commit(&next).await.unwrap(), Sequenced::Won);
}

// covers: CL-FOLLOW-5, CL-REC-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_watch_sees_every_rooms_winners_in_order_and_refuses_corrupt_entries() {
    let Some(server) = NatsServer::start_or_skip("the_commit_watch_sees_every_rooms_winners")
    else {
        return;
    };
    let writer = RoomStore::jetstream(config(&server)).await.unwrap();
    let watcher = RoomStore::jetstream(config(&server)).await.unwrap();
    let mut watch = watcher
        .watch_commits()
        .await
        .unwrap()
        .expect("JetStream watches");
    let (r1, r2) = (room("watched-1"), room("watched-2"));
    let records = [
        CommitRecord::new(r1.clone(), 0, b"c0".to_vec())
            .with_group_info(b"gi1".to_vec(), b"w".to_vec()),
        CommitRecord::new(r2.clone(), 0, b"d0".to_vec()),
        CommitRecord::new(r1.clone(), 1, b"c1".to_vec()).with_group_info(b"gi2".to_vec(), vec![]),
    ];
    for rec in &records {
        assert_eq!(writer.sequence_commit(rec).await.unwrap(), Sequenced::Won);
    }
    // A losing claim writes nothing: the watch sees each epoch's winner once.
    let loser = CommitRecord::new(r1.clone(), 1, b"other".to_vec());
    assert!(matches!(
        writer.sequence_commit(&loser).await.unwrap(),
        Sequenced::Lost { .. }
    ));
    for (i, rec) in records.iter().enumerate() {
        let got = next(&mut watch, &format!("winner {i}")).await.unwrap();
        assert_eq!(&got, rec, "winner {i}, with its GroupInfo and Welcome");
    }
    // A corrupt entry is refused by its reason, and the watch goes on.
    let client = async_nats::connect(server.url()).await.unwrap();
    let kv: kv::Store = async_nats::jetstream::new(client)
        .get_key_value(DEFAULT_BUCKET)
        .await
        .unwrap();
    kv.put(commit_key(&r1, 2), b"junk".to_vec().into())
        .await
        .unwrap();
    match next(&mut watch, "the corrupt entry").await {
        Err(StoreError::Corrupt { key, reason }) => {
            assert_eq!(key, commit_key(&r1, 2));
            assert_eq!(reason, CorruptEntry::Foreign);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let after = CommitRecord::new(r2.clone(), 1, b"d1".to_vec());
    assert_eq!(
        writer.sequence_commit(&after).await.unwrap(),
        Sequenced::Won
    );
    assert_eq!(next(&mut watch, "the next winner").await.unwrap(), after);
    // The memory store has nothing to watch.
    assert!(
        RoomStore::default()
            .watch_commits()
            .await
            .unwrap()
            .is_none()
    );
}

/// The watch's next item, within 5 s (named in the panic otherwise).
async fn next(watch: &mut CommitWatch, what: &str) -> Result<CommitRecord, StoreError> {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("the watch ended before {what}"))
}

// covers: CL-GEN-1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_genesis_is_created_once_across_nodes_and_a_tampered_one_is_refused() {
    use blindcall_relay::store::{Genesis, GenesisRecord, genesis_key};
    let Some(server) = NatsServer::start_or_skip("a_rooms_genesis_is_created_once") else {
        return;
    };
    // Eight nodes create one room's group at once: one genesis, every other creation is
    // handed it.
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(RoomStore::jetstream(config(&server)).await.unwrap());
    }
    let r = room("genesis");
    let barrier = Arc::new(Barrier::new(stores.len()));
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (s, r, barrier) = (s.clone(), r.clone(), barrier.clone());
            tokio::spawn(async move {
                let mine = GenesisRecord::new(r, 0, format!("group info {i}").into_bytes());
                barrier.wait().await;
                (mine.clone(), s.create_genesis(&mine).await.unwrap())
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut holders = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (mine, Genesis::Created) => created.push(mine),
            (_, Genesis::Exists { holder }) => holders.push(holder),
        }
    }
    assert_eq!(created.len(), 1, "exactly one creation wins");
    assert!(holders.iter().all(|h| *h == created[0]));
    assert_eq!(
        stores[3].genesis(&r).await.unwrap(),
        Some(created[0].clone())
    );
    // The same genesis again (a retried write) is Created.
    assert_eq!(
        stores[5].create_genesis(&created[0]).await.unwrap(),
        Genesis::Created
    );
    assert_eq!(
        stores[0].genesis(&room("no group yet")).await.unwrap(),
        None
    );

    // Tampered entries are refused by reason, by reads and creations alike.
    let client = async_nats::connect(server.url()).await.unwrap();
    let kv: kv::Store = async_nats::jetstream::new(client)
        .get_key_value(DEFAULT_BUCKET)
        .await
        .unwrap();
    let foreign = room("foreign genesis");
    kv.put(genesis_key(&foreign), b"junk".to_vec().into())
        .await
        .unwrap();
    let moved = room("moved genesis");
    kv.put(genesis_key(&moved), created[0].encode().unwrap().into())
        .await
        .unwrap();
    let deleted = room("deleted genesis");
    let g = GenesisRecord::new(deleted.clone(), 0, b"gi".to_vec());
    assert_eq!(
        stores[0].create_genesis(&g).await.unwrap(),
        Genesis::Created
    );
    kv.delete(genesis_key(&deleted)).await.unwrap();
    for (r, reason) in [
        (foreign, CorruptEntry::Foreign),
        (moved, CorruptEntry::WrongRoom),
        (deleted, CorruptEntry::Deleted),
    ] {
        let honest = GenesisRecord::new(r.clone(), 0, b"honest".to_vec());
        for result in [
            stores[1].genesis(&r).await.map(|_| ()),
            stores[1].create_genesis(&honest).await.map(|_| ()),
        ] {
            match result {
                Err(StoreError::Corrupt { key, reason: got }) => {
                    assert_eq!((key, got), (genesis_key(&r), reason));
                }
                other => panic!("expected Corrupt({reason:?}), got {other:?}"),
            }
        }
    }
}
