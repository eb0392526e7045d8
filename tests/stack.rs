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

/// The compose tools on this machine: Debian's `docker-compose` (1.29) and
/// the `docker compose` plugin, each where present.
fn compose_tools() -> Vec<Vec<&'static str>> {
    [vec!["docker-compose"], vec!["docker", "compose"]]
        .into_iter()
        .filter(|tool| {
            Command::new(tool[0])
                .args(&tool[1..])
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
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
            let output = Command::new(tool[0])
                .args(&tool[1..])
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
    let user = "slipway".to_string();
    let password = "a-registry-password-for-the-stack".to_string();
    std::fs::write(dir.path().join("htpasswd"), registry_user(&user, &password)).expect("htpasswd");
    let registry = start_configured_registry(dir.path(), &certs);

    let github = FakeGitHub::start().await;
    let mut options = SlipwayOptions {
        github_api: github.api_url(),
        registry: registry.host.clone(),
        registry_ca: Some(certs.join("ca.crt")),
        registry_user: Some(user.clone()),
        registry_password: Some(password.clone()),
        extra: vec![],
    };
    // As compose passes them; the test keeps its own secrets.
    for (key, value) in env
        .iter()
        .filter(|(k, v)| k.starts_with("SLIPWAY_") && !v.is_empty())
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
