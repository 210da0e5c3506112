//! What [`crate::Call::join`] takes besides the relay address, token and identity.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blindcall_group::{CallConfig, IdentityKey, MemberConfig, MlsSuite};
use blindcall_transport::MediaNetwork;

use crate::invite::Invite;
use crate::observer::CallObserver;

/// How the client authenticates the relay's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustAnchor {
    /// Trust exactly this DER certificate (e.g. the relay's development certificate).
    CertificateDer(Vec<u8>),
    /// Trust the certificates in this PEM text.
    Pem(String),
    /// Accept any certificate whose SHA-256 (colon-separated hex, as the relay prints it)
    /// matches; the TLS 1.3 handshake signature is still verified.
    Fingerprint(String),
    /// The platform's usual web PKI is not bundled; this variant trusts the given DER roots.
    Roots(Vec<Vec<u8>>),
}

/// Where a participant's outgoing media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaMode {
    /// No WebRTC connection at all (control plane and keys only).
    Off,
    /// Receive only: subscribe to everyone, publish nothing.
    ReceiveOnly,
    /// The application publishes frames with [`crate::Call::publish`] and
    /// [`crate::Call::publish_video`], and receives everyone's.
    App,
}

/// Whose video this participant receives; audio always comes from everyone. Large calls
/// show a gallery of a few tiles: receiving only those keeps every client's download and the
/// relay's fan-out bounded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VideoSelection {
    /// Every other member's video (the default).
    #[default]
    All,
    /// Only these members' video, by identity. A listed identity that is not (yet) in the
    /// call starts flowing once its media does.
    Only(Vec<String>),
}

/// Options of [`crate::Call::join`].
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// How to authenticate the relay.
    pub trust: TrustAnchor,
    /// The name the relay's certificate is checked against (default `localhost`).
    pub server_name: String,
    /// Media publishing and receiving.
    pub media: MediaMode,
    /// MLS ciphersuite of this participant.
    pub mls_suite: MlsSuite,
    /// Call-wide settings used when this participant creates the call (host token, empty room);
    /// the relay's external-sender entry is filled in from the relay's HelloAck.
    pub call_config: CallConfig,
    /// Local group settings (key retention, path update after joining, the send-side switch
    /// barrier `activation_delay`, signature bound, ...).
    pub member_config: MemberConfig,
    /// As host, add every joiner in the waiting room that proved the call's invite without
    /// asking the application (requests without a valid proof are refused; without an invite
    /// nothing is approved automatically).
    pub auto_approve: bool,
    /// A frame sealed under an epoch this member does not hold yet is kept this long, then
    /// opened once the commit arrives (or dropped and counted).
    pub hold_future_frames: Duration,
    /// When the relay proposes a departed member's removal, the remaining member with the
    /// lowest leaf commits it at once; the member of rank `r` steps in after `r` times this
    /// if no commit arrived (zero: everyone commits at once and the relay picks one).
    pub proposal_fallback_step: Duration,
    /// Bound on each step of joining (TCP+TLS, admission, group bootstrap).
    pub step_timeout: Duration,
    /// How often [`crate::Call::stats`] is refreshed and decrypt health is reported.
    pub stats_interval: Duration,
    /// The local address of the media connection (default 127.0.0.1: a relay on this
    /// machine); set an interface address to reach a relay elsewhere.
    pub media_network: MediaNetwork,
    /// Whose video to receive from the start (change it with
    /// [`crate::Call::select_video`]).
    pub video: VideoSelection,
    /// Sees frames sealed and opened, epochs, commits and membership changes as they happen
    /// (see [`crate::observer`]); `None` costs nothing.
    pub observer: Option<Arc<dyn CallObserver>>,
    /// At most this many frames are held for the next epoch's commit
    /// ([`JoinOptions::hold_future_frames`]); beyond it the oldest is dropped and counted
    /// (`DropCause::HeldOverflow`).
    pub hold_max_frames: usize,
    /// At most this many bytes of frames are held for the next epoch's commit; beyond it the
    /// oldest are dropped and counted.
    pub hold_max_bytes: usize,
    /// This device's identity key (see [`crate::identity::Identity`]); `None`: a fresh key for
    /// this call only, which nobody can recognise later.
    pub identity_key: Option<Arc<IdentityKey>>,
    /// The call's invite. Creating the call: joiners must prove it, and requests without a
    /// valid proof are refused (its commitment goes into the call's parameters). Joining: the
    /// KeyPackage is proved with it. Hosts of a call with an invite need it too.
    pub invite: Option<Invite>,
    /// The trust store file (name → identity keys seen, verified or not); `None`: kept in
    /// memory for this call only.
    pub trust_store: Option<PathBuf>,
    /// Reconnecting and resuming when the connection to the relay is lost.
    pub reconnect: crate::core::ReconnectPolicy,
    /// The local address of the control connection (default: the system's choice).
    pub bind: Option<std::net::IpAddr>,
    /// Sign own media so receivers can tell this member's frames from another member's
    /// (default `true`). Off: others show its frames as unauthenticated and calls that
    /// require signed media refuse them; for interoperability tests and for measuring what
    /// signing costs.
    pub sign_media: bool,
}

impl JoinOptions {
    /// Defaults around a trust anchor: application media (`App`), suite 1, default call
    /// and member settings (200 ms switch barrier), 2 s hold of at most 256 frames and 8 MiB,
    /// 20 s step timeout.
    pub fn new(trust: TrustAnchor) -> Self {
        Self {
            trust,
            server_name: "localhost".into(),
            media: MediaMode::App,
            mls_suite: MlsSuite::default(),
            call_config: CallConfig::default(),
            member_config: MemberConfig::default(),
            auto_approve: false,
            hold_future_frames: Duration::from_secs(2),
            proposal_fallback_step: Duration::from_millis(750),
            step_timeout: Duration::from_secs(20),
            stats_interval: Duration::from_millis(250),
            video: VideoSelection::All,
            media_network: MediaNetwork::default(),
            observer: None,
            hold_max_frames: 256,
            hold_max_bytes: 8 << 20,
            identity_key: None,
            invite: None,
            trust_store: None,
            reconnect: crate::core::ReconnectPolicy::default(),
            bind: None,
            sign_media: true,
        }
    }
}
