//! The participants' applications and the scenario's actions: what a host's application
//! answers to join requests, what every application does with the call's events, and how each
//! scenario action reaches the call.

use blindcall_client::observer::MembershipChange;
use blindcall_client::{Command, Event};

use crate::member::Observed;
use crate::net::Profile;
use crate::scenario::{ActionKind, Admit};
use crate::world::{Ev, World};

/// The scenario index of the participant named `name` (`p<index>`).
fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix('p')?.parse().ok()
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::Admitted { .. } => "admitted",
        Event::Waiting => "waiting",
        Event::Joined { .. } => "joined",
        Event::MediaConnected => "media-connected",
        Event::JoinRequested { .. } => "join-requested",
        Event::MembersJoined { .. } => "members-joined",
        Event::MembersLeft { .. } => "members-left",
        Event::EpochChanged { .. } => "epoch-changed",
        Event::SendEpochActivated { .. } => "send-epoch",
        Event::KeyframeRequested { .. } => "keyframe",
        Event::DecryptHealth(_) => "health",
        Event::RoomLocked { .. } => "locked",
        Event::Warning(_) => "warning",
        Event::CallEnded { .. } => "ended",
        Event::JoinRefused { .. } => "join-refused",
        Event::EpochConsistent { .. } => "epoch-consistent",
        Event::GroupSplit { .. } => "split",
        Event::EpochUnconfirmed { .. } => "epoch-unconfirmed",
        Event::Impersonation { .. } => "impersonation",
        Event::SenderUnauthenticated { .. } => "unauthenticated",
        Event::StreamUnblocked { .. } => "stream-unblocked",
        Event::OwnRemovalProposed { .. } => "own-removal-proposed",
        Event::Diverged { .. } => "diverged",
        Event::Reconnecting { .. } => "reconnecting",
        Event::Reconnected { .. } => "reconnected",
        Event::ResumeRefused { .. } => "resume-refused",
        _ => "other",
    }
}

impl World {
    /// One thing member `p`'s observer saw.
    pub(crate) fn observe(&mut self, p: usize, o: &Observed) {
        if let Observed::Membership {
            change: MembershipChange::Joined,
            epoch,
        } = o
        {
            self.members[p].joined_epoch = Some(*epoch);
        }
        if let Observed::Commit { from_epoch } = o {
            *self.stats.commits_made.entry(*from_epoch).or_insert(0) += 1;
        }
        self.checker.observed(&self.members, p, o);
    }

    /// What member `p`'s application does with one event of its call.
    pub(crate) fn app_event(&mut self, p: usize, e: &Event) {
        let name = event_name(e);
        if !matches!(e, Event::DecryptHealth(_) | Event::KeyframeRequested { .. }) {
            tracing::debug!(t = %self.now(), who = %self.members[p].name, event = ?e, "client");
        }
        if !matches!(e, Event::DecryptHealth(_)) {
            self.trace.text(name);
        }
        match e {
            Event::Joined { epoch, members } => {
                self.trace.num(*epoch);
                if *epoch == 0 {
                    // Only the call's creator holds epoch 0.
                    let me = self.members[p].name.clone();
                    self.checker.created(&me);
                }
                let ids: Vec<&str> = members.iter().map(|m| &*m.identity).collect();
                self.checker.members_joined(&self.members, p, ids);
            }
            Event::MembersJoined { epoch, members } => {
                self.trace.num(*epoch);
                let ids = members.iter().map(|m| &*m.identity);
                self.checker.members_joined(&self.members, p, ids);
            }
            Event::MembersLeft { epoch, members } => {
                self.trace.num(*epoch);
                self.checker
                    .members_left(p, *epoch, members.iter().map(|m| &*m.identity));
            }
            Event::EpochChanged { epoch, .. } => self.trace.num(*epoch),
            Event::JoinRequested {
                request, joiner, ..
            } => {
                let Some(joiner) = index_of(&joiner.identity).filter(|j| *j < self.members.len())
                else {
                    return;
                };
                let plan = self.members[joiner].plan;
                let approve = match plan.admit {
                    Admit::Approve => true,
                    // Only the host denies (the relay takes `RemoveParticipant` from hosts).
                    Admit::Deny if p == 0 => false,
                    Admit::Deny | Admit::Ignore => return,
                };
                // Every member who may add answers after the same think time: their Adds race.
                let at = self.now().plus(plan.think);
                self.push(
                    at,
                    Ev::Decision {
                        host: p,
                        request: *request,
                        joiner,
                        approve,
                    },
                );
            }
            Event::MediaConnected => self.start_publishing(p),
            Event::KeyframeRequested { .. } | Event::SendEpochActivated { .. } => {
                self.members[p].app.keyframe_due = true;
            }
            Event::Warning(w) => {
                let key = format!("{w:?}");
                self.trace.text(&key);
                *self.stats.warnings.entry(key).or_insert(0) += 1;
            }
            e if crate::invariants::is_false_alarm(e) => {
                let detail = format!("{} reported {e:?}", self.members[p].name);
                self.checker
                    .fail(crate::invariants::Invariant::FalseAlarm, detail);
            }
            Event::Impersonation { .. } => {
                // Provisional (MA-DET-5): counted, not a violation.
                let key = "impersonation NoSignature (provisional)";
                *self.stats.warnings.entry(key.into()).or_insert(0) += 1;
            }
            Event::EpochUnconfirmed { .. } | Event::StreamUnblocked { .. } => {
                *self.stats.warnings.entry(name.into()).or_insert(0) += 1;
            }
            Event::Reconnecting { .. } => {
                let m = &mut self.members[p];
                if !m.resume.away {
                    m.resume.away = true;
                    m.resume.leaf = m
                        .core
                        .as_ref()
                        .and_then(|c| c.call_group())
                        .map(|g| g.own_leaf());
                }
            }
            Event::Reconnected { .. } => {
                self.members[p].resume.away = false;
                self.checker.back(&self.members, p);
            }
            Event::ResumeRefused { reason } => {
                self.checker.resume_refused(&self.members, p, *reason);
            }
            Event::CallEnded { reason } => {
                let what = format!("{reason:?}");
                self.count_end(p, &what);
                // A refused resume was checked when it came (SIM-INV-14).
                let expected = crate::invariants::end_expected(reason)
                    || matches!(reason, blindcall_client::EndReason::ResumeRefused(_));
                self.checker.call_ended(&self.members, p, &what, expected);
            }
            _ => {}
        }
    }

    /// The host's application answers a join request.
    pub(crate) fn decide(&mut self, host: usize, request: u64, joiner: usize, approve: bool) {
        if !self.members[host].is_running() {
            return;
        }
        let command = if approve {
            // What the call's policy allows, from the scenario (participant 0 created the call
            // and is its only host): a member's client that adds a joiner no allowed member
            // approved breaks the add policy.
            if host == 0 || self.scenario.settings.any_member_adds {
                let name = self.members[joiner].name.clone();
                self.checker.approved(&name);
            }
            Command::Approve(request)
        } else {
            Command::Deny(request)
        };
        self.command(host, command);
    }

    /// Runs an application command on participant `p`'s call.
    fn command(&mut self, p: usize, command: Command) {
        let now = self.clock.instant();
        tracing::debug!(t = %self.now(), who = %self.members[p].name, ?command, "application");
        let Some(core) = self.members[p].core.as_mut() else {
            return;
        };
        // Not the command's Debug: a removal names the member's key, which is random.
        let traced = match &command {
            Command::Remove { leaf, .. } => format!("remove {leaf}"),
            other => format!("{other:?}"),
        };
        self.trace.text(&traced);
        let removes = match &command {
            Command::Remove { leaf, .. } => core
                .call_group()
                .and_then(|g| g.roster().get(*leaf))
                .map(|m| m.identity.to_string()),
            _ => None,
        };
        let result = core.handle_command(now, command);
        if let (Ok(()), Some(name)) = (&result, removes) {
            self.checker.host_removes(&name);
        }
        if let Err(e) = result {
            let key = format!("command {e:?}");
            self.trace.text(&key);
            *self.stats.warnings.entry(key).or_insert(0) += 1;
        }
        self.drain_member(p);
    }

    /// Scenario action `i` happens.
    pub(crate) fn action(&mut self, i: usize) {
        let Some(action) = self.scenario.actions.get(i).copied() else {
            return;
        };
        self.trace.num(i as u64);
        let now = self.now();
        // The application acts once its call is connected.
        let running = |w: &Self, p: usize| {
            w.members
                .get(p)
                .is_some_and(|m| m.is_running() && m.link.is_some())
        };
        match action.kind {
            ActionKind::Join { p } if p < self.members.len() => self.start(p),
            ActionKind::Leave { p } if running(self, p) => self.command(p, Command::Leave),
            ActionKind::HostRemove { p } if running(self, 0) && p < self.members.len() => {
                // The host's application picks the member from its roster: its leaf and key.
                let name = &self.members[p].name;
                let target = self.members[0]
                    .core
                    .as_ref()
                    .and_then(|c| c.call_group())
                    .and_then(|g| {
                        g.roster()
                            .members()
                            .iter()
                            .find(|m| *m.identity == **name)
                            .map(|m| (m.leaf, m.signature_key.clone()))
                    });
                match target {
                    Some((leaf, identity_key)) => {
                        self.command(0, Command::Remove { leaf, identity_key })
                    }
                    None => {
                        *self
                            .stats
                            .warnings
                            .entry("remove: not in the host's roster".into())
                            .or_insert(0) += 1;
                    }
                }
            }
            ActionKind::Disconnect { p, outage } if running(self, p) => self.disconnect(p, outage),
            ActionKind::Partition { p, duration } if running(self, p) => {
                let m = &mut self.members[p];
                m.offline_until = m.offline_until.max(now.plus(duration));
                let Some(link) = m.link.as_mut() else {
                    return;
                };
                let generation = link.generation;
                let earliest = link.partition(now, now.plus(duration));
                self.hold_in_flight(p, generation, earliest);
            }
            ActionKind::Slow {
                p,
                duration,
                latency,
                bytes_per_second,
            } if running(self, p) => {
                let Some(link) = self.members[p].link.as_mut() else {
                    return;
                };
                let jitter = link.profile(now).jitter;
                link.set_slow(
                    now.plus(duration),
                    Profile {
                        latency,
                        jitter,
                        bytes_per_second: Some(bytes_per_second),
                    },
                );
            }
            ActionKind::Lock { locked } if running(self, 0) => {
                self.command(0, Command::LockRoom(locked))
            }
            _ => {}
        }
    }
}
