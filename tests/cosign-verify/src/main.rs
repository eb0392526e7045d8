//! `cosign-verify IMAGE CA_PEM PUBLIC_KEY_PEM`: verifies IMAGE's cosign
//! signatures (`sha256-<hex>.sig`) with sigstore-rs and the public key, as
//! `cosign verify --key --insecure-ignore-tlog` does. Registry credentials come
//! from REGISTRY_USER and REGISTRY_PASSWORD. Prints `verified REFERENCE DIGEST`
//! per signature; exits 1 when the key satisfies none.
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};
use sigstore::cosign::{ClientBuilder, CosignCapabilities};
use sigstore::registry::{Auth, Certificate, CertificateEncoding, ClientConfig, OciReference};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, ca, key] = args.as_slice() else {
        return Err("usage: cosign-verify IMAGE CA_PEM PUBLIC_KEY_PEM".into());
    };
    let config = ClientConfig {
        extra_root_certificates: vec![Certificate {
            encoding: CertificateEncoding::Pem,
            data: std::fs::read(ca)?,
        }],
        ..Default::default()
    };
    let mut client = ClientBuilder::default()
        .with_oci_client_config(config)
        .build()?;
    let image: OciReference = image.parse()?;
    let auth = Auth::Basic(
        std::env::var("REGISTRY_USER")?,
        std::env::var("REGISTRY_PASSWORD")?,
    );
    let layers = client.trusted_signature_layers(&auth, &image).await?;
    let verifier = PublicKeyVerifier::try_from(&std::fs::read(key)?)?;
    let constraints: VerificationConstraintVec = vec![Box::new(verifier)];
    if let Err(err) = sigstore::cosign::verify_constraints(&layers, constraints.iter()) {
        eprintln!("not verified: {err}");
        std::process::exit(1);
    }
    for layer in &layers {
        let critical = &layer.simple_signing.critical;
        println!(
            "verified {} {}",
            critical.identity.docker_reference, critical.image.docker_manifest_digest
        );
    }
    Ok(())
}
