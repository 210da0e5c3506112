//! The group's events: epochs entered, members joined and left, proposals, the path update,
//! send-epoch switches, removal. One match arm per event.
//!
//! # Epoch transitions
//!
//! A commit (own, once the relay accepted it; or anyone's, as the relay broadcast it) is
//! merged at once, which installs the new epoch's receive keys. Own senders switch to the new
//! epoch `activation_delay` later (SDK-EPOCH-1: the relay sends the commit to every member in
//! the same instant, so the delay only has to cover the fan-out). Frames sealed under an
//! epoch whose commit is not merged yet are held by the media pipeline and opened after the
//! merge (SDK-EPOCH-2). Every switch of the send epoch, however it came about, asks for one
//! keyframe and makes the next typed video frame a keyframe (SDK-MEDIA-3).

use std::time::Instant;

use blindcall_group::Event as GroupEvent;

use super::CallCore;
use super::commits::Intent;
use super::join::Phase;
use super::timer::{Timer, after};
use crate::event::{EndReason, Event, KeyframeCause};
use crate::observer::EpochEntered;

/// Epoch bookkeeping of the member.
#[derive(Debug, Default)]
pub(super) struct Epochs {
    /// The first epoch this participant held.
    pub(super) join_epoch: u64,
    /// The next video frame published with a known type must be a keyframe.
    pub(super) keyframe_due: bool,
}

impl Epochs {
    /// Became a member in `epoch`: its first video frame must be a keyframe.
    pub(super) fn joined(&mut self, epoch: u64) {
        self.join_epoch = epoch;
        self.keyframe_due = true;
    }
}

impl CallCore {
    /// Handles every event the group has queued.
    pub(super) fn drain_group_events(&mut self, now: Instant) {
        loop {
            let Phase::Member(g) = &mut self.phase else {
                return;
            };
            let Some(event) = g.poll_event() else { return };
            match event {
                GroupEvent::EpochChanged { epoch, code } => {
                    if let Some(o) = &self.observer {
                        o.epoch_entered(&EpochEntered {
                            epoch,
                            code: &code,
                            at: now,
                        });
                    }
                    self.commits.entered_epoch();
                    self.timers.stop(Timer::ProposalFallback);
                    if epoch > g.send_epoch() {
                        self.schedule_activation(now);
                    }
                    self.retry_held(now);
                    self.emit(Event::EpochChanged { epoch, code });
                }
                GroupEvent::MembersJoined { epoch, members } => {
                    let members = self.members_seen(&members);
                    self.emit(Event::MembersJoined { epoch, members });
                }
                GroupEvent::MembersLeft { epoch, members } => {
                    let members = members.iter().map(|m| self.member(m)).collect();
                    self.emit(Event::MembersLeft { epoch, members });
                }
                GroupEvent::ProposalQueued { removed, .. } => {
                    // Whoever is being removed does not commit its own removal.
                    if let Some(leaf) = removed {
                        self.commits.proposed_removals.insert(leaf);
                    }
                    self.proposal_queued(now)
                }
                GroupEvent::PathUpdateDue => self.commits.queue(Intent::PathUpdate),
                GroupEvent::SendEpochActivated { epoch, .. } => {
                    self.epochs.keyframe_due = true;
                    self.emit(Event::SendEpochActivated { epoch });
                    self.emit(Event::KeyframeRequested {
                        cause: KeyframeCause::SendEpochSwitched { epoch },
                    });
                }
                GroupEvent::RemovedFromCall { .. } => {
                    self.end(now, EndReason::Removed);
                    return;
                }
                _ => {}
            }
        }
    }

    // moves into group: the send-activation delay is the group's to schedule; until then the
    // core keeps this one timer and calls `activate_send_epoch` when it fires.
    fn schedule_activation(&mut self, now: Instant) {
        self.timers
            .set(Timer::Activation, after(now, self.opts.activation_delay));
    }

    // moves into group (see `schedule_activation`). The group reports the switch as
    // `SendEpochActivated`, which asks for the keyframe.
    pub(super) fn activate_send_epoch(&mut self) {
        if let Some(g) = self.group() {
            g.activate_send_epoch();
        }
    }
}
