//! `slipway certs`: a CA and a server certificate signed by it, for the
//! registry. Made with rcgen so it works the same everywhere (no openssl).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The files `certs` writes, in the folder given.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0} exists already; pass --force to replace the keys and certificates")]
    Exists(PathBuf),
    #[error("--hosts is empty: name at least one host the registry is reached by")]
    NoHosts,
    #[error("could not make the certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("could not write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub files: Vec<PathBuf>,
}

pub fn write(out: &Path, hosts: &[String], force: bool) -> Result<Written, CertsError> {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err(CertsError::NoHosts);
    }
    let names = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY];
    if !force {
        if let Some(existing) = names.iter().map(|n| out.join(n)).find(|p| p.exists()) {
            return Err(CertsError::Exists(existing));
        }
    }
    let (ca_pem, ca_key_pem, server_pem, server_key_pem) = generate(&hosts)?;
    std::fs::create_dir_all(out).map_err(|source| CertsError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let contents = [
        (CA_CERT, ca_pem, 0o644),
        (CA_KEY, ca_key_pem, 0o600),
        (SERVER_CERT, server_pem, 0o644),
        (SERVER_KEY, server_key_pem, 0o600),
    ];
    let mut files = Vec::new();
    for (name, pem, mode) in contents {
        let path = out.join(name);
        write_file(&path, pem.as_bytes(), mode).map_err(|source| CertsError::Write {
            path: path.clone(),
            source,
        })?;
        files.push(path);
    }
    Ok(Written { files })
}

fn generate(hosts: &[String]) -> Result<(String, String, String, String), CertsError> {
    let now = OffsetDateTime::now_utc();
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Slipway registry CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(3650);
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = CertifiedIssuer::self_signed(ca, ca_key)?;

    // rcgen turns names that parse as IP addresses into IP SANs.
    let mut server = CertificateParams::new(hosts.to_vec())?;
    server
        .distinguished_name
        .push(DnType::CommonName, hosts[0].clone());
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - Duration::days(1);
    // Clients such as Apple's refuse server certificates valid for longer.
    server.not_after = now + Duration::days(825);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    Ok((
        issuer.pem(),
        ca_key_pem,
        server_cert.pem(),
        server_key.serialize_pem(),
    ))
}

pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = vec!["registry".to_string(), "127.0.0.1".to_string()];
        write(dir.path(), &hosts, false).expect("first");
        let ca_before = std::fs::read(dir.path().join(CA_KEY)).expect("key");
        assert!(matches!(
            write(dir.path(), &hosts, false),
            Err(CertsError::Exists(_))
        ));
        assert_eq!(
            std::fs::read(dir.path().join(CA_KEY)).expect("key"),
            ca_before
        );
        write(dir.path(), &hosts, true).expect("forced");
        assert_ne!(
            std::fs::read(dir.path().join(CA_KEY)).expect("key"),
            ca_before
        );
        assert!(matches!(
            write(dir.path(), &[], true),
            Err(CertsError::NoHosts)
        ));
    }
}
