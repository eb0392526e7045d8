//! The stack a team runs. No image can be pulled here, so the compose file is
//! checked with `docker-compose config`, and the same topology is started
//! without compose, from the repository's own files.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value as Yaml;
use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn slipway_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
}

/// `KEY=VALUE` lines of compose/.env.example.
fn env_example() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("compose/.env.example"))
        .expect(".env.example");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `docker-compose config` of the stack, from a copy of the repository's
/// files with a `.env` made from the example.
fn compose_config() -> Yaml {
    let dir = tempfile::tempdir().expect("tempdir");
    for folder in ["compose", "registry-config", "certs"] {
        copy_dir(&Path::new(ROOT).join(folder), &dir.path().join(folder));
    }
    std::fs::copy(
        dir.path().join("compose/.env.example"),
        dir.path().join("compose/.env"),
    )
    .expect(".env");
    let file = dir.path().join("compose/docker-compose.yml");
    let output = ["docker-compose", "docker"]
        .iter()
        .find_map(|tool| {
            let mut cmd = Command::new(tool);
            if *tool == "docker" {
                cmd.arg("compose");
            }
            let out = cmd.arg("-f").arg(&file).arg("config").output().ok()?;
            out.status.success().then_some(out)
        })
        .expect("docker-compose config (or docker compose config) accepts the file");
    serde_yaml::from_slice(&output.stdout).expect("compose config is YAML")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_file() {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy");
        }
    }
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .map(|v| {
                    serde_yaml::to_string(v)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_wires_the_stack() {
    let config = compose_config();
    let services = &config["services"];
    let registry = &services["registry"];
    assert_eq!(registry["image"].as_str(), Some("registry:2"));
    let published: Vec<(u64, u64)> = registry["ports"]
        .as_sequence()
        .expect("registry ports")
        .iter()
        .filter_map(|p| {
            Some((
                p["published"]
                    .as_u64()
                    .or_else(|| p["published"].as_str()?.parse().ok())?,
                p["target"].as_u64()?,
            ))
        })
        .collect();
    assert_eq!(
        published,
        vec![(5443, 5443)],
        "users pull through localhost:5443"
    );
    assert!(
        registry["healthcheck"]["test"].as_sequence().is_some(),
        "registry has a health check"
    );
    let registry_volumes = strings(&registry["volumes"]);
    assert!(
        registry_volumes
            .iter()
            .any(|v| v.contains("registry-data:/var/lib/registry")),
        "{registry_volumes:?}"
    );
    assert!(registry_volumes
        .iter()
        .any(|v| v.contains("registry-config/config.yml:/etc/docker/registry/config.yml")));

    let slipway = &services["slipway"];
    assert_eq!(
        slipway["depends_on"]["registry"]["condition"].as_str(),
        Some("service_healthy")
    );
    let volumes = strings(&slipway["volumes"]);
    assert!(
        volumes
            .iter()
            .any(|v| v.contains("/var/run/docker.sock:/var/run/docker.sock")),
        "{volumes:?}"
    );
    assert!(
        volumes.iter().any(|v| v.contains("slipway-data:/data")),
        "{volumes:?}"
    );
    assert_eq!(
        slipway["build"]["dockerfile"].as_str(),
        Some("compose/Dockerfile")
    );
    let environment = slipway["environment"].as_mapping().expect("environment");
    assert_eq!(
        environment.get("SLIPWAY_REGISTRY").and_then(Yaml::as_str),
        Some("registry:5443")
    );

    // Signing is on by default, with a key the setup step makes once.
    assert_eq!(
        environment
            .get("SLIPWAY_SIGNING_KEY")
            .and_then(Yaml::as_str),
        Some("/signing/cosign.key")
    );
    assert!(
        volumes.iter().any(|v| v.contains(":/signing")),
        "{volumes:?}"
    );
    let setup = strings(&services["setup"]["command"]).join(" ");
    assert!(
        setup.contains("test -f /signing/cosign.key || slipway keygen --out /signing"),
        "{setup}"
    );

    let ngrok = &services["ngrok"];
    assert_eq!(strings(&ngrok["command"]), vec!["http", "slipway:8080"]);
    assert!(
        strings(&ngrok["ports"]).iter().any(|p| p.contains("4040")),
        "inspection UI on 4040"
    );
    for volume in ["registry-data", "slipway-data"] {
        assert!(
            config["volumes"].get(volume).is_some(),
            "named volume {volume}"
        );
    }

    // Every variable the stack passes to Slipway is one `slipway serve` knows.
    let help = slipway_cmd()
        .args(["serve", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    let mut names: Vec<String> = environment
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .filter(|k| k.starts_with("SLIPWAY_"))
        .collect();
    names.extend(
        env_example()
            .into_keys()
            .filter(|k| k.starts_with("SLIPWAY_")),
    );
    for name in names {
        assert!(
            help.contains(&format!("env: {name}")),
            "{name} is not an option of slipway serve"
        );
    }
}

#[test]
fn certs_chain_verifies_with_the_right_names_and_usages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("certs");
    let status = slipway_cmd()
        .args(["certs", "--out"])
        .arg(&out)
        .status()
        .expect("certs");
    assert!(status.success());
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ca = out.join("ca.crt");
    let server = out.join("server.crt");
    let verified = openssl(&[
        "verify",
        "-purpose",
        "sslserver",
        "-CAfile",
        &ca.display().to_string(),
        &server.display().to_string(),
    ]);
    assert!(verified.contains(": OK"), "{verified}");
    let text = openssl(&[
        "x509",
        "-in",
        &server.display().to_string(),
        "-noout",
        "-text",
    ]);
    for expected in [
        "DNS:registry",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "TLS Web Server Authentication",
        "Digital Signature",
        "CA:FALSE",
    ] {
        assert!(
            text.contains(expected),
            "server certificate lacks {expected}:\n{text}"
        );
    }
    let ca_text = openssl(&["x509", "-in", &ca.display().to_string(), "-noout", "-text"]);
    assert!(
        ca_text.contains("CA:TRUE") && ca_text.contains("Certificate Sign"),
        "{ca_text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(out.join("server.key"))
        .expect("key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);

    let again = slipway_cmd()
        .args(["certs", "--out"])
        .arg(&out)
        .output()
        .expect("certs again");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let custom = slipway_cmd()
        .args([
            "certs",
            "--force",
            "--hosts",
            "registry.example.com,10.1.2.3",
            "--out",
        ])
        .arg(&out)
        .status()
        .expect("certs");
    assert!(custom.success());
    let text = openssl(&[
        "x509",
        "-in",
        &server.display().to_string(),
        "-noout",
        "-text",
    ]);
    assert!(
        text.contains("DNS:registry.example.com") && text.contains("IP Address:10.1.2.3"),
        "{text}"
    );
}

fn registry_user(name: &str, password: &str) -> String {
    let mut child = slipway_cmd()
        .args(["registry-user", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("registry-user");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write password");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Debian's docker-registry run with registry-config/config.yml, its paths
/// pointed at temporary ones through REGISTRY_* overrides.
struct ConfiguredRegistry {
    child: std::process::Child,
    host: String,
}

impl Drop for ConfiguredRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_configured_registry(dir: &Path, certs: &Path) -> ConfiguredRegistry {
    let port = free_port();
    let debug_port = free_port();
    let log = std::fs::File::create(dir.join("registry.log")).expect("log");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(Path::new(ROOT).join("registry-config/config.yml"))
        .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "REGISTRY_HTTP_DEBUG_ADDR",
            format!("127.0.0.1:{debug_port}"),
        )
        .env("REGISTRY_HTTP_TLS_CERTIFICATE", certs.join("server.crt"))
        .env("REGISTRY_HTTP_TLS_KEY", certs.join("server.key"))
        .env("REGISTRY_AUTH_HTPASSWD_PATH", dir.join("htpasswd"))
        .env(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            dir.join("storage"),
        )
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("docker-registry");
    let health = format!("http://127.0.0.1:{debug_port}/debug/health");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = Command::new("curl")
            .args(["-sf", &health])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registry health: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ConfiguredRegistry {
        child,
        host: format!("127.0.0.1:{port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_from_the_repository_files_publishes_a_pullable_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    assert!(slipway_cmd()
        .args(["certs", "--hosts", "registry,localhost,127.0.0.1", "--out"])
        .arg(&certs)
        .status()
        .expect("certs")
        .success());
    let env = env_example();
    let user = env["SLIPWAY_REGISTRY_USER"].clone();
    let password = env["SLIPWAY_REGISTRY_PASSWORD"].clone();
    std::fs::write(dir.path().join("htpasswd"), registry_user(&user, &password)).expect("htpasswd");
    let registry = start_configured_registry(dir.path(), &certs);

    let github = FakeGitHub::start().await;
    let mut options = SlipwayOptions {
        github_api: github.api_url(),
        registry: registry.host.clone(),
        registry_ca: Some(certs.join("ca.crt")),
        registry_user: None,
        registry_password: None,
        extra: vec![],
    };
    // As compose passes them; the test keeps its own webhook secret to sign with.
    for (key, value) in env
        .iter()
        .filter(|(k, _)| k.starts_with("SLIPWAY_") && *k != "SLIPWAY_WEBHOOK_SECRET")
    {
        options = options.env(key, value);
    }
    let slipway = Slipway::start(options).await;
    let sha = sha();
    github.add_commit_files(
        "acme/stack",
        &sha,
        &[
            (
                "dockerInfo.json",
                r#"{"service_name":"stacked","version":"1.0.0"}"#,
            ),
            (
                "Dockerfile",
                "FROM slipway-test-base:1\nCMD [\"echo\", \"from the stack\"]\n",
            ),
        ],
    );
    let body = merged_pr_payload("acme/stack", &sha, 1, "main").to_string();
    let (status, answer) = slipway
        .deliver("pull_request", &uuid(), body.as_bytes())
        .await;
    assert_eq!(status, 202, "{answer}");
    let record = slipway
        .wait_for(answer["build_id"].as_str().expect("id"))
        .await;
    assert_eq!(record["status"], "succeeded", "{record}\n{}", slipway.log());

    let image = format!("{}/stacked:1.0.0", registry.host);
    let mut login = Command::new("docker")
        .args(["login", &registry.host, "-u", &user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("docker login");
    writeln!(login.stdin.take().expect("stdin"), "{password}").expect("password");
    assert!(login.wait().expect("login").success());
    pull_fresh(&image);
    assert_eq!(docker_run(&image, &[]).trim(), "from the stack");
    let _ = Command::new("docker")
        .args(["logout", &registry.host])
        .output();
}

#[tokio::test]
async fn tunnel_url_reads_ngrok_and_shows_on_the_page() {
    use warp::Filter;
    let answer = serde_json::json!({"tunnels": [
        {"name": "command_line (http)", "public_url": "http://7f3a.ngrok.app", "proto": "http"},
        {"name": "command_line", "public_url": "https://7f3a.ngrok.app", "proto": "https", "config": {"addr": "http://slipway:8080"}}
    ], "uri": "/api/tunnels"});
    let route = warp::path!("api" / "tunnels").map(move || warp::reply::json(&answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(warp::serve(route).incoming(listener).run());

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["tunnel-url", "--ngrok-api", &api])
        .output()
        .await
        .expect("tunnel-url");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "https://7f3a.ngrok.app"
    );

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["tunnel-url", "--ngrok-api", &nowhere])
        .output()
        .await
        .expect("tunnel-url");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));

    let github = FakeGitHub::start().await;
    let options = SlipwayOptions::without_registry(&github).env("SLIPWAY_NGROK_API", &api);
    let slipway = Slipway::start(options).await;
    let page = reqwest::get(&slipway.url)
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("https://7f3a.ngrok.app/webhook"), "{page}");
}

#[test]
fn serve_refuses_to_start_with_a_clear_reason() {
    let base = ["serve", "--webhook-secret", "s", "--registry", "r:1"];
    let cases: [(&[&str], &str); 3] = [
        (&["serve"], "--webhook-secret"),
        (
            &["--registry-ca", "/nonexistent/ca.pem"],
            "/nonexistent/ca.pem",
        ),
        // Root may write anywhere but /proc: an unwritable data dir.
        (&["--data-dir", "/proc/slipway-data"], "/proc/slipway-data"),
    ];
    for (extra, expected) in cases {
        let args: Vec<&str> = if extra[0] == "serve" {
            extra.to_vec()
        } else {
            base.iter().chain(extra).copied().collect()
        };
        let out = slipway_cmd().args(&args).env_clear().output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}
