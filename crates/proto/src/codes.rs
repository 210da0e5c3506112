//! Wire enums: integer newtypes with named constants. Unknown values decode (they are only
//! unknown, not invalid); whoever acts on a value checks [`is_known`](Role::is_known).

use tls_codec::{TlsDeserialize, TlsSerialize, TlsSize};

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident($int:ty) {
            $( $(#[$vmeta:meta])* $var:ident = $val:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
        pub struct $name(pub $int);

        impl $name {
            $( $(#[$vmeta])* pub const $var: Self = Self($val); )*

            /// Every value this protocol version defines.
            pub const KNOWN: &'static [Self] = &[$(Self::$var),*];

            /// The constant's name for a known value, `None` for an unknown one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some(stringify!($var)), )*
                    _ => None,
                }
            }

            /// Whether this protocol version defines the value.
            pub fn is_known(self) -> bool {
                self.name().is_some()
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}(0x{:x})", stringify!($name), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(self, f)
            }
        }
    };
}

wire_enum! {
    /// The control protocol version carried by every message.
    ProtocolVersion(u16) {
        /// Version 1, this document.
        V1 = 1,
    }
}

wire_enum! {
    /// Which body follows in a [`ControlMessage`](crate::ControlMessage). Value 9 (the
    /// whole-room `WaitingRoomUpdate` of earlier drafts) is retired and never reused.
    MessageType(u16) {
        /// Client → relay: first message, presents the capability token.
        HELLO = 1,
        /// Relay → client: admitted.
        HELLO_ACK = 2,
        /// Relay → client: not admitted or no longer admitted; the relay closes next.
        REFUSED = 3,
        /// Client (host) → relay: the initial GroupInfo of a new group.
        CREATE_GROUP = 4,
        /// Relay → client: the group is bootstrapped at the relay.
        GROUP_CREATED = 5,
        /// Client → relay: a single-use KeyPackage.
        PUBLISH_KEY_PACKAGE = 6,
        /// Relay → client: the KeyPackage is stored.
        KEY_PACKAGE_ACCEPTED = 7,
        /// Client → relay: enter the waiting room with the published KeyPackage.
        JOIN_REQUEST = 8,
        /// Client → relay: a commit for one epoch.
        COMMIT = 10,
        /// Relay → committer: the commit won its epoch.
        COMMIT_ACCEPTED = 11,
        /// Relay → committer: the commit was refused.
        COMMIT_REJECTED = 12,
        /// Relay → members: the sequenced commit of an epoch.
        COMMIT_BROADCAST = 13,
        /// Relay → joiner: the Welcome that adds it.
        WELCOME = 14,
        /// Client → relay: ask for the current GroupInfo.
        GROUP_INFO_REQUEST = 15,
        /// Relay → client: the current GroupInfo and ratchet tree.
        GROUP_INFO_RESPONSE = 16,
        /// Relay → members: a proposal the relay sent as MLS external sender.
        RELAY_PROPOSAL = 17,
        /// Client (host) → relay: refuse new joiners.
        LOCK_ROOM = 18,
        /// Client (host) → relay: accept new joiners again.
        UNLOCK_ROOM = 19,
        /// Client (host) → relay: remove a participant.
        REMOVE_PARTICIPANT = 20,
        /// Relay → clients: the room's state changed.
        ROOM_STATE_UPDATE = 21,
        /// Relay → client: the last message was not acted on.
        ERROR = 22,
        /// Both directions: opaque media signaling between a member and the relay's forwarder.
        MEDIA_SIGNAL = 23,
        /// Client → relay: keep-alive; the relay answers `PONG`.
        PING = 24,
        /// Relay → client: the answer to `PING`.
        PONG = 25,
        /// Relay → members: a joiner entered the waiting room (one message per entry).
        WAITING_ENTRY_ADDED = 26,
        /// Relay → members: a joiner left the waiting room (added, gone or refused).
        WAITING_ENTRY_REMOVED = 27,
        /// Member → relay: the member's own proposal (only a Remove of its own leaf).
        PROPOSE = 28,
        /// Relay → members: a member's proposal the relay accepted, for the other members.
        PROPOSAL_BROADCAST = 29,
        /// Member → relay: an opaque message for every other member.
        PEER_BROADCAST = 30,
        /// Relay → members: another member's `PEER_BROADCAST`.
        PEER_MESSAGE = 31,
        /// Client → relay: resume membership at a leaf, proven by the leaf's signature key.
        RESUME = 32,
        /// Relay → client: the resume is accepted; the connection is the leaf's member again.
        RESUME_ACCEPTED = 33,
        /// Relay → client: the resume is refused; the connection stays in the lobby.
        RESUME_REFUSED = 34,
        /// Relay (cluster node) → client, instead of `HELLO_ACK` or to a member of a room the
        /// node hands over: this room is served by the relay at the given address; connect
        /// there (and resume, if a member). The node closes the connection after it.
        REDIRECT = 35,
    }
}

wire_enum! {
    /// The role a capability token grants in its room.
    Role(u8) {
        /// May create the group, lock the room and remove participants.
        HOST = 1,
        /// May ask to join and take part.
        GUEST = 2,
    }
}

wire_enum! {
    /// Why the relay does not (or no longer) admit a connection.
    RefusedReason(u16) {
        /// The Hello carried no token.
        MISSING_TOKEN = 1,
        /// The token does not parse.
        MALFORMED_TOKEN = 2,
        /// The token's MAC does not verify under the operator's secret.
        BAD_SIGNATURE = 3,
        /// The token's expiry is in the past.
        EXPIRED = 4,
        /// The token is for another room than the Hello names.
        WRONG_ROOM = 5,
        /// The host locked the room against new joiners.
        ROOM_LOCKED = 6,
        /// The relay does not speak the message's protocol version.
        UNSUPPORTED_VERSION = 7,
        /// The host removed this participant.
        REMOVED_BY_HOST = 8,
        /// No member let the joiner in before the waiting-room deadline.
        WAITING_ROOM_TIMEOUT = 9,
        /// No Hello arrived before the deadline.
        HELLO_TIMEOUT = 10,
        /// The Hello is malformed (display name too long, unknown role).
        BAD_HELLO = 11,
        /// The relay is shutting down; the client may reconnect to another relay or later.
        SHUTTING_DOWN = 12,
        /// The connection sent nothing for longer than the idle timeout.
        IDLE_TIMEOUT = 13,
        /// A commit sequenced by the relay removed this member from the group.
        REMOVED_FROM_GROUP = 14,
        /// The token (or the source address) already holds as many connections as allowed.
        TOO_MANY_CONNECTIONS = 15,
        /// The waiting room (or this token's share of it) is full.
        WAITING_ROOM_FULL = 16,
        /// Another connection resumed this connection's membership (its leaf); this one is
        /// stale (e.g. a half-open TCP connection after a network change).
        RESUMED_ELSEWHERE = 17,
        /// A cluster node cannot tell which node serves the room because its room store is
        /// unreachable (it fails closed); the client may try another relay or again later.
        STORE_UNAVAILABLE = 18,
    }
}

wire_enum! {
    /// Why a `Resume` was refused. The connection stays admitted, in the lobby: it may join
    /// again through the waiting room.
    ResumeRefusedReason(u16) {
        /// The signature does not verify under the leaf's signature key in the current tree.
        BAD_SIGNATURE = 1,
        /// The group has no member at that leaf, and no recently removed one there either.
        UNKNOWN_LEAF = 2,
        /// The leaf's member was removed (or its removal is proposed): the proof verifies under
        /// a key the group no longer holds at that leaf, or a Remove of the leaf is pending.
        REMOVED = 3,
        /// The room has no group.
        NO_GROUP = 4,
        /// The relay's commit log no longer reaches back to the member's epoch.
        TOO_FAR_BEHIND = 5,
        /// Not allowed now: a second `Resume` on the connection, after publishing a KeyPackage
        /// or becoming a member, or an epoch the member cannot be at.
        BAD_STATE = 6,
    }
}

wire_enum! {
    /// Why a commit was not sequenced.
    CommitRejectReason(u16) {
        /// Another commit already won this epoch; the winner is attached when the relay still has it.
        EPOCH_TAKEN = 1,
        /// The commit is for an epoch the group has not reached.
        FUTURE_EPOCH = 2,
        /// The commit is for another MLS group.
        WRONG_GROUP = 3,
        /// The bytes are not an MLS message.
        MALFORMED = 4,
        /// The handshake is not an MLS PublicMessage, so the relay cannot validate it.
        NOT_PUBLIC_MESSAGE = 5,
        /// The message is not a commit.
        NOT_A_COMMIT = 6,
        /// openmls refused the commit against the group's public state.
        INVALID = 7,
        /// The commit's sender is not the connection's own leaf.
        SENDER_MISMATCH = 8,
        /// An Add names a KeyPackage that is not in the waiting room.
        UNKNOWN_KEY_PACKAGE = 9,
        /// Adds without a Welcome, or a Welcome not matching the Adds.
        WELCOME_MISMATCH = 10,
        /// The GroupInfo is missing, invalid or does not match the commit's new epoch.
        BAD_GROUP_INFO = 11,
        /// The commit removes a member the committer may not remove.
        UNAUTHORIZED_REMOVE = 12,
        /// The Commit message's epoch field differs from the MLS message's epoch.
        EPOCH_MISMATCH = 13,
        /// The room has no group yet.
        NO_GROUP = 14,
        /// An external commit (MLS `new_member_commit`): only members commit.
        EXTERNAL_COMMIT = 15,
        /// The members' shared commit policy refuses it.
        POLICY = 16,
        /// The relay could not sequence the commit because its room store (shared by a
        /// cluster's nodes) did not answer or is unreachable; nothing changed. The committer
        /// may send the commit again after a delay.
        STORE_UNAVAILABLE = 17,
    }
}

wire_enum! {
    /// The code of an [`ErrorMessage`](crate::ErrorMessage).
    ErrorCode(u16) {
        /// The message does not decode.
        MALFORMED_MESSAGE = 1,
        /// The frame is longer than the receiver's limit; the connection closes.
        FRAME_TOO_LARGE = 2,
        /// The message is valid but not allowed in the connection's current state.
        UNEXPECTED_MESSAGE = 3,
        /// Only a host may do this.
        NOT_HOST = 4,
        /// The KeyPackage does not validate.
        INVALID_KEY_PACKAGE = 5,
        /// The GroupInfo does not validate or lacks what the relay needs.
        INVALID_GROUP_INFO = 6,
        /// The room has no group yet.
        NO_GROUP = 7,
        /// The room already has a group.
        GROUP_EXISTS = 8,
        /// No such participant in this room.
        UNKNOWN_PARTICIPANT = 9,
        /// The message's protocol version is not supported.
        UNSUPPORTED_VERSION = 10,
        /// The relay hit an internal fault handling this message; the room is unchanged.
        INTERNAL = 11,
        /// A JoinRequest without a published KeyPackage.
        NO_KEY_PACKAGE = 12,
        /// The connection sent more messages than its rate limit allows; the message was dropped.
        RATE_LIMITED = 13,
        /// Only a group member may do this (e.g. media signaling).
        NOT_MEMBER = 14,
        /// The KeyPackage is larger than the relay accepts.
        KEY_PACKAGE_TOO_LARGE = 15,
        /// The proposal is not the sender's own Remove for the current epoch, or does not validate.
        INVALID_PROPOSAL = 16,
    }
}
