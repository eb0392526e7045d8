//! What retention reads beyond what publishing does: a manifest by digest,
//! to tell an attachment whose image is gone from one whose image is there
//! untagged (a publish under way). Deletes are `Registry::delete_manifest`.

use super::error::is_not_found;
use super::{Registry, RegistryError, ACCEPTED_MANIFESTS};
use crate::types::ImageName;

impl Registry {
    /// The manifest `NAME@DIGEST`, or none when the registry no longer has it.
    pub async fn manifest_by_digest(
        &self,
        name: &ImageName,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let reference = self.by_digest(name, digest);
        self.retrying(&format!("reading manifest {digest}"), || async {
            self.authenticate(&reference).await?;
            match self
                .client
                .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFESTS)
                .await
            {
                Ok((manifest, _)) => Ok(Some(manifest.to_vec())),
                Err(err) if is_not_found(&err) => Ok(None),
                Err(err) => Err(self.classify(err, reference.repository())),
            }
        })
        .await
    }
}
