//! The group's events: epochs entered, members joined and left, proposals, the path update,
//! send-epoch switches, removal. One match arm per event.
//!
//! # Epoch transitions
//!
//! A commit (own, once the relay accepted it; or anyone's, as the relay broadcast it) is
//! merged at once, which installs the new epoch's receive keys. The group's own send barrier
//! switches own senders to the new epoch `MemberConfig::activation_delay` later, or at once
//! after a commit that removed anyone (SDK-EPOCH-1: the relay sends the commit to every member
//! in the same instant, so the delay only has to cover the fan-out). Frames sealed under an
//! epoch whose commit is not merged yet are held by the media pipeline and opened after the
//! merge (SDK-EPOCH-2). Every switch of the send epoch the group reports
//! (`SendEpochActivated`) asks for one keyframe and makes the next typed video frame a
//! keyframe (SDK-MEDIA-3). The group's epoch confirmations and media authentication report
//! through here too (splits, impersonation).

use std::time::Instant;

use blindcall_group::Event as GroupEvent;

use super::CallCore;
use super::commits::Intent;
use super::join::Phase;
use super::timer::Timer;
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
                    self.retry_held(now);
                    self.emit(Event::EpochChanged { epoch, code });
                }
                GroupEvent::MembersJoined { epoch, members } => {
                    let members = self.members_seen(&members);
                    self.emit(Event::MembersJoined { epoch, members });
                }
                GroupEvent::MembersLeft { epoch, members } => {
                    self.close_streams_of(&members);
                    let members = members.iter().map(|m| self.member(m)).collect();
                    self.emit(Event::MembersLeft { epoch, members });
                }
                GroupEvent::ProposalQueued {
                    proposer,
                    kind,
                    removed,
                } => {
                    // Whoever is being removed does not commit its own removal.
                    if let Some(leaf) = removed {
                        self.commits.proposed_removals.insert(leaf);
                    }
                    self.proposal_queued(now, &proposer, kind)
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
                GroupEvent::EpochConsistent { epoch } => {
                    self.emit(Event::EpochConsistent { epoch })
                }
                GroupEvent::GroupSplit { epoch, member } => {
                    let member = self.sdk_member(&member);
                    self.emit(Event::GroupSplit { epoch, member });
                }
                GroupEvent::EpochUnconfirmed { epoch, members } => {
                    let members = members.iter().map(|m| self.sdk_member(m)).collect();
                    self.emit(Event::EpochUnconfirmed { epoch, members });
                }
                e @ (GroupEvent::Impersonation { .. }
                | GroupEvent::SenderUnauthenticated { .. }
                | GroupEvent::StreamUnblocked { .. }) => self.on_auth_event(e),
                _ => {}
            }
        }
    }
}
