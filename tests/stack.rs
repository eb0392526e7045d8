//! The stack a team runs. No image can be pulled here, so the compose file is
//! checked with `docker-compose config`, and the same topology is started
//! without compose, from the repository's own files.

// These tests use part of the shared harness; tests/it/ uses all of it.
#[allow(dead_code, unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// Where the Debian 13 Docker packages are unpacked (scripts/engines.sh),
/// compose v2's plugin among them.
const TRIXIE_DOCKER_CONFIG: &str = "/opt/slipway-trixie/docker-config";

/// A compose tool: Debian 12's `docker-compose` (1.29), or the `docker
/// compose` plugin (v2) found through the default CLI config or Debian 13's.
#[derive(Debug, Clone)]
struct ComposeTool {
    program: &'static str,
    args: &'static [&'static str],
    docker_config: Option<&'static str>,
}

impl ComposeTool {
    fn command(&self) -> Command {
        let mut cmd = Command::new(self.program);
        cmd.args(self.args);
        if let Some(dir) = self.docker_config {
            cmd.env("DOCKER_CONFIG", dir);
        }
        cmd
    }

    fn is_v2(&self) -> bool {
        self.program == "docker"
    }

    fn version(&self) -> Option<String> {
        let out = self.command().arg("version").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The compose tools on this machine, each where present.
fn compose_tools() -> Vec<ComposeTool> {
    [
        ComposeTool {
            program: "docker-compose",
            args: &[],
            docker_config: None,
        },
        ComposeTool {
            program: "docker",
            args: &["compose"],
            docker_config: None,
        },
        ComposeTool {
            program: "docker",
            args: &["compose"],
            docker_config: Some(TRIXIE_DOCKER_CONFIG),
        },
    ]
    .into_iter()
    .filter(|tool| tool.version().is_some())
    .collect()
}

/// `config` of the stack by every compose tool present, from a copy of the
/// repository's files as a fresh clone has them: no `compose/.env`.
fn compose_configs() -> Vec<Yaml> {
    let dir = tempfile::tempdir().expect("tempdir");
    for folder in ["compose", "registry-config", "certs"] {
        copy_dir(&Path::new(ROOT).join(folder), &dir.path().join(folder));
    }
    assert!(!dir.path().join("compose/.env").exists());
    let file = dir.path().join("compose/docker-compose.yml");
    let tools = compose_tools();
    assert!(
        !tools.is_empty(),
        "neither docker-compose nor docker compose is installed"
    );
    tools
        .iter()
        .map(|tool| {
            let output = tool
                .command()
                .arg("-f")
                .arg(&file)
                .arg("config")
                .env_remove("NGROK_AUTHTOKEN")
                .output()
                .expect("compose runs");
            assert!(
                output.status.success(),
                "{tool:?} config rejects the file without compose/.env: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_yaml::from_slice(&output.stdout).expect("compose config is YAML")
        })
        .collect()
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

/// `(host IP, published, target)` of each port, from either form compose
/// prints (`127.0.0.1:8080:8080/tcp`, or a mapping).
fn published_ports(value: &Yaml) -> Vec<(String, u64, u64)> {
    let number = |v: &Yaml| v.as_u64().or_else(|| v.as_str()?.parse().ok());
    value
        .as_sequence()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|port| match port.as_str() {
                    Some(text) => {
                        let text = text.split('/').next()?;
                        let parts: Vec<&str> = text.split(':').collect();
                        let (ip, published, target) = match parts.as_slice() {
                            [ip, published, target] => (ip.to_string(), *published, *target),
                            [published, target] => (String::new(), *published, *target),
                            _ => return None,
                        };
                        Some((ip, published.parse().ok()?, target.parse().ok()?))
                    }
                    None => Some((
                        port["host_ip"].as_str().unwrap_or_default().to_string(),
                        number(&port["published"])?,
                        number(&port["target"])?,
                    )),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A sequence's items as text; a volume compose v2 prints in long form
/// (`source`, `target`, `read_only`) reads `SOURCE:TARGET[:ro]`, as v1 prints it.
fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .map(|v| match (v["source"].as_str(), v["target"].as_str()) {
                    (Some(source), Some(target)) => {
                        let ro = if v["read_only"].as_bool() == Some(true) {
                            ":ro"
                        } else {
                            ""
                        };
                        format!("{source}:{target}{ro}")
                    }
                    _ => serde_yaml::to_string(v)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_wires_the_stack() {
    for config in compose_configs() {
        wires_the_stack(&config);
    }
}

fn wires_the_stack(config: &Yaml) {
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

    // Nothing to set for the socket's group: the image's entrypoint joins it.
    for name in ["slipway", "slipway-worker"] {
        assert!(
            services[name].get("group_add").is_none(),
            "{name} needs no group_add: {:?}",
            services[name]["group_add"]
        );
    }
    // The host's engine pushes through the relay on the host's loopback,
    // and only there.
    assert_eq!(
        environment
            .get("SLIPWAY_RELAY_LISTEN")
            .and_then(Yaml::as_str),
        Some("0.0.0.0:5444")
    );
    assert_eq!(
        environment
            .get("SLIPWAY_RELAY_ADVERTISE")
            .and_then(Yaml::as_str),
        Some("127.0.0.1:5444")
    );
    let slipway_ports = published_ports(&slipway["ports"]);
    assert!(
        slipway_ports.contains(&("127.0.0.1".to_string(), 5444, 5444)),
        "{slipway_ports:?}"
    );
    for (host_ip, _, _) in &slipway_ports {
        assert_eq!(host_ip, "127.0.0.1", "{slipway_ports:?}");
    }
    // (compose v2 leaves the scale profile's services out of `config`.)
    if let Some(worker) = services.get("slipway-worker") {
        assert_eq!(
            worker["environment"]["SLIPWAY_PUSH_PATH"].as_str(),
            Some("export"),
            "workers do not share the relay's port"
        );
    }

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
    let setup = std::fs::read_to_string(Path::new(ROOT).join("compose/setup.sh"))
        .expect("compose/setup.sh");
    assert!(
        setup.contains(r#"test -f "$SIGNING/cosign.key" || slipway keygen --out "$SIGNING""#),
        "{setup}"
    );

    let ngrok = &services["ngrok"];
    let command = strings(&ngrok["command"]).join(" ");
    assert!(
        command.contains("ngrok http slipway:8080")
            && command.contains("NGROK_AUTHTOKEN is not set"),
        "{command}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.contains("slipway-secrets:/secrets")),
        "{volumes:?}"
    );
    assert_eq!(
        environment
            .get("SLIPWAY_SECRETS_DIR")
            .and_then(Yaml::as_str),
        Some("/secrets")
    );
    assert!(
        strings(&ngrok["ports"]).iter().any(|p| p.contains("4040")),
        "inspection UI on 4040"
    );
    for volume in ["registry-data", "slipway-data", "slipway-secrets"] {
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
    // Read before the command line, by every command.
    let top_help = slipway_cmd().arg("--help").output().expect("help");
    let top_help = String::from_utf8_lossy(&top_help.stdout);
    for name in names {
        assert!(
            help.contains(&format!("env: {name}")) || top_help.contains(&name),
            "{name} is not an option of slipway serve"
        );
    }
}

/// The ngrok service's command, as the shell in its container runs it.
fn run_ngrok_command(config: &Yaml, token: Option<&str>, bin: &Path) -> std::process::Output {
    let ngrok = &config["services"]["ngrok"];
    assert_eq!(strings(&ngrok["entrypoint"]), vec!["/bin/sh", "-c"]);
    let script = ngrok["command"][0]
        .as_str()
        .expect("one script")
        .replace("$$", "$");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).env_clear().env("PATH", bin);
    if let Some(token) = token {
        cmd.env("NGROK_AUTHTOKEN", token);
    }
    cmd.output().expect("sh runs")
}

#[test]
fn without_ngrok_authtoken_the_tunnel_stops_with_a_message_saying_so() {
    let bin = tempfile::tempdir().expect("tempdir");
    let fake = bin.path().join("ngrok");
    std::fs::write(&fake, "#!/bin/sh\necho \"ngrok $*\"\n").expect("fake ngrok");
    let mut perms = std::fs::metadata(&fake).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).expect("chmod");
    for config in compose_configs() {
        let without = run_ngrok_command(&config, None, bin.path());
        let stderr = String::from_utf8_lossy(&without.stderr);
        assert!(
            without.status.success(),
            "a clean stop, so it is not restarted: {stderr}"
        );
        assert!(stderr.contains("NGROK_AUTHTOKEN is not set"), "{stderr}");
        assert!(without.stdout.is_empty(), "ngrok did not start");
        let with = run_ngrok_command(&config, Some("2abc"), bin.path());
        assert_eq!(
            String::from_utf8_lossy(&with.stdout).trim(),
            "ngrok http slipway:8080"
        );
        let restart = config["services"]["ngrok"]["restart"].as_str();
        assert_eq!(restart, Some("on-failure"));
        let slipway_restart = config["services"]["slipway"]["restart"].as_str();
        assert_eq!(
            slipway_restart,
            Some("unless-stopped"),
            "the rest of the stack runs"
        );
    }
}

/// Runs the stack's setup step (compose/setup.sh, as the image has it) with
/// its folders in `dir`; returns the generated secrets.
fn run_setup(dir: &Path) -> [String; 3] {
    let bin = Path::new(env!("CARGO_BIN_EXE_slipway"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let link = dir.join("bin");
    std::fs::create_dir_all(&link).expect("bin");
    let _ = std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), link.join("slipway"));
    let path = format!(
        "{}:{}:{}",
        link.display(),
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg(Path::new(ROOT).join("compose/setup.sh"))
        .env_clear()
        .env("PATH", path)
        .env("SETUP_CERTS_DIR", dir.join("certs"))
        .env("SETUP_AUTH_DIR", dir.join("auth"))
        .env("SLIPWAY_SECRETS_DIR", dir.join("secrets"))
        .env("SETUP_SECRETS_OWNER", "0")
        .output()
        .expect("setup runs");
    assert!(
        out.status.success(),
        "setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read =
        |name: &str| std::fs::read_to_string(dir.join("secrets").join(name)).expect("secret file");
    [
        read("webhook_secret"),
        read("registry_password"),
        read("api_token"),
    ]
}

#[tokio::test]
async fn the_setup_step_generates_random_kept_secrets_that_protect_the_api() {
    let first = tempfile::tempdir().expect("tempdir");
    let second = tempfile::tempdir().expect("tempdir");
    let secrets = run_setup(first.path());
    for secret in &secrets {
        assert!(
            secret.len() >= 32 && secret.chars().all(|c| c.is_ascii_hexdigit()),
            "{secret}"
        );
    }
    assert_ne!(secrets[0], secrets[2]);
    let htpasswd = std::fs::read_to_string(first.path().join("auth/htpasswd")).expect("htpasswd");
    assert!(htpasswd.starts_with("slipway:$2"), "{htpasswd}");
    assert!(first.path().join("certs/server.crt").exists());
    assert_eq!(run_setup(first.path()), secrets, "kept across restarts");
    assert_eq!(
        std::fs::read_to_string(first.path().join("auth/htpasswd")).expect("htpasswd"),
        htpasswd
    );
    let other = run_setup(second.path());
    for (a, b) in secrets.iter().zip(&other) {
        assert_ne!(a, b, "each installation gets its own");
    }

    // Slipway reads them as compose passes them: empty variables and the folder.
    let github = FakeGitHub::start().await;
    let slipway = Slipway::start(SlipwayOptions::without_registry(&github).envs(&[
        ("SLIPWAY_WEBHOOK_SECRET", ""),
        ("SLIPWAY_API_TOKEN", ""),
        (
            "SLIPWAY_SECRETS_DIR",
            &first.path().join("secrets").display().to_string(),
        ),
    ]))
    .await;
    let client = reqwest::Client::new();
    let open = client
        .get(format!("{}/builds", slipway.url))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        open.status().as_u16(),
        401,
        "the results API needs the generated token"
    );
    let with_token = client
        .get(format!("{}/builds", slipway.url))
        .bearer_auth(&secrets[2])
        .send()
        .await
        .expect("answer");
    assert_eq!(with_token.status().as_u16(), 200);
    let health = client
        .get(format!("{}/healthz", slipway.url))
        .send()
        .await
        .expect("answer");
    assert_eq!(health.status().as_u16(), 200);
    let ping = br#"{"zen":"hi","hook_id":1}"#;
    let signed = slipway::webhook::signature::sign(secrets[0].as_bytes(), ping);
    let answer = client
        .post(format!("{}/webhook", slipway.url))
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", uuid())
        .header("x-hub-signature-256", signed)
        .body(ping.to_vec())
        .send()
        .await
        .expect("answer");
    assert_eq!(
        answer.status().as_u16(),
        200,
        "signed with the generated secret"
    );
    let log = slipway.log();
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a generated secret in the log"
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

const STACK_USER: &str = "slipway";
const STACK_PASSWORD: &str = "a-registry-password-for-the-stack";

/// The registry as registry-config/config.yml sets it up, and Slipway with
/// the settings compose/.env.example gives it, plus `extra`.
async fn configured_topology(
    dir: &Path,
    extra: &[(&str, &str)],
) -> (ConfiguredRegistry, FakeGitHub, Slipway) {
    let certs = dir.join("certs");
    assert!(slipway_cmd()
        .args(["certs", "--hosts", "registry,localhost,127.0.0.1", "--out"])
        .arg(&certs)
        .status()
        .expect("certs")
        .success());
    let env = env_example();
    std::fs::write(
        dir.join("htpasswd"),
        registry_user(STACK_USER, STACK_PASSWORD),
    )
    .expect("htpasswd");
    let registry = start_configured_registry(dir, &certs);

    let github = FakeGitHub::start().await;
    let mut options = SlipwayOptions {
        github_api: github.api_url(),
        registry: registry.host.clone(),
        registry_ca: Some(certs.join("ca.crt")),
        registry_user: Some(STACK_USER.to_string()),
        registry_password: Some(STACK_PASSWORD.to_string()),
        extra: vec![],
    };
    // As compose passes them; the test keeps its own secrets.
    for (key, value) in env
        .iter()
        .filter(|(k, v)| k.starts_with("SLIPWAY_") && !v.is_empty())
    {
        options = options.env(key, value);
    }
    let slipway = Slipway::start(options.envs(extra)).await;
    (registry, github, slipway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_from_the_repository_files_publishes_a_pullable_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, github, slipway) = configured_topology(dir.path(), &[]).await;
    let (user, password) = (STACK_USER, STACK_PASSWORD);
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
        .args(["login", &registry.host, "-u", user, "--password-stdin"])
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

/// Publishes `stacked` at `version`, its own layer holding the version.
async fn publish_stacked(github: &FakeGitHub, slipway: &Slipway, version: &str) {
    let sha = sha();
    let manifest = format!(r#"{{"service_name":"stacked","version":"{version}"}}"#);
    github.add_commit_files(
        "acme/stack",
        &sha,
        &[
            ("dockerInfo.json", &manifest),
            (
                "Dockerfile",
                "FROM slipway-test-base:1\nCOPY v.txt /v.txt\n",
            ),
            ("v.txt", version),
        ],
    );
    let id = slipway.merge("acme/stack", &sha).await;
    let record = slipway.wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{}", slipway.log());
}

/// The layer blobs of `stacked:VERSION`, read over the registry API.
async fn stacked_layers(registry: &slipway::registry::Registry, version: &str) -> Vec<String> {
    let name = slipway::types::ImageName::parse("stacked").expect("name");
    let tag = slipway::types::Version::parse(version).expect("version");
    let (manifest, _) = registry
        .manifest(&name, &tag)
        .await
        .expect("read")
        .expect("published");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["digest"].as_str().map(str::to_string))
        .collect()
}

/// Retention on the registry compose runs (its config has deletes on),
/// then the README's garbage collection with the registry stopped: the
/// deleted version's own layer is freed, the kept version's and the shared
/// base's stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_then_garbage_collection_frees_the_deleted_versions_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (configured, github, slipway) =
        configured_topology(dir.path(), &[("SLIPWAY_RETENTION", "keep=1")]).await;
    let password = slipway::secret::Secret::new(STACK_PASSWORD);
    let certs = dir.path().join("certs/ca.crt");
    let registry = slipway::registry::Registry::new(&slipway::registry::RegistrySettings {
        host: &configured.host,
        ca_file: Some(&certs),
        user: Some(STACK_USER),
        password: Some(&password),
        namespace: None,
        plain_http: false,
    })
    .expect("client");
    publish_stacked(&github, &slipway, "1.0.0").await;
    let old = stacked_layers(&registry, "1.0.0").await;
    publish_stacked(&github, &slipway, "1.0.1").await;
    let new = stacked_layers(&registry, "1.0.1").await;
    let name = slipway::types::ImageName::parse("stacked").expect("name");
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry
        .tags(&name)
        .await
        .expect("tags")
        .contains(&"1.0.0".to_string())
    {
        assert!(
            Instant::now() < deadline,
            "1.0.0 not deleted:\n{}",
            slipway.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(slipway);
    drop(configured);
    let storage = dir.path().join("storage");
    let gc = Command::new("docker-registry")
        .arg("garbage-collect")
        .arg(Path::new(ROOT).join("registry-config/config.yml"))
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &storage)
        .output()
        .expect("docker-registry garbage-collect");
    assert!(gc.status.success(), "{gc:?}");
    let blob = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
    };
    let only_old: Vec<&String> = old.iter().filter(|d| !new.contains(d)).collect();
    assert!(
        !only_old.is_empty(),
        "1.0.0 has a layer of its own: {old:?}"
    );
    for digest in only_old {
        assert!(!blob(digest).exists(), "{digest} freed");
    }
    for digest in &new {
        assert!(blob(digest).exists(), "{digest} kept");
    }
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
    let cases: [(&[&str], &str); 6] = [
        (&["serve"], "--webhook-secret"),
        (
            &["--registry-ca", "/nonexistent/ca.pem"],
            "/nonexistent/ca.pem",
        ),
        // Root may write anywhere but /proc: an unwritable data dir.
        (&["--data-dir", "/proc/slipway-data"], "/proc/slipway-data"),
        (
            &["--build-network", "bridge"],
            "BuildKit takes (default, host or none)",
        ),
        (
            &["--build-secret", "npmrc=/nonexistent/npmrc"],
            "--build-secret `npmrc`: cannot read /nonexistent/npmrc",
        ),
        (
            &[
                "--builder",
                "classic",
                "--build-secret",
                "npmrc=/etc/hostname",
            ],
            "--build-secret needs --builder buildkit",
        ),
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

// ===== The README's command, for real =====

/// The compose tool the README's command runs with here: compose v2 where
/// present (Debian 13's plugin), else Debian 12's docker-compose 1.29.
/// SLIPWAY_TEST_COMPOSE=v1 (or v2) picks one where both are present.
fn readme_compose_tool() -> ComposeTool {
    let tools = compose_tools();
    let wanted = std::env::var("SLIPWAY_TEST_COMPOSE").unwrap_or_default();
    let v2 = tools.iter().find(|tool| tool.is_v2());
    let v1 = tools.iter().find(|tool| !tool.is_v2());
    match wanted.as_str() {
        "v1" => v1,
        "v2" => v2,
        _ => v2.or(v1),
    }
    .cloned()
    .unwrap_or_else(|| panic!("no compose tool ({wanted:?}) is installed"))
}

/// The only change the test makes to the stack: containers here have no
/// route out, so the image's build reaches crates.io and Debian through the
/// host's network.
const BUILD_NETWORK_OVERRIDE: &str = "\
services:
  setup:
    build:
      network: host
  slipway:
    build:
      network: host
";

/// The ports the stack publishes on this machine.
const STACK_PORTS: [u16; 4] = [5443, 5444, 8080, 4040];

/// A copy of the repository as a fresh clone has it (the work tree's files
/// that git tracks or would: no target/, no compose/.env), and the compose
/// project started from it; `down -v` when dropped.
struct ComposeStack {
    tool: ComposeTool,
    dir: tempfile::TempDir,
    project: String,
    env: Vec<(String, String)>,
}

impl ComposeStack {
    fn new(tool: ComposeTool, project: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clone = dir.path().join("slipway");
        let listed = Command::new("git")
            .args(["-C", ROOT, "ls-files", "-z", "--cached", "--others"])
            .arg("--exclude-standard")
            .output()
            .expect("git ls-files");
        assert!(listed.status.success(), "the repository is a git work tree");
        for path in listed.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            let path = String::from_utf8_lossy(path).into_owned();
            let from = Path::new(ROOT).join(&path);
            let to = clone.join(&path);
            let Ok(meta) = std::fs::symlink_metadata(&from) else {
                continue; // deleted in the work tree
            };
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&from).expect("link");
                std::os::unix::fs::symlink(target, &to).expect("symlink");
            } else {
                std::fs::copy(&from, &to).expect("copy");
            }
        }
        assert!(!clone.join("target").exists() && !clone.join("compose/.env").exists());
        std::fs::write(dir.path().join("build-network.yml"), BUILD_NETWORK_OVERRIDE)
            .expect("override");
        Self {
            tool,
            dir,
            project: project.to_string(),
            env: Vec::new(),
        }
    }

    fn clone(&self) -> PathBuf {
        self.dir.path().join("slipway")
    }

    /// `compose -f compose/docker-compose.yml ARGS` in the clone, with no
    /// SLIPWAY_*, DOCKER_GID or NGROK_AUTHTOKEN of this process's.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.tool.command();
        cmd.current_dir(self.clone())
            .args(["-f", "compose/docker-compose.yml", "-f"])
            .arg(self.dir.path().join("build-network.yml"))
            .args(args)
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env_remove("DOCKER_GID")
            .env_remove("NGROK_AUTHTOKEN")
            .stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            if key.starts_with("SLIPWAY_") {
                cmd.env_remove(key);
            }
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Runs ARGS to its end; its output goes to `log` in the temp folder,
    /// whose end a failure shows.
    fn run(&self, args: &[&str]) -> String {
        let log = self.dir.path().join("compose.log");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        writeln!(file, "\n$ compose {}", args.join(" ")).expect("log");
        let out = tokio::task::block_in_place(|| self.command(args).output()).expect("compose");
        file.write_all(&out.stdout).expect("log");
        file.write_all(&out.stderr).expect("log");
        if !out.status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            panic!(
                "compose {args:?} failed ({}):\n{}\n{}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                self.logs()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn exec(&self, service: &str, command: &[&str]) -> String {
        let mut args = vec!["exec", "-T", service];
        args.extend_from_slice(command);
        self.run(&args)
    }

    fn logs(&self) -> String {
        self.command(&["logs", "--no-color", "--tail", "80"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default()
    }

    fn down(&self) {
        let _ = self
            .command(&["down", "-v", "--remove-orphans", "--timeout", "10"])
            .output();
    }
}

impl Drop for ComposeStack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("compose logs:\n{}", self.logs());
        }
        self.down();
    }
}

/// The Docker socket's group, changed for as long as this lives.
struct SocketGroup {
    path: PathBuf,
    original: u32,
}

impl SocketGroup {
    fn change(path: &Path, gid: u32) -> Self {
        use std::os::unix::fs::MetadataExt;
        let original = std::fs::metadata(path).expect("socket").gid();
        std::os::unix::fs::chown(path, None, Some(gid)).expect("chgrp the socket");
        Self {
            path: path.to_path_buf(),
            original,
        }
    }
}

impl Drop for SocketGroup {
    fn drop(&mut self) {
        if let Err(err) = std::os::unix::fs::chown(&self.path, None, Some(self.original)) {
            eprintln!(
                "could not give {} its group {} back: {err}",
                self.path.display(),
                self.original
            );
        }
    }
}

fn socket_gid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/var/run/docker.sock")
        .expect("/var/run/docker.sock")
        .gid()
}

/// `/healthz` of the stack's Slipway once it answers with the engine and the
/// registry reachable.
async fn stack_healthy(stack: &ComposeStack) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let last = match reqwest::get("http://127.0.0.1:8080/healthz").await {
            Ok(answer) => {
                let health: serde_json::Value = answer.json().await.unwrap_or_default();
                if health["engine"] == "ok" && health["registry"] == "ok" {
                    return health;
                }
                health.to_string()
            }
            Err(err) => err.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "the stack's Slipway is not healthy: {last}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `Uid` and `Groups` of the stack's Slipway process (pid 1 of its container).
fn slipway_ids(stack: &ComposeStack) -> (u32, Vec<u32>) {
    let status = stack.exec("slipway", &["cat", "/proc/1/status"]);
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    let uid = field("Uid:").first().copied().expect("uid");
    (uid, field("Groups:"))
}

/// Merges `sha` of acme/stack through the stack's webhook, signed with the
/// secret the setup step generated; answers the finished build's record.
async fn merge_through_the_stack(
    stack: &ComposeStack,
    webhook_secret: &str,
    token: &str,
    sha: &str,
    number: u64,
) -> (String, serde_json::Value) {
    let body = merged_pr_payload("acme/stack", sha, number, "main").to_string();
    let signature = slipway::webhook::signature::sign(webhook_secret.as_bytes(), body.as_bytes());
    let client = reqwest::Client::new();
    let answer = client
        .post("http://127.0.0.1:8080/webhook")
        .header("content-type", "application/json")
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", uuid())
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .expect("webhook answered");
    assert_eq!(answer.status().as_u16(), 202);
    let answer: serde_json::Value = answer.json().await.expect("json");
    let id = answer["build_id"].as_str().expect("build id").to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let record: serde_json::Value = client
            .get(format!("http://127.0.0.1:8080/builds/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("record")
            .json()
            .await
            .expect("json");
        if matches!(record["status"].as_str(), Some("succeeded" | "failed")) {
            return (id, record);
        }
        assert!(
            Instant::now() < deadline,
            "build {id} did not end: {record}\n{}",
            stack.logs()
        );
        // Fine enough not to blur the stack bench's figures.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stack_build_log(token: &str, id: &str) -> String {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:8080/builds/{id}/log"))
        .bearer_auth(token)
        .send()
        .await
        .expect("log")
        .text()
        .await
        .expect("text")
}

/// The test-only cosign verifier (sigstore-rs, tests/cosign-verify).
fn cosign_verifier() -> PathBuf {
    let dir = Path::new(ROOT).join("tests/cosign-verify");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target"))
        .status()
        .expect("cargo builds the verifier");
    assert!(status.success(), "tests/cosign-verify builds");
    dir.join("target/debug/cosign-verify")
}

fn publish_files(sha: &str, version: &str, github: &FakeGitHub) {
    github.add_commit_files(
        "acme/stack",
        sha,
        &[
            (
                "dockerInfo.json",
                &format!(r#"{{"service_name":"stacked","version":"{version}"}}"#),
            ),
            (
                "Dockerfile",
                "FROM slipway-test-base:1\nCMD [\"echo\", \"from the compose stack\"]\n",
            ),
        ],
    );
}

/// The README's `docker compose -f compose/docker-compose.yml up -d --build`,
/// for real, on a copy of the repository as a fresh clone has it: the images
/// it names are stand-ins made from Debian's packages (scripts/stand-ins.sh),
/// since none can be pulled here, and the build network is the host's; no
/// DOCKER_GID or other variable is set. Slipway's image is built (the engine's
/// layer cache keeps the compiled dependencies between runs), setup generates
/// the secrets and certificates, and a merge delivered to the stack is
/// published through the relay, signed, and pulled back from
/// localhost:5443. Then the socket's group changes and Slipway, restarted,
/// still reaches the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_compose_command_starts_a_stack_that_publishes_signed_merges() {
    // The stack mounts /var/run/docker.sock: it runs on that engine only.
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        if !host.is_empty() && host != "unix:///var/run/docker.sock" {
            eprintln!("skipped: the stack runs on the engine of /var/run/docker.sock, not {host}");
            return;
        }
    }
    let started = Instant::now();
    let stand_ins = Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/stand-ins.sh"))
        .output()
        .expect("stand-ins");
    assert!(
        stand_ins.status.success(),
        "scripts/stand-ins.sh: {}{}",
        String::from_utf8_lossy(&stand_ins.stdout),
        String::from_utf8_lossy(&stand_ins.stderr)
    );
    let stand_ins_took = started.elapsed();
    assert!(
        Command::new("docker")
            .args(["image", "inspect", "slipway-test-base:1"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "the merged repository builds FROM slipway-test-base:1 (scripts/test-env.sh makes it)"
    );

    let tool = readme_compose_tool();
    eprintln!("stack: {}", tool.version().unwrap_or_default());
    let mut stack = ComposeStack::new(tool, "slipway-stack-test");
    stack.down(); // what a run that was killed left
    for port in STACK_PORTS {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken on this machine: the stack publishes it"
        );
    }
    let original_gid = socket_gid();

    let up = Instant::now();
    stack.run(&["up", "-d", "--build"]);
    let up_took = up.elapsed();
    eprintln!("stack: stand-ins {stand_ins_took:.1?}, `up -d --build` {up_took:.1?}");
    stack_healthy(&stack).await;

    // The setup step's secrets, certificates and registry user.
    let secret = |name: &str| stack.exec("slipway", &["cat", &format!("/secrets/{name}")]);
    let (webhook_secret, token, password) = (
        secret("webhook_secret"),
        secret("api_token"),
        secret("registry_password"),
    );
    for value in [&webhook_secret, &token, &password] {
        assert!(
            value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()),
            "{value}"
        );
    }
    let clone = stack.clone();
    let ca = clone.join("certs/ca.crt");
    let htpasswd =
        std::fs::read_to_string(clone.join("registry-config/htpasswd")).expect("htpasswd");
    assert!(htpasswd.starts_with("slipway:$2"), "{htpasswd}");
    assert!(clone.join("signing/cosign.pub").exists());

    // The registry answers on localhost:5443 with a certificate of the generated CA.
    let registry = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("ca")).expect("pem"),
        )
        .build()
        .expect("client");
    let v2 = registry
        .get("https://localhost:5443/v2/")
        .basic_auth("slipway", Some(&password))
        .send()
        .await
        .expect("the registry answers with the generated CA's certificate");
    assert_eq!(v2.status().as_u16(), 200);
    let anonymous = registry
        .get("https://localhost:5443/v2/")
        .send()
        .await
        .expect("answer");
    assert_eq!(anonymous.status().as_u16(), 401);

    // Non-root, in the socket's group, with nothing set by hand.
    let (uid, groups) = slipway_ids(&stack);
    assert_eq!(uid, 10001, "Slipway runs as the user slipway");
    assert!(
        groups.contains(&original_gid),
        "in the socket's group {original_gid}: {groups:?}"
    );

    // GitHub: a server on this machine, at the stack network's gateway
    // (this host, as the stack's containers reach it); the stack is pointed
    // at it as at a GitHub Enterprise server, and compose recreates Slipway.
    let network = format!("{}_default", stack.project);
    let gateway = docker(&[
        "network",
        "inspect",
        &network,
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ]);
    let gateway: std::net::IpAddr = gateway.trim().parse().expect("the network's gateway");
    let github = FakeGitHub::start_on(gateway).await;
    stack.env = vec![("SLIPWAY_GITHUB_API".into(), github.api_url())];
    stack.run(&["up", "-d"]);
    stack_healthy(&stack).await;

    let sha1 = sha();
    publish_files(&sha1, "1.0.0", &github);
    let (id, record) = merge_through_the_stack(&stack, &webhook_secret, &token, &sha1, 1).await;
    let log = stack_build_log(&token, &id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    assert!(
        log.contains("pushed by the engine through the loopback relay"),
        "the relay push path: {log}"
    );
    let digest = service(&record, "stacked")["digest"]
        .as_str()
        .expect("digest")
        .to_string();

    // Pulled back from localhost:5443, with credentials kept apart.
    let docker_config = tempfile::tempdir().expect("docker config");
    let docker_as_user = |args: &[&str], input: Option<&str>| {
        let mut child = Command::new("docker")
            .arg("--config")
            .arg(docker_config.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker");
        if let Some(input) = input {
            writeln!(child.stdin.take().expect("stdin"), "{input}").expect("stdin");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    docker_as_user(
        &[
            "login",
            "localhost:5443",
            "-u",
            "slipway",
            "--password-stdin",
        ],
        Some(&password),
    );
    let image = "localhost:5443/stacked:1.0.0";
    let _ = Command::new("docker").args(["rmi", "-f", image]).output();
    docker_as_user(&["pull", image], None);
    assert_eq!(docker_run(image, &[]).trim(), "from the compose stack");
    let pulled = docker(&[
        "image",
        "inspect",
        image,
        "--format",
        "{{json .RepoDigests}}",
    ]);
    assert!(
        pulled.contains(&format!("localhost:5443/stacked@{digest}")),
        "{pulled}"
    );
    let _ = Command::new("docker").args(["rmi", image]).output();

    // Signed: the .sig manifest is there, and cosign's verification passes.
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    let sig = registry
        .get(format!("https://localhost:5443/v2/stacked/manifests/{sig_tag}"))
        .basic_auth("slipway", Some(&password))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(
        sig.status().as_u16(),
        200,
        "the signature manifest {sig_tag}"
    );
    let verified = Command::new(cosign_verifier())
        .arg(format!("localhost:5443/stacked@{digest}"))
        .arg(&ca)
        .arg(clone.join("signing/cosign.pub"))
        .env("REGISTRY_USER", "slipway")
        .env("REGISTRY_PASSWORD", &password)
        .output()
        .expect("cosign-verify");
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains(&digest));

    if let Some(rounds) = stack_bench_rounds() {
        let measured = StackBench {
            stack: &stack,
            github: &github,
            webhook_secret: &webhook_secret,
            token: &token,
            password: &password,
        };
        eprintln!("{}", measured.run(rounds).await);
    }

    // Another host's socket group: Slipway, restarted, joins that one.
    let other_gid = 47_000 + std::process::id() % 1000;
    {
        let _changed = SocketGroup::change(Path::new("/var/run/docker.sock"), other_gid);
        stack.run(&["restart", "slipway"]);
        let health = stack_healthy(&stack).await;
        assert_eq!(health["engine"], "ok");
        let (uid, groups) = slipway_ids(&stack);
        assert_eq!(uid, 10001);
        assert!(groups.contains(&other_gid), "{groups:?}");
        let sha2 = sha();
        publish_files(&sha2, "1.0.1", &github);
        let (id, record) = merge_through_the_stack(&stack, &webhook_secret, &token, &sha2, 2).await;
        let log = stack_build_log(&token, &id).await;
        assert_eq!(record["status"], "succeeded", "{record}\n{log}");
        assert!(
            log.contains("pushed by the engine through the loopback relay"),
            "{log}"
        );
    }
    assert_eq!(socket_gid(), original_gid, "the socket's group is back");
    let entrypoint = stack.run(&["logs", "--no-color", "slipway"]);
    assert!(
        entrypoint.contains(&format!(
            "in the group of /var/run/docker.sock ({other_gid})"
        )),
        "{entrypoint}"
    );
    eprintln!("stack: the whole test {:.1?}", started.elapsed());
}

/// `slipway serve` as a user outside the group of the engine's socket: its
/// `/healthz` names the socket and the group to run in; in that group, the
/// permission problem is gone.
#[tokio::test]
async fn an_engine_socket_slipway_may_not_open_is_named_with_its_group() {
    use std::os::unix::fs::PermissionsExt;
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        eprintln!("skipped: needs root to give a socket a group and run Slipway as nobody");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = dir.path().join("docker.sock");
    // Accepts, never answers: enough to tell a permission problem from none.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    let gid = 47_999;
    std::os::unix::fs::chown(&socket, Some(0), Some(gid)).expect("chown");

    let health_as = |groups: &'static str| {
        let data = dir.path().join(format!("data-{groups}"));
        std::fs::create_dir_all(&data).expect("data dir");
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).expect("chown");
        let port = free_port();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534"]);
        if groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            cmd.arg(format!("--groups={groups}"));
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("SLIPWAY_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_slipway"))
            .args([
                "serve",
                "--webhook-secret",
                "s",
                "--registry",
                "127.0.0.1:9",
            ])
            .args(["--push-path", "export", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slipway as nobody");
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let health = loop {
                if let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
                    break answer.json::<serde_json::Value>().await.expect("json");
                }
                assert!(Instant::now() < deadline, "slipway serve did not answer");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let _ = child.kill();
            let _ = child.wait();
            health["engine"].as_str().unwrap_or_default().to_string()
        }
    };
    let outside = health_as("").await;
    assert_eq!(
        outside,
        format!(
            "cannot reach the Docker Engine at unix://{}: permission denied (the socket belongs to group {gid}; run Slipway in that group)",
            socket.display()
        )
    );
    let inside = health_as("47999").await;
    assert!(!inside.contains("permission denied"), "{inside}");
}

/// `SLIPWAY_STACK_BENCH_ROUNDS=N`: after its checks, the stack test also
/// times workload (d) of the bench (a one-file change on a base with a 200 MB
/// layer) published by Slipway in the stack, against `docker build && docker
/// push` and `docker buildx build --push` on the same engine into the stack's
/// registry, and prints the table docs/performance.md keeps. Off by default:
/// figures go in benchmarks, not in CI.
fn stack_bench_rounds() -> Option<usize> {
    std::env::var("SLIPWAY_STACK_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
}

struct StackBench<'a> {
    stack: &'a ComposeStack,
    github: &'a FakeGitHub,
    webhook_secret: &'a str,
    token: &'a str,
    password: &'a str,
}

const STACK_BENCH_BASE: &str = "slipway-stack-bench-base:200mb";
const BUILDX_PLUGIN: &str = "/opt/slipway-trixie/docker-config/cli-plugins/docker-buildx";

impl StackBench<'_> {
    async fn run(&self, rounds: usize) -> String {
        make_stack_bench_base();
        let config = self.docker_config();
        let mut rows = Vec::new();
        // Round 0 is each side's first publish on the base; reported apart.
        for round in 0..=rounds {
            let change = format!("round {round} {}\n", uuid());
            let version = format!("2.0.{round}");
            let mut times = [0.0f64; 3];
            for side in 0..3 {
                // Who goes first rotates, so none always meets a warm cache.
                let side = (side + round) % 3;
                times[side] = match side {
                    0 => self.slipway(&version, &change, round).await,
                    1 => cli(&config, &version, &change),
                    _ => buildx(&config, &version, &change),
                };
            }
            rows.push(times);
        }
        stack_bench_table(&rows)
    }

    async fn slipway(&self, version: &str, change: &str, round: usize) -> f64 {
        let sha = sha();
        let dockerfile = format!("FROM {STACK_BENCH_BASE}\nCOPY change.txt /change.txt\n");
        self.github.add_commit_files(
            "acme/stack",
            &sha,
            &[
                (
                    "dockerInfo.json",
                    &format!(r#"{{"service_name":"bench-slipway","version":"{version}"}}"#),
                ),
                ("Dockerfile", &dockerfile),
                ("change.txt", change),
            ],
        );
        let started = Instant::now();
        let (id, record) = merge_through_the_stack(
            self.stack,
            self.webhook_secret,
            self.token,
            &sha,
            100 + round as u64,
        )
        .await;
        let took = started.elapsed().as_secs_f64();
        let log = stack_build_log(self.token, &id).await;
        assert_eq!(record["status"], "succeeded", "{record}\n{log}");
        eprintln!("stack bench: round {round}, Slipway {took:.2} s:\n{log}");
        took
    }

    /// A docker config of its own: the stack's registry login, and buildx.
    fn docker_config(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("docker config");
        let plugins = dir.path().join("cli-plugins");
        std::fs::create_dir_all(&plugins).expect("cli-plugins");
        let _ = std::os::unix::fs::symlink(BUILDX_PLUGIN, plugins.join("docker-buildx"));
        let mut login = Command::new("docker")
            .arg("--config")
            .arg(dir.path())
            .args([
                "login",
                "localhost:5443",
                "-u",
                "slipway",
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker login");
        if let Some(mut stdin) = login.stdin.take() {
            let _ = writeln!(stdin, "{}", self.password);
        }
        assert!(
            login.wait().is_ok_and(|s| s.success()),
            "docker login localhost:5443"
        );
        dir
    }
}

fn make_stack_bench_base() {
    let context = tempfile::tempdir().expect("context");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM slipway-test-base:1\nRUN head -c 209715200 /dev/urandom > /big.bin\n",
    )
    .expect("Dockerfile");
    let built = Command::new("docker")
        .args(["build", "-q", "-t", STACK_BENCH_BASE])
        .arg(context.path())
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

fn bench_context(change: &str) -> tempfile::TempDir {
    let context = tempfile::tempdir().expect("context");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {STACK_BENCH_BASE}\nCOPY change.txt /change.txt\n"),
    )
    .expect("Dockerfile");
    std::fs::write(context.path().join("change.txt"), change).expect("change.txt");
    context
}

fn timed_docker(config: &tempfile::TempDir, commands: &[Vec<String>]) -> f64 {
    let started = Instant::now();
    for args in commands {
        let out = Command::new("docker")
            .arg("--config")
            .arg(config.path())
            .args(args)
            .output()
            .expect("docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    started.elapsed().as_secs_f64()
}

fn cli(config: &tempfile::TempDir, version: &str, change: &str) -> f64 {
    let context = bench_context(change);
    let tag = format!("localhost:5443/bench-cli:{version}");
    let dir = context.path().display().to_string();
    timed_docker(
        config,
        &[
            vec!["build".into(), "-q".into(), "-t".into(), tag.clone(), dir],
            vec!["push".into(), "-q".into(), tag],
        ],
    )
}

fn buildx(config: &tempfile::TempDir, version: &str, change: &str) -> f64 {
    let context = bench_context(change);
    let tag = format!("localhost:5443/bench-buildx:{version}");
    let args = [
        "buildx",
        "build",
        "--push",
        "--provenance=false",
        "-q",
        "-t",
    ];
    let mut command: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    command.extend([tag, context.path().display().to_string()]);
    timed_docker(config, &[command])
}

/// Seconds per side and round → the table: round 0 apart, then the medians
/// of the later rounds and of their per-round ratios.
fn stack_bench_table(rows: &[[f64; 3]]) -> String {
    let median = |mut values: Vec<f64>| {
        values.sort_by(|a, b| a.total_cmp(b));
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let ratio = |r: &[f64; 3]| r[0] / r[1].min(r[2]);
    let mut table = String::from(
        "| publish | Slipway in the stack | docker build + push | buildx --push | Slipway / faster (median of rounds) | per round |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    if let Some(first) = rows.first() {
        table += &format!(
            "| first, on a base new to the registry | {:.2} s | {:.2} s | {:.2} s | **{:.2}** | - |\n",
            first[0], first[1], first[2], ratio(first)
        );
    }
    let later = &rows[1.min(rows.len())..];
    let column = |i: usize| median(later.iter().map(|r| r[i]).collect());
    let per_round: Vec<String> = later.iter().map(|r| format!("{:.2}", ratio(r))).collect();
    table += &format!(
        "| later ({} rounds) | {:.2} s | {:.2} s | {:.2} s | **{:.2}** | {} |\n",
        later.len(),
        column(0),
        column(1),
        column(2),
        median(later.iter().map(ratio).collect()),
        per_round.join(" / ")
    );
    table
}
