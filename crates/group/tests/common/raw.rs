//! A participant running raw openmls (not our client): it can send what our client refuses
//! to create, and it holds the group's secrets to forge media.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use blindcall_group::{EXPORTER_LABEL, MlsSuite};
use blindcall_sframe::{
    BaseKey, CipherSuite, Counter, Sender as FrameSender, mls::sender_base_key,
};
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, ExtensionType, KeyPackage, MlsGroup,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
    StagedWelcome, tls_codec::Deserialize as _,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;

const CALL_EXT: u16 = blindcall_group::config::CALL_PARAMS_EXTENSION_TYPE;

/// A participant using openmls directly.
pub struct Raw {
    pub provider: OpenMlsRustCrypto,
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
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
        }
    }

    pub fn key_package(&self) -> KeyPackage {
        KeyPackage::builder()
            .leaf_node_capabilities(
                Capabilities::builder()
                    .extensions(vec![ExtensionType::Unknown(CALL_EXT)])
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
            .clone()
    }

    pub fn join(&self, welcome: &[u8]) -> MlsGroup {
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
        StagedWelcome::new_from_welcome(&self.provider, &cfg, w, None)
            .unwrap()
            .into_group(&self.provider)
            .unwrap()
    }
}

/// Seals `payload` as if `leaf` had sent it on stream `context` with counter `ctr`, using the
/// epoch secret a member of `group` (the forger) holds: what any member can do with the
/// group's shared SFrame keys.
pub fn forge(
    group: &MlsGroup,
    raw: &Raw,
    layout: blindcall_group::KidLayout,
    leaf: u32,
    context: u64,
    ctr: u64,
    payload: &[u8],
) -> Vec<u8> {
    let suite = CipherSuite::AES_128_GCM_SHA256_128;
    let secret = group
        .export_secret(raw.provider.crypto(), EXPORTER_LABEL, &[], suite.nk())
        .unwrap();
    let epoch = group.epoch().as_u64();
    let base = sender_base_key(suite, &BaseKey::from_vec(secret), leaf).unwrap();
    let kid = layout.encode(context, leaf, epoch).unwrap();
    let mut sender = FrameSender::with_counter(suite, kid, &base, Counter(ctr)).unwrap();
    sender.seal(b"meta", payload).unwrap()
}
