//! The scripted call of `blindcall demo` and the end-to-end tests: an embedded relay and N
//! participants in one process, joining one by one through the waiting room, one leaving,
//! one removed by the host, one whose network drops for 5 s (it resumes by itself), one joining
//! late, all sending synthetic audio and video through the SDK's public API; then a [`Report`]
//! from what everyone recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use blindcall_client::{
    Call, CallStats, EndReason, Event, Events, Invite, InviteCheck, JoinError, JoinOptions,
    MediaMode, Member, Role, VideoSelection,
};

/// The demo call's room.
const ROOM: &str = "demo-room";

/// How long the dropped participant's network is gone.
pub const NETWORK_DROP: Duration = Duration::from_secs(5);

use crate::cluster::{ClusterError, DemoCluster};
use crate::embedded::{EmbeddedError, EmbeddedOptions, EmbeddedRelay};
use crate::live::LiveRow;
use crate::netsim::{FaultyPath, PathState};
use crate::recorder::CallLog;
use crate::report::{self, Fate, Report};
use crate::synthetic::{MediaHook, SyntheticConfig, SyntheticMedia};

/// A participant's synthetic sender id: seeded, no zero byte, so that no 16-byte window of
/// a frame header is a run of zeros that could match any length field by chance.
pub fn sender_id(seed: u64, index: usize) -> u32 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) as u32) | 0x0101_0101
}

/// Names of the participants, in joining order.
pub const NAMES: [&str; 16] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil",
];

/// Largest number of participants.
pub const MAX_PARTICIPANTS: usize = 64;

/// The name of participant `index` (the list above, then `p17`, `p18`, ...).
pub fn name(index: usize) -> String {
    NAMES
        .get(index)
        .map_or_else(|| format!("p{}", index + 1), |n| (*n).to_owned())
}

/// The gallery of participant `index` of `n`: the names of the `k` participants after it in
/// joining order, wrapping around (never itself).
pub fn gallery(index: usize, n: usize, k: usize) -> Vec<String> {
    (1..=k.min(n.saturating_sub(1)))
        .map(|d| name((index + d) % n))
        .collect()
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    /// Participants in total (4..=64): host, joiners, and one late joiner.
    pub participants: usize,
    /// Media time from the host's first frame to the end.
    pub duration: Duration,
    /// Seed of the synthetic sources.
    pub seed: u64,
    /// Bound on every awaited step.
    pub step_timeout: Duration,
    /// Which script to play.
    pub script: Script,
    /// Only the first this many participants talk; the others' audio is silence sent with
    /// discontinuous transmission (a small frame every 400 ms); `None`: everyone talks.
    pub speakers: Option<usize>,
    /// Each participant watches the video of only this many others (the next ones in joining
    /// order, wrapping around), like a gallery of tiles; `None`: everyone's video.
    pub gallery: Option<usize>,
    /// Participants do not sign their media (to measure what signed media costs; the demo
    /// script's checks expect signed media).
    pub unsigned_media: bool,
    /// Run the call on a relay cluster whose room's home node is killed halfway (`None`: one
    /// embedded relay).
    pub cluster: Option<ClusterConfig>,
}

/// `blindcall demo --cluster N`.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// Relay nodes (at least 2).
    pub nodes: usize,
    /// The NATS server's URL; `None`: start a local `nats-server`.
    pub nats: Option<String>,
}

/// The scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Join one by one, one leaves, the host removes one, one joins late (the demo).
    Full,
    /// Benchmark: everyone joins, then steady media for the duration; CPU time is measured
    /// over the media part; plaintexts are not kept (no plaintext check).
    Steady,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        Self {
            participants: 6,
            duration: Duration::from_secs(20),
            seed: 0xb11d_ca11,
            step_timeout: Duration::from_secs(30),
            script: Script::Full,
            speakers: None,
            gallery: None,
            unsigned_media: false,
            cluster: None,
        }
    }
}

/// Why the scenario could not run to the end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The participant count is outside 4..=64.
    #[error("participants must be between 4 and 64, got {0}")]
    Participants(usize),
    /// The relay did not start.
    #[error(transparent)]
    Relay(#[from] EmbeddedError),
    /// The relay cluster did not start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A participant could not join.
    #[error("{name} could not join: {source}")]
    Join {
        /// Who.
        name: String,
        /// Why.
        source: JoinError,
    },
    /// No randomness for the call's invite.
    #[error("the call's invite could not be made")]
    Invite,
    /// Something awaited did not happen in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        timeout: Duration,
    },
    /// A simulated network path could not be set up.
    #[error("network path: {0}")]
    Network(String),
    /// A call request failed.
    #[error("{what}: {source}")]
    Call {
        /// What was asked.
        what: String,
        /// Why.
        source: blindcall_client::CallError,
    },
}

#[derive(Debug, Default)]
struct PState {
    joined: bool,
    join_epoch: u64,
    media: bool,
    epoch: Option<u64>,
    roster: BTreeSet<String>,
    /// The members this participant sees, by name (the demo's names are unique).
    members: BTreeMap<String, Member>,
    ended: Option<EndReason>,
    warnings: Vec<String>,
    /// Lost its connection and has not resumed yet.
    away: bool,
    /// Times it resumed its membership.
    reconnects: u32,
}

#[derive(Default)]
struct World {
    ps: Mutex<BTreeMap<String, PState>>,
    notify: Notify,
}

impl World {
    fn update(&self, name: &str, f: impl FnOnce(&mut PState)) {
        {
            let mut ps = self.ps.lock().unwrap_or_else(|e| e.into_inner());
            f(ps.entry(name.to_owned()).or_default());
        }
        self.notify.notify_waiters();
    }

    async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&BTreeMap<String, PState>) -> bool,
    ) -> Result<(), ScenarioError> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(&self.ps.lock().unwrap_or_else(|e| e.into_inner())) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ScenarioError::Timeout {
                    what: what.to_owned(),
                    timeout,
                });
            }
        }
    }
}

fn active(ps: &BTreeMap<String, PState>) -> impl Iterator<Item = (&String, &PState)> {
    ps.iter().filter(|(_, p)| p.joined && p.ended.is_none())
}

/// Every active member sees exactly `roster` at one common epoch of at least `min_epoch`.
fn settled(ps: &BTreeMap<String, PState>, roster: &BTreeSet<String>, min_epoch: u64) -> bool {
    let mut epoch = None;
    for (_, p) in active(ps) {
        if p.roster != *roster || p.epoch.is_none_or(|e| e < min_epoch) {
            return false;
        }
        if epoch.is_some_and(|e| Some(e) != p.epoch) {
            return false;
        }
        epoch = p.epoch;
    }
    active(ps).count() == roster.len()
}

fn max_epoch(ps: &BTreeMap<String, PState>) -> u64 {
    active(ps).filter_map(|(_, p)| p.epoch).max().unwrap_or(0)
}

fn spawn_events(
    world: Arc<World>,
    name: String,
    call: Call,
    mut events: Events,
    host: bool,
    media: MediaHook,
) {
    // The scripted call checks frames through the recorder; nobody reads them here.
    drop(events.take_frames());
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            media.on_event(&e);
            match e {
                // Every demo joiner proves the call's invite; anything else is never approved.
                Event::JoinRequested {
                    request,
                    invite: InviteCheck::Valid,
                    ..
                } if host => {
                    let call = call.clone();
                    tokio::spawn(async move {
                        let _ = call.approve(request).await;
                    });
                }
                Event::JoinRefused {
                    identity, reason, ..
                } => world.update(&name, |p| {
                    p.warnings
                        .push(format!("refused a join request ({identity:?}): {reason:?}"))
                }),
                Event::Joined { epoch, members } => world.update(&name, |p| {
                    p.joined = true;
                    p.join_epoch = epoch;
                    p.epoch = Some(epoch);
                    p.roster = members.iter().map(|m| m.identity.to_string()).collect();
                    p.members = members
                        .into_iter()
                        .map(|m| (m.identity.to_string(), m))
                        .collect();
                }),
                Event::MediaConnected => world.update(&name, |p| p.media = true),
                Event::EpochChanged { epoch, .. } => world.update(&name, |p| p.epoch = Some(epoch)),
                Event::MembersJoined { members, .. } => world.update(&name, |p| {
                    for m in members {
                        p.roster.insert(m.identity.to_string());
                        p.members.insert(m.identity.to_string(), m);
                    }
                }),
                Event::MembersLeft { members, .. } => world.update(&name, |p| {
                    for m in &members {
                        p.roster.remove(&*m.identity);
                        p.members.remove(&*m.identity);
                    }
                }),
                Event::Warning(w) => world.update(&name, |p| p.warnings.push(w.to_string())),
                Event::Reconnecting { .. } => world.update(&name, |p| p.away = true),
                Event::Reconnected { .. } => world.update(&name, |p| {
                    p.away = false;
                    p.reconnects += 1;
                }),
                Event::CallEnded { reason } => {
                    world.update(&name, |p| p.ended = Some(reason));
                    return;
                }
                // Health updates arrive every stats interval: a heartbeat for drain waits.
                Event::DecryptHealth(_) => world.notify.notify_waiters(),
                _ => {}
            }
        }
    });
}

/// The relay the call runs on: one embedded relay, or a cluster of nodes.
enum Relays {
    One(EmbeddedRelay),
    Cluster(DemoCluster),
}

impl Relays {
    fn trust(&self) -> blindcall_client::TrustAnchor {
        match self {
            Self::One(r) => r.trust(),
            Self::Cluster(c) => c.trust(),
        }
    }

    fn mint(&self, room: &str, role: Role, ttl: Duration) -> Result<String, EmbeddedError> {
        match self {
            Self::One(r) => r.mint(room, role, ttl),
            Self::Cluster(c) => c.mint(room, role, ttl),
        }
    }

    /// The relay addresses participant `index` is given, first one first: on a cluster,
    /// every node, starting with a different one per participant (most reach a node that is
    /// not the room's home and are redirected).
    fn addrs_for(&self, index: usize) -> Vec<std::net::SocketAddr> {
        match self {
            Self::One(r) => vec![r.addr()],
            Self::Cluster(c) => {
                let all = c.addrs();
                let n = all.len().max(1);
                (0..all.len()).map(|i| all[(index + i) % n]).collect()
            }
        }
    }

    fn forwarded(&self) -> blindcall_transport::CountersSnapshot {
        match self {
            Self::One(r) => r.forwarded(),
            Self::Cluster(c) => c.forwarded(),
        }
    }

    fn tapped_payloads(&self) -> Vec<Vec<u8>> {
        match self {
            Self::One(r) => r.tapped_payloads(),
            Self::Cluster(c) => c.tapped_payloads(),
        }
    }

    fn control_frames(&self) -> Vec<Vec<u8>> {
        let frames = match self {
            Self::One(r) => r.control_frames(),
            Self::Cluster(c) => c.control_frames(),
        };
        frames.into_iter().map(|f| f.bytes).collect()
    }

    async fn shutdown(self) {
        match self {
            Self::One(r) => r.shutdown().await,
            Self::Cluster(c) => c.shutdown().await,
        }
    }
}

struct Runner {
    relay: Relays,
    /// The call's invite (made by the host).
    invite: Invite,
    world: Arc<World>,
    calls: BTreeMap<String, Call>,
    media: BTreeMap<String, SyntheticMedia>,
    fates: BTreeMap<String, Fate>,
    log: CallLog,
    cfg: ScenarioConfig,
    live: Option<watch::Sender<Vec<LiveRow>>>,
    /// The network paths of participants whose network drops, by name.
    paths: BTreeMap<String, FaultyPath>,
    /// Per participant whose network dropped: from the drop to its media flowing again.
    away: BTreeMap<String, Vec<(std::time::Instant, std::time::Instant)>>,
    /// The home node's kill, on a cluster.
    failover: Option<report::FailoverRecord>,
}

impl Runner {
    fn options(&self, index: usize) -> JoinOptions {
        let name = name(index);
        let mut o = JoinOptions::new(self.relay.trust());
        // The host made the invite; joiners got its link out of band (here: parsed from it).
        o.invite = if index == 0 {
            Some(self.invite.clone())
        } else {
            Invite::parse(&self.invite.to_link()).ok()
        };
        o.media = MediaMode::App;
        o.observer = Some(self.log.observer(&name));
        o.step_timeout = self.cfg.step_timeout;
        o.sign_media = !self.cfg.unsigned_media;
        if let Some(k) = self.cfg.gallery {
            o.video = VideoSelection::Only(gallery(index, self.cfg.participants, k));
        }
        self.log
            .record_video(&name, &o.video, std::time::Instant::now());
        o
    }

    fn synthetic(&self, index: usize) -> SyntheticConfig {
        SyntheticConfig {
            sender_id: sender_id(self.cfg.seed, index),
            seed: self.cfg.seed,
            silent: self.cfg.speakers.is_some_and(|k| index >= k),
        }
    }

    /// Stops every participant's sources; returns once none publishes any more.
    async fn stop_media(&mut self) {
        for (_, m) in std::mem::take(&mut self.media) {
            m.stop().await;
        }
    }

    fn roster(&self) -> BTreeSet<String> {
        let ps = self.world.ps.lock().unwrap_or_else(|e| e.into_inner());
        active(&ps).map(|(n, _)| n.clone()).collect()
    }

    fn publish_live(&self) {
        let Some(live) = &self.live else { return };
        let ps = self.world.ps.lock().unwrap_or_else(|e| e.into_inner());
        let rows = self
            .calls
            .iter()
            .map(|(name, call)| {
                let p = ps.get(name);
                let status = match p.and_then(|p| p.ended.as_ref()) {
                    Some(EndReason::Removed) => "removed",
                    Some(EndReason::Left) => "left",
                    Some(_) => "ended",
                    None if p.is_some_and(|p| p.away) => "away",
                    None if p.is_some_and(|p| p.joined) => "member",
                    None => "waiting",
                };
                LiveRow {
                    name: name.clone(),
                    status,
                    stats: call.stats(),
                }
            })
            .collect();
        live.send_replace(rows);
    }

    async fn join(&mut self, index: usize, fate: Fate) -> Result<(), ScenarioError> {
        let name = name(index);
        let role = if index == 0 { Role::HOST } else { Role::GUEST };
        let token = self.relay.mint(ROOM, role, Duration::from_secs(3600))?;
        let before = max_epoch(&self.world.ps.lock().unwrap_or_else(|e| e.into_inner()));
        // A participant whose network will drop reaches the relay through a path that can fail.
        let mut addrs = self.relay.addrs_for(index);
        let first = addrs.remove(0);
        let relay_addr = if fate == Fate::Dropped {
            let path = FaultyPath::start(first)
                .await
                .map_err(|e| ScenarioError::Network(e.to_string()))?;
            let addr = path.addr();
            self.paths.insert(name.clone(), path);
            addr
        } else {
            first
        };
        let mut options = self.options(index);
        options.relays = addrs;
        let (call, events) = Call::join(relay_addr, &token, &name, options)
            .await
            .map_err(|source| ScenarioError::Join {
                name: name.clone(),
                source,
            })?;
        self.world.update(&name, |_| {});
        let media = SyntheticMedia::spawn(call.clone(), self.synthetic(index));
        spawn_events(
            Arc::clone(&self.world),
            name.clone(),
            call.clone(),
            events,
            index == 0,
            media.hook(),
        );
        self.media.insert(name.clone(), media);
        self.calls.insert(name.clone(), call);
        self.fates.insert(name.clone(), fate);
        self.publish_live();
        let t = self.cfg.step_timeout;
        let n = name.clone();
        self.world
            .wait(&format!("{name} to join and connect media"), t, |ps| {
                ps.get(&n).is_some_and(|p| p.joined && p.media)
            })
            .await?;
        let mut roster = self.roster();
        roster.insert(name.clone());
        // Joiners send a path-update commit right after joining: wait for it everywhere.
        let min_epoch = if index == 0 { 0 } else { before + 2 };
        self.world
            .wait(
                &format!("everyone at one epoch ≥ {min_epoch} with {name} in the roster"),
                t,
                |ps| settled(ps, &roster, min_epoch),
            )
            .await?;
        // And every subscription, to and from the newcomer, carries media.
        let log = self.log.clone();
        self.world
            .wait(
                &format!("every member to receive everyone's media with {name} in"),
                t,
                |_| report::all_subscribed(&log.lock(), &roster),
            )
            .await
    }

    async fn depart(&mut self, name: &str, removed_by: Option<&str>) -> Result<(), ScenarioError> {
        let before = max_epoch(&self.world.ps.lock().unwrap_or_else(|e| e.into_inner()));
        let call_err = |what: String| move |source| ScenarioError::Call { what, source };
        match removed_by {
            None => {
                let call = self.calls.get(name).cloned();
                if let Some(c) = call {
                    c.leave()
                        .await
                        .map_err(call_err(format!("{name} leaves")))?;
                }
            }
            Some(host) => {
                let call = self.calls.get(host).cloned();
                let member = self
                    .world
                    .ps
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(host)
                    .and_then(|p| p.members.get(name).cloned());
                if let (Some(c), Some(m)) = (call, member) {
                    c.remove(&m)
                        .await
                        .map_err(call_err(format!("{host} removes {name}")))?;
                }
            }
        }
        let mut roster = self.roster();
        roster.remove(name);
        let t = self.cfg.step_timeout;
        let n = name.to_owned();
        self.world
            .wait(&format!("{name} to be out"), t, |ps| {
                ps.get(&n).is_some_and(|p| p.ended.is_some())
            })
            .await?;
        self.world
            .wait(
                &format!("everyone at one epoch > {before} without {name}"),
                t,
                |ps| settled(ps, &roster, before + 1),
            )
            .await
    }

    /// `name`'s network goes dead for `outage` (its path to the relay black-holed: nothing
    /// flows, nothing breaks), then comes back. Waits until it noticed, then until it resumed
    /// and media flows both ways again between it and everyone.
    async fn drop_network(&mut self, name: &str, outage: Duration) -> Result<(), ScenarioError> {
        let Some(path) = self.paths.get(name).cloned() else {
            return Ok(());
        };
        let t = self.cfg.step_timeout;
        let resumed_before = self
            .world
            .ps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map_or(0, |p| p.reconnects);
        let cut = Instant::now();
        path.set(PathState::Blackhole);
        let n = name.to_owned();
        self.world
            .wait(&format!("{name} to notice its network is gone"), t, |ps| {
                ps.get(&n).is_some_and(|p| p.away)
            })
            .await?;
        until(&*self, cut + outage).await;
        path.set(PathState::Up);
        let back = Instant::now();
        self.world
            .wait(&format!("{name} to resume its membership"), t, |ps| {
                ps.get(&n)
                    .is_some_and(|p| !p.away && p.reconnects > resumed_before)
            })
            .await?;
        let active = self.roster();
        let log = self.log.clone();
        let since = back.into_std();
        self.world
            .wait(
                &format!("media to flow again between {name} and everyone"),
                t,
                |_| report::flowing_since(&log.lock(), &n, &active, since),
            )
            .await?;
        self.away
            .entry(name.to_owned())
            .or_default()
            .push((cut.into_std(), std::time::Instant::now()));
        Ok(())
    }

    /// On a cluster: kills the room's home node as a crash would, then waits until every
    /// member resumed on another node and media flows again between everyone; records how
    /// long that took and the epochs before and after.
    async fn kill_home(&mut self) -> Result<(), ScenarioError> {
        if !matches!(self.relay, Relays::Cluster(_)) {
            return Ok(());
        }
        let host = name(0);
        let Some(home) = self.calls.get(&host).and_then(|c| connected_to(&c.stats())) else {
            return Err(ScenarioError::Network(
                "the host reports no relay address".into(),
            ));
        };
        let t = self.cfg.step_timeout;
        let members = self.roster();
        let (epoch_before, reconnects_before) = {
            let ps = self.world.ps.lock().unwrap_or_else(|e| e.into_inner());
            let r: BTreeMap<String, u32> = active(&ps)
                .map(|(n, p)| (n.clone(), p.reconnects))
                .collect();
            (max_epoch(&ps), r)
        };
        let killed_at = Instant::now();
        let killed = match &mut self.relay {
            Relays::Cluster(cluster) => cluster.kill(home),
            Relays::One(_) => None,
        };
        let Some(node) = killed else {
            return Err(ScenarioError::Network(format!(
                "no live relay node listens on {home}"
            )));
        };
        let lease = crate::cluster::DEMO_LEASE;
        self.world
            .wait(
                &format!("every member to resume after {node} was killed"),
                t,
                |ps| {
                    members.iter().all(|n| {
                        ps.get(n).is_some_and(|p| {
                            !p.away && p.reconnects > reconnects_before.get(n).copied().unwrap_or(0)
                        })
                    })
                },
            )
            .await?;
        let log = self.log.clone();
        let since = killed_at.into_std();
        let all = members.clone();
        self.world
            .wait(
                &format!("media to flow again between everyone after {node} was killed"),
                t,
                |_| {
                    let l = log.lock();
                    all.iter()
                        .all(|n| report::flowing_since(&l, n, &all, since))
                },
            )
            .await?;
        let back_at = Instant::now();
        let epoch_after = max_epoch(&self.world.ps.lock().unwrap_or_else(|e| e.into_inner()));
        let to = self
            .calls
            .get(&host)
            .and_then(|c| connected_to(&c.stats()))
            .and_then(|a| cluster_node(&self.relay, a));
        self.failover = Some(report::FailoverRecord {
            node,
            to,
            lease,
            killed_at: since,
            back_at: back_at.into_std(),
            members,
            epoch_before,
            epoch_after,
        });
        Ok(())
    }

    /// Waits until every active receiver opened the last frame of every active sender.
    async fn drained(&self) -> Result<(), ScenarioError> {
        let active: BTreeSet<String> = self.roster();
        let log = self.log.clone();
        self.world
            .wait(
                "every member to open every other member's last frame",
                self.cfg.step_timeout,
                |_| report::drained(&log.lock(), &active),
            )
            .await
    }
}

/// A finished run: the report and the raw records behind it.
#[derive(Debug)]
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// Everything every participant recorded.
    pub log: CallLog,
    /// Each participant's part in the script.
    pub fates: BTreeMap<String, Fate>,
}

/// Runs the scenario. `live` receives the progress table every 250 ms.
pub async fn run(
    cfg: ScenarioConfig,
    live: Option<watch::Sender<Vec<LiveRow>>>,
) -> Result<Report, ScenarioError> {
    run_detailed(cfg, live).await.map(|o| o.report)
}

/// [`run`], also returning the raw records (for tests that check them independently).
pub async fn run_detailed(
    cfg: ScenarioConfig,
    live: Option<watch::Sender<Vec<LiveRow>>>,
) -> Result<Outcome, ScenarioError> {
    let n = cfg.participants;
    if !(4..=MAX_PARTICIPANTS).contains(&n) {
        return Err(ScenarioError::Participants(n));
    }
    let mut cfg = cfg;
    cfg.duration = cfg.duration.min(Duration::from_secs(86_400));
    cfg.step_timeout = cfg.step_timeout.min(Duration::from_secs(3_600));
    let relay = match &cfg.cluster {
        None => Relays::One(
            EmbeddedRelay::start(EmbeddedOptions {
                tap: cfg.script == Script::Full,
                ..EmbeddedOptions::default()
            })
            .await?,
        ),
        Some(c) => Relays::Cluster(DemoCluster::start(c.nodes.max(2), c.nats.clone()).await?),
    };
    let first = relay.addrs_for(0).first().map(ToString::to_string);
    let invite =
        Invite::new(ROOM.as_bytes().to_vec(), first, None).map_err(|_| ScenarioError::Invite)?;
    let mut r = Runner {
        relay,
        invite,
        world: Arc::default(),
        calls: BTreeMap::new(),
        media: BTreeMap::new(),
        fates: BTreeMap::new(),
        log: CallLog::new(cfg.script == Script::Full),
        cfg: cfg.clone(),
        live,
        paths: BTreeMap::new(),
        away: BTreeMap::new(),
        failover: None,
    };
    let ticker_world = Arc::clone(&r.world);
    let ticker = tokio::spawn(async move {
        let mut i = tokio::time::interval(Duration::from_millis(250));
        loop {
            i.tick().await;
            ticker_world.notify.notify_waiters();
        }
    });
    let started = Instant::now();
    let mut cpu = None;
    let result = match cfg.script {
        Script::Full => script(&mut r, started).await,
        Script::Steady => steady(&mut r).await.map(|c| cpu = c),
    };
    ticker.abort();
    // The measured call is over: what happens while everyone hangs up is not recorded.
    r.log.close();
    // Counters are refreshed every stats interval: take each call's next snapshot, so that
    // they include everything recorded until now (an ended call has no next one).
    let mut final_stats: BTreeMap<String, CallStats> = BTreeMap::new();
    for (n, c) in &r.calls {
        let mut w = c.watch_stats();
        w.mark_unchanged();
        let _ = tokio::time::timeout(Duration::from_secs(2), w.changed()).await;
        final_stats.insert(n.clone(), c.stats());
    }
    for c in r.calls.values() {
        let _ = c.leave().await;
    }
    let t = r.cfg.step_timeout;
    let _ = r
        .world
        .wait("every participant to end", t, |ps| {
            ps.values().all(|p| p.ended.is_some())
        })
        .await;
    r.publish_live();
    result?;
    let forwarded = r.relay.forwarded();
    let payloads = r.relay.tapped_payloads();
    // The relay's own view of the control channel: every frame it read or wrote, TLS removed.
    let control: Vec<Vec<u8>> = r.relay.control_frames();
    let warnings: BTreeMap<String, Vec<String>> = r
        .world
        .ps
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(n, p)| (n.clone(), p.warnings.clone()))
        .collect();
    let relay = r.relay;
    relay.shutdown().await;
    let report = {
        let data = r.log.lock();
        report::analyze(report::Inputs {
            log: &data,
            fates: &r.fates,
            stats: &final_stats,
            warnings: &warnings,
            forwarded,
            payloads: &payloads,
            control: &control,
            duration: started.elapsed(),
            cpu,
            away: &r.away,
            failover: r.failover.as_ref(),
            unsigned_media: cfg.unsigned_media,
        })
    };
    Ok(Outcome {
        report,
        log: r.log,
        fates: r.fates,
    })
}

/// The relay a call's control connection is on: the node it was redirected to, if any,
/// else the listed address it dialed.
fn connected_to(s: &CallStats) -> Option<std::net::SocketAddr> {
    match &s.relay_redirect {
        Some(r) => r.parse().ok(),
        None => s.relay_addr,
    }
}

/// The id of the cluster node listening on `addr`.
fn cluster_node(relays: &Relays, addr: std::net::SocketAddr) -> Option<String> {
    match relays {
        Relays::One(_) => None,
        Relays::Cluster(c) => c.node_at(addr).map(str::to_owned),
    }
}

/// Waits until `at`, refreshing the live table.
async fn until(r: &Runner, at: Instant) {
    while Instant::now() < at {
        let next = (Instant::now() + Duration::from_millis(250)).min(at);
        tokio::time::sleep_until(next).await;
        r.publish_live();
    }
}

/// Process CPU time (user + system) so far, from `/proc/self/stat` (Linux; `None` elsewhere).
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI in use.
    Some(Duration::from_millis((utime + stime) * 10))
}

async fn steady(r: &mut Runner) -> Result<Option<report::CpuReport>, ScenarioError> {
    let n = r.cfg.participants;
    r.join(0, Fate::Host).await?;
    for i in 1..n {
        r.join(i, Fate::Member).await?;
        r.publish_live();
    }
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    until(&*r, t0 + r.cfg.duration).await;
    let media = t0.elapsed();
    let cpu1 = process_cpu();
    r.stop_media().await;
    // An overloaded machine may lose packets: the report then shows what was missing.
    let _ = r.drained().await;
    Ok(match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(report::CpuReport {
            participants: n,
            media_seconds: media.as_secs_f64(),
            cpu_seconds: b.saturating_sub(a).as_secs_f64(),
            cpu_ms_per_participant_second: b.saturating_sub(a).as_secs_f64() * 1e3
                / (media.as_secs_f64() * n as f64),
        }),
        _ => None,
    })
}

async fn script(r: &mut Runner, started: Instant) -> Result<(), ScenarioError> {
    let n = r.cfg.participants;
    let d = r.cfg.duration;
    r.join(0, Fate::Host).await?;
    let t0 = Instant::now();
    for i in 1..n - 1 {
        let fate = match i {
            1 => Fate::Left,
            2 => Fate::Removed,
            3 => Fate::Dropped,
            _ => Fate::Member,
        };
        r.join(i, fate).await?;
        r.publish_live();
    }
    if n >= 5 {
        r.drop_network(&name(3), NETWORK_DROP).await?;
    }
    until(&*r, t0 + d.mul_f64(0.35)).await;
    r.depart(&name(1), None).await?;
    until(&*r, t0 + d.mul_f64(0.45)).await;
    r.kill_home().await?;
    until(&*r, t0 + d.mul_f64(0.55)).await;
    r.depart(&name(2), Some(&name(0))).await?;
    until(&*r, t0 + d.mul_f64(0.7)).await;
    r.join(n - 1, Fate::Late).await?;
    until(&*r, t0 + d).await;
    r.stop_media().await;
    r.drained().await?;
    r.publish_live();
    let _ = started;
    Ok(())
}
