//! A registry with a token service (distribution's `auth: token`, as Harbor,
//! GitLab's registry and Docker Hub have): every raw request Slipway makes,
//! the relay's streamed uploads and deletes among them, gets a bearer token
//! for the scope the registry's challenge names, as oci-client's calls do.

use std::path::PathBuf;

use crate::support::*;
use serde_json::json;
use slipway::registry::{Deleted, Registry, RegistrySettings};
use slipway::secret::Secret;
use slipway::types::ImageName;

const REPO: &str = "acme/tokens";

async fn publish_on_a_token_registry(push_path: &str) {
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start_with_token_service();
    let slipway =
        Slipway::start(SlipwayOptions::new(&github, &registry).env("SLIPWAY_PUSH_PATH", push_path))
            .await;
    let sha = sha();
    let manifest = json!({"services": [{"name": "api", "version": "2.0.0", "context": "."}]});
    github.add_commit_files(
        REPO,
        &sha,
        &[
            ("dockerInfo.json", &manifest.to_string()),
            (
                "Dockerfile",
                &format!(
                    "FROM {BASE_IMAGE}\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n"
                ),
            ),
            ("hello.txt", "token-auth"),
        ],
    );
    let id = slipway.merge(REPO, &sha).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(
        record["status"],
        "succeeded",
        "{record}\n{log}\n{}",
        slipway.log()
    );
    let path_line = match push_path {
        "relay" => "[api] pushed by the engine through the loopback relay",
        _ => "[api] exported ",
    };
    assert!(log.contains(path_line), "{log}");
    assert_eq!(registry.tags("api"), vec!["2.0.0"]);

    let tokens = registry.token_service.as_ref().expect("a token service");
    assert!(
        tokens
            .issued()
            .iter()
            .any(|scope| scope == "repository:api:pull,push"),
        "Slipway asked for push rights on api: {:?}",
        tokens.issued()
    );
    let image = format!("{}/api:2.0.0", registry.host);
    pull_fresh(&image);
    assert_eq!(docker_run(&image, &[]).trim(), "token-auth");
    for text in [log, slipway.log()] {
        assert!(!text.contains(&registry.password), "the password leaked");
        assert!(!text.contains("Bearer ey"), "a token leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_pushes_to_a_registry_that_wants_bearer_tokens() {
    publish_on_a_token_registry("relay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_path_pushes_to_a_registry_that_wants_bearer_tokens() {
    publish_on_a_token_registry("export").await;
}

fn client_of(registry: &TestRegistry, password: &str) -> Registry {
    let password = Secret::new(password);
    let ca: PathBuf = registry.ca_pem.clone();
    Registry::new(&RegistrySettings {
        host: &registry.host,
        ca_file: Some(&ca),
        user: Some(&registry.user),
        password: Some(&password),
        namespace: None,
        plain_http: false,
    })
    .expect("a registry client")
}

/// Deletes need the `delete` action, which no push token carries: the
/// registry's challenge names it and a token for it is fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_is_deleted_with_a_token_for_the_delete_scope() {
    let registry = TestRegistry::start_with_token_service();
    let image = format!("{}/gone:1.0.0", registry.host);
    docker(&["tag", BASE_IMAGE, &image]);
    docker(&["push", &image]);
    let digest = docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &image]);
    let digest = digest
        .trim()
        .rsplit('@')
        .next()
        .expect("a digest")
        .to_string();
    let _ = std::process::Command::new("docker")
        .args(["rmi", &image])
        .output();

    let name = ImageName::parse("gone").expect("an image name");
    let wrong = client_of(&registry, "not-the-password");
    let refused = wrong.delete_manifest(&name, &digest).await;
    assert!(
        matches!(
            refused,
            Err(slipway::registry::RegistryError::Unauthorized { .. })
        ),
        "{refused:?}"
    );
    assert_eq!(
        registry.tags("gone"),
        vec!["1.0.0"],
        "nothing deleted with wrong credentials"
    );

    let client = client_of(&registry, &registry.password);
    assert_eq!(
        client.delete_manifest(&name, &digest).await.ok(),
        Some(Deleted::Deleted)
    );
    assert!(
        registry.tags("gone").is_empty(),
        "the tag went with its manifest"
    );
    assert_eq!(
        client.delete_manifest(&name, &digest).await.ok(),
        Some(Deleted::Absent)
    );
    let issued = registry.token_service.as_ref().expect("tokens").issued();
    assert!(
        issued
            .iter()
            .any(|scope| scope.contains("gone") && scope.contains("delete")),
        "{issued:?}"
    );
}
