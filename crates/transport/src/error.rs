//! Transport errors.

use crate::ids::ParticipantId;
use blindcall_media::MediaKind;

/// Errors of the media transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The WebRTC stack reported an error (SDP invalid, connection closed, ...).
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// A session description had the wrong type for this step (e.g. an answer where an offer
    /// was expected).
    #[error("expected an SDP {expected}")]
    WrongSdpType {
        /// What was expected.
        expected: &'static str,
    },
    /// An answer arrived while no offer was outstanding.
    #[error("SDP answer without an outstanding offer")]
    UnexpectedAnswer,
    /// ICE gathering did not complete in time.
    #[error("ICE gathering did not complete within {0:?}")]
    GatheringTimeout(std::time::Duration),
    /// The connection produced no local description.
    #[error("no local description after negotiation")]
    NoLocalDescription,
    /// The participant is not (or no longer) in the room.
    #[error("unknown participant {0}")]
    UnknownParticipant(ParticipantId),
    /// The participant is already in the room.
    #[error("participant {0} already present")]
    DuplicateParticipant(ParticipantId),
    /// Nothing is published for this kind (not negotiated yet, or not enabled).
    #[error("no {0:?} track negotiated yet")]
    NotNegotiated(MediaKind),
    /// No track of this participant and kind is being received.
    #[error("no {kind:?} track from {from}")]
    NoSuchTrack {
        /// The participant.
        from: ParticipantId,
        /// The kind.
        kind: MediaKind,
    },
    /// The transport was closed.
    #[error("transport closed")]
    Closed,
}
