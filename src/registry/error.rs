//! What a registry's failures mean, and what to do about them.

use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::{export, Registry};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry} rejected the credentials{} (401): check --registry-user and --registry-password", user_note(.user))]
    Unauthorized {
        registry: String,
        user: Option<String>,
    },
    #[error("registry {registry} denied access to {repository} (403): the user lacks push rights")]
    Forbidden {
        registry: String,
        repository: String,
    },
    #[error("the TLS certificate of registry {registry} is not trusted ({reason}): pass the CA that signed it with --registry-ca")]
    Untrusted { registry: String, reason: String },
    #[error("registry {registry} unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("registry {registry} failed: {reason}")]
    Failed { registry: String, reason: String },
    #[error("registry {registry} reports manifest digest {reported}, but the pushed manifest is {expected}")]
    DigestMismatch {
        registry: String,
        expected: String,
        reported: String,
    },
    #[error("could not read the CA file {path}: {reason}")]
    BadCa { path: String, reason: String },
    #[error("{0}")]
    Export(#[from] export::ExportError),
}

fn user_note(user: &Option<String>) -> String {
    user.as_ref()
        .map(|u| format!(" of user `{u}`"))
        .unwrap_or_default()
}

impl RegistryError {
    pub(super) fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Unreachable { .. } | RegistryError::Failed { .. }
        )
    }
}

impl Registry {
    pub(super) fn failed(&self, reason: String) -> RegistryError {
        RegistryError::Failed {
            registry: self.host.clone(),
            reason,
        }
    }

    /// Maps the client's errors to ones that say what to do.
    pub(super) fn classify(&self, err: OciDistributionError, repository: &str) -> RegistryError {
        let registry = self.host.clone();
        let status = match &err {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => 401,
            OciDistributionError::ServerError { code, .. } => *code,
            OciDistributionError::RegistryError { envelope, .. } => {
                envelope_status(&envelope.errors)
            }
            OciDistributionError::RequestError(e) => return self.request_error(e),
            _ => 0,
        };
        match status {
            401 => RegistryError::Unauthorized {
                registry,
                user: self.user.clone(),
            },
            403 => RegistryError::Forbidden {
                registry,
                repository: repository.to_string(),
            },
            s if s >= 500 || s == 429 => RegistryError::Unreachable {
                registry,
                reason: format!("answered {s}"),
            },
            _ => RegistryError::Failed {
                registry,
                reason: short(&err.to_string()),
            },
        }
    }

    pub(super) fn request_error(&self, err: &reqwest::Error) -> RegistryError {
        let registry = self.host.clone();
        let chain = error_chain(err);
        let tls = ["certificate", "UnknownIssuer", "x509", "InvalidCertificate"];
        if tls.iter().any(|needle| chain.contains(needle)) {
            return RegistryError::Untrusted {
                registry,
                reason: short(&chain),
            };
        }
        let reason = if err.is_timeout() {
            "timed out".to_string()
        } else if err.is_connect() {
            format!("could not connect ({})", short(&chain))
        } else {
            short(&chain)
        };
        RegistryError::Unreachable { registry, reason }
    }
}

fn envelope_status(errors: &[oci_client::errors::OciError]) -> u16 {
    let codes: Vec<&OciErrorCode> = errors.iter().map(|e| &e.code).collect();
    if codes
        .iter()
        .any(|c| matches!(c, OciErrorCode::Unauthorized))
    {
        401
    } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
        403
    } else if codes
        .iter()
        .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown))
    {
        404
    } else {
        400
    }
}

pub(super) fn is_not_found(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope_status(&envelope.errors) == 404
        }
        _ => false,
    }
}

pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(inner) = source {
        parts.push(format!("{inner:?}"));
        source = inner.source();
    }
    parts.join(": ")
}

pub(super) fn short(text: &str) -> String {
    text.chars().take(300).collect()
}
