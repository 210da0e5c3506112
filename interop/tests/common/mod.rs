//! Shared helpers: an mls-rs member (the reference implementation), SFrame on the mls-rs side
//! keyed only from mls-rs's exporter, and frame exchange checks across both implementations.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use blindcall_group::config::CALL_PARAMS_EXTENSION_TYPE;
use blindcall_group::{CallGroup, CallParams, FrameError, MemberConfig, MlsSuite, SecurityCode};
use blindcall_sframe::mls::{EXPORTER_CONTEXT, EXPORTER_LABEL, exporter_length};
use blindcall_sframe::{
    BaseKey, Header, Kid, OpenError, Receiver, ReceiverConfig, Sender as FrameSender,
};
use mls_rs::client_builder::{MlsConfig, PaddingMode};
use mls_rs::extension::ExtensionType;
use mls_rs::group::{CommitEffect, ReceivedMessage};
use mls_rs::identity::SigningIdentity;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules, EncryptionOptions};
use mls_rs::{
    CipherSuite, CipherSuiteProvider, CryptoProvider, Extension, ExtensionList, MlsMessage,
    WireFormat,
};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;

/// The mls-rs ciphersuite of a blindcall MLS suite (same IANA id).
pub fn rs_suite(suite: MlsSuite) -> CipherSuite {
    let cs = match suite {
        MlsSuite::X25519Aes128Ed25519 => CipherSuite::CURVE25519_AES128,
        MlsSuite::P256Aes128 => CipherSuite::P256_AES128,
    };
    assert_eq!(u16::from(cs), suite.id());
    cs
}

/// RFC 9605 §5.2 written out: `KID = (context << (S + E)) + (sender_index << E) + (epoch % 2^E)`.
pub fn rfc9605_kid(params: &CallParams, context: u64, leaf: u32, epoch: u64) -> Kid {
    let s = u32::from(params.layout.sender_bits());
    let e = u32::from(params.layout.epoch_bits());
    let kid = (context << (s + e)) + (u64::from(leaf) << e) + (epoch % (1u64 << e));
    // The sframe crate's helper must agree with the formula.
    assert_eq!(
        blindcall_sframe::mls::kid(context, leaf, epoch, s, e).unwrap(),
        Kid(kid)
    );
    Kid(kid)
}

/// One SFrame frame with what its sender put in.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub from: String,
    pub leaf: u32,
    pub context: u64,
    pub epoch: u64,
    pub metadata: Vec<u8>,
    pub payload: Vec<u8>,
    pub frame: Vec<u8>,
}

fn content(who: &str, imp: &str, epoch: u64, context: u64) -> (Vec<u8>, Vec<u8>) {
    let payload = format!("{imp} member {who}, epoch {epoch}, stream {context}").into_bytes();
    let metadata = format!("rtp-meta/{who}/{epoch}/{context}").into_bytes();
    (metadata, payload)
}

/// A member implemented with mls-rs: MLS from mls-rs only, SFrame keys from its exporter only.
pub struct RsMember<C: MlsConfig> {
    pub name: String,
    client: mls_rs::Client<C>,
    group: Option<mls_rs::Group<C>>,
    senders: BTreeMap<(u64, u64), FrameSender>,
    receiver: Receiver,
    removed: bool,
    encrypt_handshakes: bool,
}

/// A fresh mls-rs client: basic credential, handshakes as PublicMessage, ratchet tree in the
/// Welcome, path in every commit, and the blindcall call-parameters extension declared.
pub fn rs_member(name: &str, suite: MlsSuite) -> RsMember<impl MlsConfig> {
    rs_member_with(name, suite, false, true)
}

/// Like [`rs_member`]; `encrypt_handshakes` sends handshakes as PrivateMessage (mls-rs's own
/// default), the wire format blindcall refuses; `declare_call_params` lists extension 0xF0BC
/// in the leaf capabilities.
pub fn rs_member_with(
    name: &str,
    suite: MlsSuite,
    encrypt_handshakes: bool,
    declare_call_params: bool,
) -> RsMember<impl MlsConfig> {
    let crypto = RustCryptoProvider::new();
    let cs = rs_suite(suite);
    let (secret, public) = crypto
        .cipher_suite_provider(cs)
        .unwrap()
        .signature_key_generate()
        .unwrap();
    let identity = SigningIdentity::new(
        BasicCredential::new(name.as_bytes().to_vec()).into_credential(),
        public,
    );
    let rules = DefaultMlsRules::new()
        .with_commit_options(
            CommitOptions::new()
                .with_ratchet_tree_extension(true)
                .with_path_required(true),
        )
        .with_encryption_options(EncryptionOptions::new(
            encrypt_handshakes,
            PaddingMode::None,
        ));
    let client = mls_rs::Client::builder()
        .crypto_provider(crypto)
        .identity_provider(BasicIdentityProvider)
        .mls_rules(rules)
        .extension_types(
            declare_call_params.then_some(ExtensionType::new(CALL_PARAMS_EXTENSION_TYPE)),
        )
        .signing_identity(identity, secret, cs)
        .build();
    RsMember {
        name: name.to_string(),
        client,
        group: None,
        senders: BTreeMap::new(),
        receiver: Receiver::new(ReceiverConfig::default()),
        removed: false,
        encrypt_handshakes,
    }
}

fn assert_public(msg: &MlsMessage) {
    assert_eq!(msg.wire_format(), WireFormat::PublicMessage);
}

fn assert_wire_format(msg: &MlsMessage, encrypted: bool) {
    let expected = if encrypted {
        WireFormat::PrivateMessage
    } else {
        WireFormat::PublicMessage
    };
    assert_eq!(msg.wire_format(), expected);
}

impl<C: MlsConfig> RsMember<C> {
    fn group(&self) -> &mls_rs::Group<C> {
        self.group.as_ref().unwrap()
    }

    fn group_mut(&mut self) -> &mut mls_rs::Group<C> {
        self.group.as_mut().unwrap()
    }

    /// The signature public key as it appears in the leaf node.
    pub fn signature_key(&self) -> Vec<u8> {
        self.client
            .signing_identity()
            .unwrap()
            .0
            .signature_key
            .as_bytes()
            .to_vec()
    }

    /// A KeyPackage `MLSMessage`.
    pub fn key_package(&self) -> Vec<u8> {
        self.client
            .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    /// Creates a group whose context carries `params` in extension 0xF0BC.
    pub fn create(&mut self, params: &CallParams) {
        self.try_create(params).unwrap();
    }

    /// Like [`RsMember::create`], returning mls-rs's refusal.
    pub fn try_create(&mut self, params: &CallParams) -> Result<(), mls_rs::error::MlsError> {
        let mut exts = ExtensionList::new();
        exts.set(Extension::new(
            ExtensionType::new(CALL_PARAMS_EXTENSION_TYPE),
            params.encode().expect("encodable call parameters"),
        ));
        self.group = Some(self.client.create_group(exts, ExtensionList::new(), None)?);
        Ok(())
    }

    /// Creates a plain MLS group: no call parameters in the group context.
    pub fn create_plain(&mut self) {
        self.group = Some(
            self.client
                .create_group(ExtensionList::new(), ExtensionList::new(), None)
                .unwrap(),
        );
    }

    /// Drops the own pending commit (the delivery service or the group refused it).
    pub fn discard(&mut self) {
        self.group_mut().clear_pending_commit();
    }

    /// Joins from a Welcome `MLSMessage` (ratchet tree in the extension).
    pub fn join(&mut self, welcome: &[u8]) {
        let msg = MlsMessage::from_bytes(welcome).unwrap();
        let (group, _) = self.client.join_group(None, &msg, None).unwrap();
        self.group = Some(group);
    }

    pub fn epoch(&self) -> u64 {
        self.group().current_epoch()
    }

    pub fn leaf(&self) -> u32 {
        self.group().current_member_index()
    }

    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// The call parameters as read from mls-rs's group context.
    pub fn params(&self) -> CallParams {
        let ext = self
            .group()
            .context()
            .extensions
            .get(ExtensionType::new(CALL_PARAMS_EXTENSION_TYPE))
            .expect("call parameters extension in the group context");
        CallParams::decode(ext.extension_data()).unwrap()
    }

    /// RFC 9605 §5.2: `MLS-Exporter("SFrame 1.0 Base Key", "", Nk)` of the current epoch.
    pub fn exporter(&self) -> Result<BaseKey, mls_rs::error::MlsError> {
        let nk = exporter_length(self.params().sframe_suite);
        let s = self
            .group()
            .export_secret(EXPORTER_LABEL.as_bytes(), EXPORTER_CONTEXT, nk)?;
        assert_eq!(s.as_bytes().len(), nk);
        Ok(BaseKey::new(s.as_bytes()))
    }

    pub fn epoch_authenticator(&self) -> Vec<u8> {
        self.group()
            .epoch_authenticator()
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    pub fn security_code(&self) -> SecurityCode {
        SecurityCode::from_epoch_authenticator(
            &self.epoch_authenticator(),
            MemberConfig::default().security_code_groups,
        )
    }

    /// Commits adds of the KeyPackages; returns (commit, welcome). Pending until `confirm`.
    pub fn commit_add(&mut self, key_packages: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut b = self.group_mut().commit_builder();
        for kp in key_packages {
            b = b.add_member(MlsMessage::from_bytes(kp).unwrap()).unwrap();
        }
        let out = b.build().unwrap();
        assert_wire_format(&out.commit_message, self.encrypt_handshakes);
        assert_eq!(out.welcome_messages.len(), 1);
        (
            out.commit_message.to_bytes().unwrap(),
            out.welcome_messages[0].to_bytes().unwrap(),
        )
    }

    /// Commits the removal of `leaf`. Pending until `confirm`.
    pub fn commit_remove(&mut self, leaf: u32) -> Vec<u8> {
        let out = self
            .group_mut()
            .commit_builder()
            .remove_member(leaf)
            .unwrap()
            .build()
            .unwrap();
        assert_wire_format(&out.commit_message, self.encrypt_handshakes);
        out.commit_message.to_bytes().unwrap()
    }

    /// Commits a path update (empty commit with path). Pending until `confirm`.
    pub fn commit_update(&mut self) -> Vec<u8> {
        let out = self.group_mut().commit_builder().build().unwrap();
        assert_wire_format(&out.commit_message, self.encrypt_handshakes);
        assert!(out.contains_update_path);
        out.commit_message.to_bytes().unwrap()
    }

    /// The delivery service sequenced the own commit: apply it.
    pub fn confirm(&mut self) {
        self.group_mut().apply_pending_commit().unwrap();
    }

    /// Processes a sequenced commit from another member. Returns true if it removed us.
    pub fn handle_commit(&mut self, bytes: &[u8]) -> bool {
        let msg = MlsMessage::from_bytes(bytes).unwrap();
        assert_public(&msg);
        match self.group_mut().process_incoming_message(msg).unwrap() {
            ReceivedMessage::Commit(desc) => match desc.effect {
                CommitEffect::NewEpoch(_) => false,
                CommitEffect::Removed { .. } => {
                    self.removed = true;
                    true
                }
                other => panic!("unexpected commit effect {other:?}"),
            },
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    /// Seals a frame for stream `context` under the current epoch's exporter output, with the
    /// own leaf index in the KID.
    pub fn seal(&mut self, context: u64) -> Sealed {
        let (epoch, leaf, params) = (self.epoch(), self.leaf(), self.params());
        let kid = rfc9605_kid(&params, context, leaf, epoch);
        if !self.senders.contains_key(&(epoch, context)) {
            let key = self.exporter().unwrap();
            let s = FrameSender::new(params.sframe_suite, kid, &key).unwrap();
            self.senders.insert((epoch, context), s);
        }
        let (metadata, payload) = content(&self.name, "mls-rs", epoch, context);
        let sender = self.senders.get_mut(&(epoch, context)).unwrap();
        assert_eq!(sender.kid(), kid);
        let frame = sender.seal(&metadata, &payload).unwrap();
        Sealed {
            from: self.name.clone(),
            leaf,
            context,
            epoch,
            metadata,
            payload,
            frame,
        }
    }

    /// Opens a frame with the key RFC 9605 §5.2 gives for its KID from this member's latest
    /// exporter output (the only secret it holds); the KID must match the claimed sender.
    pub fn open(&mut self, s: &Sealed) -> Result<Vec<u8>, OpenError> {
        let (header, _) = Header::decode(&s.frame).unwrap();
        let params = self.params();
        assert_eq!(
            header.kid,
            rfc9605_kid(&params, s.context, s.leaf, s.epoch),
            "KID of {}'s frame",
            s.from
        );
        match self.exporter() {
            Ok(key) => self
                .receiver
                .add_key(params.sframe_suite, header.kid, &key)
                .unwrap(),
            Err(_) => {
                self.receiver.remove_key(header.kid);
            }
        }
        let (_, pt) = self.receiver.open(&s.metadata, &s.frame)?;
        Ok(pt)
    }
}

/// Seals a frame from a blindcall member (send epoch switched to the current epoch first) and
/// checks its KID against RFC 9605 §5.2.
pub fn bc_seal(call: &mut CallGroup, context: u64) -> Sealed {
    call.activate_send_epoch();
    let (epoch, leaf) = (call.epoch(), call.own_leaf());
    let name = call.identity().to_string();
    let (metadata, payload) = content(&name, "blindcall", epoch, context);
    let frame = call
        .seal(std::time::Instant::now(), context, &metadata, &payload)
        .unwrap();
    let (header, _) = Header::decode(&frame).unwrap();
    assert_eq!(header.kid, rfc9605_kid(call.params(), context, leaf, epoch));
    Sealed {
        from: name,
        leaf,
        context,
        epoch,
        metadata,
        payload,
        frame,
    }
}

/// Opens a frame at a blindcall member; on success checks who it says sent it.
pub fn bc_open(call: &mut CallGroup, s: &Sealed) -> Result<Vec<u8>, FrameError> {
    let mut buf = s.frame.clone();
    let opened = call.open(&s.metadata, &mut buf)?;
    assert_eq!(opened.sender, s.leaf);
    assert_eq!(&*opened.identity, s.from);
    assert_eq!(opened.context, s.context);
    assert_eq!(opened.epoch, s.epoch);
    Ok(opened.plaintext.to_vec())
}

/// Checks that all members are in one epoch with one security code, then has every member
/// seal a frame and every other member open it. Returns the frames and the code.
pub fn exchange_all<C: MlsConfig>(
    bcs: &mut [&mut CallGroup],
    rss: &mut [&mut RsMember<C>],
) -> (Vec<Sealed>, SecurityCode) {
    let epoch = bcs[0].epoch();
    let code = bcs[0].security_code();
    for b in bcs.iter() {
        assert_eq!(b.epoch(), epoch, "{} epoch", b.identity());
        assert_eq!(b.security_code(), code, "{} code", b.identity());
    }
    for r in rss.iter() {
        assert_eq!(r.epoch(), epoch, "{} epoch", r.name);
        assert_eq!(r.security_code(), code, "{} code", r.name);
        assert_eq!(&r.params(), bcs[0].params(), "{} call parameters", r.name);
        let m = bcs[0]
            .roster()
            .get(r.leaf())
            .expect("mls-rs member in roster");
        assert_eq!(&*m.identity, r.name);
        assert_eq!(m.signature_key, r.signature_key());
    }
    let mut frames = Vec::new();
    for b in bcs.iter_mut() {
        frames.push(bc_seal(b, 1));
    }
    for r in rss.iter_mut() {
        frames.push(r.seal(2));
    }
    for b in bcs.iter_mut() {
        let own = b.own_leaf();
        for f in frames.iter().filter(|f| f.leaf != own) {
            let pt = bc_open(b, f).unwrap_or_else(|e| {
                panic!("{} cannot open {}'s frame: {e:?}", b.identity(), f.from)
            });
            assert_eq!(pt, f.payload);
        }
    }
    for r in rss.iter_mut() {
        let own = r.leaf();
        for f in frames.iter().filter(|f| f.leaf != own) {
            let pt = r
                .open(f)
                .unwrap_or_else(|e| panic!("{} cannot open {}'s frame: {e:?}", r.name, f.from));
            assert_eq!(pt, f.payload);
        }
    }
    (frames, code)
}
