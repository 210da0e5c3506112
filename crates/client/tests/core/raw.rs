//! A member running raw openmls (not our client): admitted by a host like anyone, it holds the
//! group's secrets, so it can seal frames under another member's key and make proposals our
//! client would make only on its own terms.

use blindcall_client::MediaKind;
use blindcall_group::{CallConfig, CallParams, EXPORTER_LABEL, MlsSuite};
use blindcall_media::{Packetizer, PacketizerConfig, RtpPacket};
use blindcall_proto::{Body, VLBytes, WaitingEntry};
use blindcall_sframe::{
    BaseKey, CipherSuite, Counter, Sender as FrameSender, mls::sender_base_key,
};
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, ExtensionType, KeyPackage, MlsGroup,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, OpenMlsProvider as _,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use tls_codec::{Deserialize as _, Serialize as _};

use crate::harness::Room;

/// A participant using openmls directly.
pub struct Raw {
    pub provider: OpenMlsRustCrypto,
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
    pub group: Option<MlsGroup>,
    packetizer: Packetizer,
}

impl Raw {
    pub fn new(name: &str) -> Self {
        let provider = OpenMlsRustCrypto::default();
        let cs = MlsSuite::default().ciphersuite();
        let signer = SignatureKeyPair::new(cs.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Self {
            provider,
            signer,
            credential,
            group: None,
            packetizer: Packetizer::new(PacketizerConfig::default()),
        }
    }

    /// A KeyPackage `MLSMessage` (it advertises the call-parameters extension, not the
    /// "signs media" capability).
    pub fn key_package(&self) -> Vec<u8> {
        let call_ext = blindcall_group::config::CALL_PARAMS_EXTENSION_TYPE;
        let kp: KeyPackage = KeyPackage::builder()
            .leaf_node_capabilities(
                Capabilities::builder()
                    .extensions(vec![ExtensionType::Unknown(call_ext)])
                    .build(),
            )
            .build(
                MlsSuite::default().ciphersuite(),
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .unwrap()
            .key_package()
            .clone();
        MlsMessageOut::from(kp).tls_serialize_detached().unwrap()
    }

    /// Joins from a Welcome `MLSMessage`.
    pub fn join(&mut self, welcome: &[u8]) {
        let MlsMessageBodyIn::Welcome(w) = MlsMessageIn::tls_deserialize_exact(welcome)
            .unwrap()
            .extract()
        else {
            panic!("not a welcome")
        };
        let cfg = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .build();
        let group = StagedWelcome::new_from_welcome(&self.provider, &cfg, w, None)
            .unwrap()
            .into_group(&self.provider)
            .unwrap();
        self.group = Some(group);
    }

    /// Merges every commit the relay sequenced since its epoch, in order (as a member does
    /// with `CommitBroadcast`s).
    pub fn catch_up(&mut self, room: &Room) {
        let group = self.group.as_mut().unwrap();
        while let Some(commit) = room.winner(group.epoch().as_u64()) {
            let msg = MlsMessageIn::tls_deserialize_exact(commit).unwrap();
            let pm = msg.try_into_protocol_message().unwrap();
            let processed = group.process_message(&self.provider, pm).unwrap();
            let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content()
            else {
                panic!("a sequenced commit");
            };
            group.merge_staged_commit(&self.provider, *staged).unwrap();
        }
    }

    /// Its own leaf.
    pub fn leaf(&self) -> u32 {
        self.group.as_ref().unwrap().own_leaf_index().u32()
    }

    /// Its leave: a self-Remove proposal `MLSMessage` for the current epoch.
    pub fn leave(&mut self) -> (u64, Vec<u8>) {
        let group = self.group.as_mut().unwrap();
        let epoch = group.epoch().as_u64();
        let msg = group.leave_group(&self.provider, &self.signer).unwrap();
        (epoch, msg.tls_serialize_detached().unwrap())
    }

    /// Seals `payload` as `leaf`'s frame of `kind` with counter `ctr` under the current
    /// epoch's keys (what any member can do with the group's shared SFrame keys), packetized
    /// as the SDK's transport would carry it.
    pub fn forge(
        &mut self,
        leaf: u32,
        kind: MediaKind,
        ctr: u64,
        payload: &[u8],
    ) -> Vec<RtpPacket> {
        let group = self.group.as_ref().unwrap();
        let suite = CipherSuite::AES_128_GCM_SHA256_128;
        let secret = group
            .export_secret(self.provider.crypto(), EXPORTER_LABEL, &[], suite.nk())
            .unwrap();
        let epoch = group.epoch().as_u64();
        let context = blindcall_client::media::context_of(kind);
        let layout = CallParams::from_config(&CallConfig::default(), b"any")
            .unwrap()
            .layout;
        let base = sender_base_key(suite, &BaseKey::from_vec(secret), leaf).unwrap();
        let kid = layout.encode(context, leaf, epoch).unwrap();
        let mut sender = FrameSender::with_counter(suite, kid, &base, Counter(ctr)).unwrap();
        let frame = sender.seal(b"", payload).unwrap();
        let mut packets = Vec::new();
        let ts = u32::try_from(ctr).unwrap_or(0).wrapping_mul(960);
        self.packetizer.packetize(ts, &frame, &mut packets).unwrap();
        packets
    }
}

/// Brings `raw` into the call: the host (peer `host`) is told of its join request as the
/// relay would, approves it, the relay sequences the Add and `raw` processes the Welcome.
/// Returns the request id the host saw (the relay's connection id of `raw`).
pub fn admit(room: &mut Room, host: usize, raw: &mut Raw, conn: u64) {
    let now = room.now;
    room.peers[host]
        .inbox
        .push_back(Body::WaitingEntryAdded(WaitingEntry {
            conn_id: conn,
            display_name: VLBytes::new(b"mallory".to_vec()),
            key_package: VLBytes::new(raw.key_package()),
            join_proof: None,
        }));
    room.peers[host].deliver(now);
    let request = room.peers[host]
        .requests
        .last()
        .map(|(r, _)| *r)
        .expect("the host was asked");
    room.peers[host]
        .command(now, blindcall_client::Command::Approve(request))
        .unwrap();
    room.relay_all(host);
    let welcome = room
        .relayed
        .iter()
        .rev()
        .find_map(|(_, b)| match b {
            Body::Commit(c) => c.welcome.as_ref().map(|w| w.as_slice().to_vec()),
            _ => None,
        })
        .expect("the host's Add carries a Welcome");
    raw.join(&welcome);
    room.run();
}
