//! Scenarios: who joins when and how the host's application answers, what members and the
//! network do to the call, and the knobs of one run, all drawn from a seed. A scenario is a
//! plain list of timed actions, so a failing one can be shrunk by dropping actions and
//! replayed from its seed plus the indices it kept.

use std::time::Duration;

use crate::rng::Rng;

/// How the host's application answers a participant's join request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Approve it (the host's client commits the Add).
    Approve,
    /// Deny it (the relay refuses the joiner and bans its token).
    Deny,
    /// Never answer (the relay's waiting-room timeout refuses the joiner).
    Ignore,
}

/// What a participant does with media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaPlan {
    /// Publishes audio and video frames and receives everyone's.
    Publish,
    /// Receives only.
    ReceiveOnly,
    /// No media transport at all.
    Off,
}

/// One participant's plan (participant 0 creates the call as host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Participant {
    /// The host's answer to its join request (unused for participant 0).
    pub admit: Admit,
    /// How long the host's application takes to answer.
    pub think: Duration,
    /// Its media.
    pub media: MediaPlan,
    /// When after joining it sends its path-update (self-update) commit.
    pub path_update: Duration,
    /// One-way latency of its links.
    pub latency: Duration,
    /// Latency jitter of its links (the control stream stays in order).
    pub jitter: Duration,
    /// It holds the call's invite (when the call has one); without it its request carries
    /// no proof and the members' clients turn it away by themselves.
    pub invited: bool,
}

/// Something that happens to the call at a scenario time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Participant `p` connects and asks to join (participant 0 creates the call).
    Join {
        /// Participant.
        p: usize,
    },
    /// Participant `p`'s application leaves the call (the core's `Leave` command).
    Leave {
        /// Participant.
        p: usize,
    },
    /// The host's application removes participant `p` (a Remove commit).
    HostRemove {
        /// Participant.
        p: usize,
    },
    /// The network cuts participant `p`'s connection: both ends see it close (the relay as a
    /// lost connection, whose member keeps its leaf for the resume grace), and `p`'s network
    /// stays down for `outage` (its connection attempts fail or hang meanwhile). Its client
    /// then reconnects and resumes its leaf; after an outage longer than the relay's grace the
    /// relay has proposed its removal and refuses the resume.
    Disconnect {
        /// Participant.
        p: usize,
        /// How long `p`'s network stays down.
        outage: Duration,
    },
    /// Participant `p`'s network carries nothing for a while (control bytes wait, media is
    /// lost, new connections cannot be made). Longer than the clients' silence timeout, the
    /// client drops the connection and reconnects once the network is back.
    Partition {
        /// Participant.
        p: usize,
        /// How long.
        duration: Duration,
    },
    /// Participant `p`'s links become slow for a while: long latency, little bandwidth.
    Slow {
        /// Participant.
        p: usize,
        /// How long.
        duration: Duration,
        /// One-way latency meanwhile.
        latency: Duration,
        /// Bytes per second meanwhile.
        bytes_per_second: u64,
    },
    /// The host's application locks (`true`) or unlocks the room at the relay.
    Lock {
        /// Locked or not.
        locked: bool,
    },
}

/// One timed action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub kind: ActionKind,
}

impl Action {
    /// When the action is over.
    pub fn end(&self) -> Duration {
        match self.kind {
            ActionKind::Disconnect { outage, .. } => self.at + outage,
            ActionKind::Partition { duration, .. } | ActionKind::Slow { duration, .. } => {
                self.at + duration
            }
            _ => self.at,
        }
    }
}

/// Knobs of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `JoinOptions::proposal_fallback_step` of every client (zero: every member commits the
    /// relay's proposal at once, and the relay picks one).
    pub proposal_fallback: Duration,
    /// Send-switch barrier of every client.
    pub activation_delay: Duration,
    /// Media packets lost per hop, per mille.
    pub media_loss: u32,
    /// Media packets duplicated per hop, per mille.
    pub media_duplicate: u32,
    /// Extra random delay per media packet and hop (reorders packets).
    pub media_jitter: Duration,
    /// Control writes split into several stream segments, per mille.
    pub split_writes: u32,
    /// The call's add rule lets every member add (not only hosts): every member's application
    /// answers join requests, so several members commit Adds of one joiner at once.
    pub any_member_adds: bool,
    /// The call has an invite: joiners must prove it.
    pub invite: bool,
    /// Clients reconnect and resume (`ReconnectPolicy::enabled`); otherwise a lost
    /// connection ends the member's call.
    pub reconnect: bool,
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The seed it was drawn from (also seeds the network's randomness).
    pub seed: u64,
    /// Knobs.
    pub settings: Settings,
    /// Participant plans; index 0 is the host.
    pub participants: Vec<Participant>,
    /// Actions, in time order (ties keep their order).
    pub actions: Vec<Action>,
}

/// Bounds of the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most participants in one scenario (host included), at least 2.
    pub max_participants: usize,
    /// Most disruptive actions (leaves, removals, faults, locks).
    pub max_disruptions: usize,
    /// Joins happen within this time from the start.
    pub join_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_participants: 7,
            max_disruptions: 8,
            join_window: Duration::from_secs(8),
        }
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Scenario {
    /// The scenario of `seed` within `limits`.
    pub fn generate(seed: u64, limits: &Limits) -> Self {
        let mut r = Rng::derive(seed, 0x5ce0);
        let settings = Settings {
            proposal_fallback: ms([0, 100, 750][r.index(3)]),
            activation_delay: ms([0, 200][r.index(2)]),
            media_loss: [0, 20, 100][r.index(3)],
            media_duplicate: [0, 10, 50][r.index(3)],
            media_jitter: ms(r.range(0, 40)),
            split_writes: [0, 300][r.index(2)],
            any_member_adds: r.chance(250),
            invite: r.chance(400),
            reconnect: !r.chance(150),
        };
        let max = limits.max_participants.max(2) as u64;
        let n = usize::try_from(r.range(2, max)).unwrap_or(2);
        let mut participants = Vec::with_capacity(n);
        for p in 0..n {
            let admit = match r.range(0, 99) {
                0..=69 => Admit::Approve,
                70..=84 => Admit::Deny,
                _ => Admit::Ignore,
            };
            let media = match r.range(0, 99) {
                0..=69 => MediaPlan::Publish,
                70..=84 => MediaPlan::ReceiveOnly,
                _ => MediaPlan::Off,
            };
            participants.push(Participant {
                admit: if p == 0 { Admit::Approve } else { admit },
                think: ms([0, 0, 50, 300, 800][r.index(5)]),
                media,
                path_update: ms([0, 0, 20, 150, 1_000][r.index(5)]),
                latency: ms(r.range(2, 60)),
                jitter: ms(r.range(0, 15)),
                invited: p == 0 || !r.chance(150),
            });
        }
        let window = u64::try_from(limits.join_window.as_millis())
            .unwrap_or(8_000)
            .max(500);
        let mut actions = vec![Action {
            at: Duration::ZERO,
            kind: ActionKind::Join { p: 0 },
        }];
        let mut last_join = 300;
        for p in 1..n {
            // Joins often arrive together (their Adds and path updates race).
            let at = if r.chance(350) {
                last_join
            } else {
                r.range(300, window)
            };
            last_join = at;
            actions.push(Action {
                at: ms(at),
                kind: ActionKind::Join { p },
            });
        }
        let joined_at: Vec<u64> = (0..n)
            .map(|p| {
                actions
                    .iter()
                    .find(|a| a.kind == ActionKind::Join { p })
                    .map_or(0, |a| u64::try_from(a.at.as_millis()).unwrap_or(0))
            })
            .collect();
        let disruptions = r.index(limits.max_disruptions + 1);
        for _ in 0..disruptions {
            let at = if r.chance(350) {
                // At the same instant as another action: concurrent commits.
                actions[r.index(actions.len())].at
            } else {
                ms(r.range(500, window + 3_000))
            };
            let at_ms = u64::try_from(at.as_millis()).unwrap_or(0);
            // Mostly someone who has started joining by then; the host rarely.
            let present: Vec<usize> = (1..n).filter(|p| joined_at[*p] < at_ms).collect();
            let p = if r.chance(100) {
                0
            } else if !present.is_empty() && r.chance(850) {
                present[r.index(present.len())]
            } else {
                1 + r.index(n - 1)
            };
            let guest = if p == 0 { 1 } else { p };
            let kind = match r.range(0, 99) {
                0..=19 => ActionKind::Leave { p },
                20..=39 => ActionKind::HostRemove { p: guest },
                40..=57 => ActionKind::Disconnect {
                    p,
                    // Mostly back within the relay's resume grace (20 s); sometimes not.
                    outage: ms([0, 0, 500, 2_000, 6_000, 26_000][r.index(6)]),
                },
                58..=71 => ActionKind::Partition {
                    p,
                    // Longer than 3 s: the client's silence timeout drops the connection.
                    duration: ms([200, 1_000, 4_000, 8_000, 200, 1_000, 4_000, 30_000][r.index(8)]),
                },
                72..=91 => ActionKind::Slow {
                    p,
                    duration: ms([1_000, 5_000][r.index(2)]),
                    latency: ms([300, 1_500][r.index(2)]),
                    bytes_per_second: [4_000, 50_000][r.index(2)],
                },
                _ => {
                    // A lock is lifted again after a while.
                    actions.push(Action {
                        at: at + ms(r.range(500, 4_000)),
                        kind: ActionKind::Lock { locked: false },
                    });
                    ActionKind::Lock { locked: true }
                }
            };
            actions.push(Action { at, kind });
        }
        actions.sort_by_key(|a| a.at);
        Self {
            seed,
            settings,
            participants,
            actions,
        }
    }

    /// The same scenario with only the actions at `keep` (indices into `actions`).
    pub fn keep(&self, keep: &[usize]) -> Self {
        let actions = self
            .actions
            .iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, a)| *a)
            .collect();
        Self {
            actions,
            ..self.clone()
        }
    }

    /// When the last action starts.
    pub fn last_start(&self) -> Duration {
        self.actions.last().map_or(Duration::ZERO, |a| a.at)
    }

    /// When the last action is over (a partition, slow link or outage lasts a while).
    pub fn last_action(&self) -> Duration {
        self.actions
            .iter()
            .map(Action::end)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // covers: SIM-GEN-1
    #[test]
    fn a_seed_fixes_the_scenario() {
        let l = Limits::default();
        assert_eq!(Scenario::generate(7, &l), Scenario::generate(7, &l));
        let differ = (0..20).any(|s| Scenario::generate(s, &l) != Scenario::generate(s + 1, &l));
        assert!(differ);
        for s in 0..50 {
            let sc = Scenario::generate(s, &l);
            assert!(sc.participants.len() >= 2 && sc.participants.len() <= l.max_participants);
            assert_eq!(sc.actions[0].kind, ActionKind::Join { p: 0 });
            assert!(sc.actions.windows(2).all(|w| w[0].at <= w[1].at));
        }
    }
}
