//! Benchmark-only helpers (feature `bench-internals`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use openmls::prelude::MlsGroup;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;

use super::CallGroup;
use crate::error::{Error, MlsFailure};
use crate::identity::Client;

impl CallGroup {
    /// Benchmarks only: an independent copy of this member's state (MLS storage reloaded into
    /// a fresh provider, key ring re-derived). The copy can process messages and open frames
    /// but can never seal (it shares keys and counters with the original).
    pub fn duplicate_for_bench(&self) -> Result<CallGroup, Error> {
        let provider = OpenMlsRustCrypto::default();
        {
            let src = self
                .client
                .provider
                .storage()
                .values
                .read()
                .map_err(|_| MlsFailure::Storage)?;
            let mut dst = provider
                .storage()
                .values
                .write()
                .map_err(|_| MlsFailure::Storage)?;
            dst.clone_from(&src);
        }
        let group = MlsGroup::load(provider.storage(), self.group.group_id())
            .map_err(|_| MlsFailure::Storage)?
            .ok_or(MlsFailure::Unreachable("group missing from copied storage"))?;
        let signer = SignatureKeyPair::read(
            provider.storage(),
            self.client.signer.public(),
            self.client.signer.signature_scheme(),
        )
        .ok_or(MlsFailure::Unreachable(
            "signature key missing from copied storage",
        ))?;
        let client = Client {
            provider,
            signer,
            credential: self.client.credential.clone(),
            suite: self.client.suite,
            identity: Arc::clone(&self.client.identity),
            signs_media: self.client.signs_media,
        };
        Ok(CallGroup {
            client,
            group,
            params: self.params.clone(),
            config: self.config,
            keyring: self.keyring.duplicate(self.config.replay_window),
            roster: Arc::clone(&self.roster),
            senders: BTreeMap::new(),
            send_epoch: self.send_epoch,
            pending: self.pending,
            next_pending_id: self.next_pending_id,
            path_update: self.path_update,
            switch_at: self.switch_at,
            leaving: self.leaving,
            active: self.active,
            events: VecDeque::new(),
            confirm: crate::confirm::Confirmations::new(self.config.confirm_timeout),
            outbox: VecDeque::new(),
            own_confirmation: None,
            media_signer: crate::media_auth::ManifestSigner::new(
                self.own_leaf(),
                0,
                crate::media_auth::SignerConfig::default(),
            ),
            verifier: crate::media_auth::MediaVerifier::new(
                self.params.layout,
                crate::media_auth::VerifierConfig::default(),
            ),
            manifest_bindings: self.manifest_bindings.clone(),
            now: self.now,
            media_disabled: true,
        })
    }

    /// Benchmarks only: bytes of this member's MLS storage (keys plus values).
    pub fn storage_bytes(&self) -> usize {
        self.client
            .provider
            .storage()
            .values
            .read()
            .map(|m| m.iter().map(|(k, v)| k.len() + v.len()).sum())
            .unwrap_or(0)
    }
}
