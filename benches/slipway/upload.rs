//! The registry side of the merge benchmark's "limit": how fast this machine
//! uploads to the TLS registry on loopback, and how many compressed bytes an
//! image adds on top of its base.

use std::time::Instant;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use crate::support::TestRegistry;

/// A registry client as Slipway's own (monolithic blob uploads, the test CA).
pub struct RegistryClient {
    client: Client,
    auth: RegistryAuth,
    host: String,
}

impl RegistryClient {
    pub fn new(registry: &TestRegistry) -> Self {
        let ca = std::fs::read(&registry.ca_pem).expect("read the test registry's CA");
        let config = ClientConfig {
            protocol: ClientProtocol::Https,
            use_monolithic_push: true,
            extra_root_certificates: vec![Certificate {
                encoding: CertificateEncoding::Pem,
                data: ca,
            }],
            ..Default::default()
        };
        Self {
            client: Client::new(config),
            auth: RegistryAuth::Basic(registry.user.clone(), registry.password.clone()),
            host: registry.host.clone(),
        }
    }

    fn reference(&self, repository: &str, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), repository.into(), tag.into())
    }

    /// Uploads `bytes` of random data as one blob, `tries` times (a new blob
    /// each time); returns the rate of each try in bytes per second.
    pub async fn upload_rates(&self, bytes: usize, tries: usize) -> Vec<f64> {
        let reference = self.reference("bench/upload-rate", "latest");
        self.client
            .auth(&reference, &self.auth, RegistryOperation::Push)
            .await
            .expect("authenticate to the test registry");
        let mut data = vec![0u8; bytes];
        rand_core::OsRng.fill_bytes(&mut data);
        let mut rates = Vec::new();
        for attempt in 0..tries {
            // A new blob each time, so the registry cannot answer from what it has.
            data[..8].copy_from_slice(&(attempt as u64).to_le_bytes());
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
            let body = bytes::Bytes::copy_from_slice(&data);
            let started = Instant::now();
            self.client
                .push_blob(&reference, body, &digest)
                .await
                .expect("upload the random blob to the test registry");
            rates.push(bytes as f64 / started.elapsed().as_secs_f64());
        }
        rates
    }

    /// The compressed bytes of `repository:tag` above its first `base_layers`
    /// layers: its own layers and its config, what a push must upload at least.
    pub async fn bytes_above_base(&self, repository: &str, tag: &str, base_layers: usize) -> u64 {
        let reference = self.reference(repository, tag);
        let (manifest, _) = self
            .client
            .pull_image_manifest(&reference, &self.auth)
            .await
            .unwrap_or_else(|e| panic!("manifest of {repository}:{tag}: {e}"));
        let layers: i64 = manifest
            .layers
            .iter()
            .skip(base_layers)
            .map(|l| l.size)
            .sum();
        (layers + manifest.config.size).max(0) as u64
    }
}
