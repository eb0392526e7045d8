//! What retention reads beyond what publishing does: a manifest by digest,
//! to tell an attachment whose image is gone from one whose image is there
//! untagged (a publish under way). Deletes are `Registry::delete_manifest`.

use super::{Registry, RegistryError};
use crate::types::ImageName;

impl Registry {
    /// The manifest `NAME@DIGEST`, or none when the registry no longer has it.
    pub async fn manifest_by_digest(
        &self,
        name: &ImageName,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let reference = self.by_digest(name, digest);
        let what = format!("reading manifest {digest}");
        let pulled = self
            .retrying(&what, || self.pull_manifest(&reference))
            .await?;
        Ok(pulled.map(|(manifest, _)| manifest))
    }
}
