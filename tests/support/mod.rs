//! Shared integration-test harness: the real Slipway binary, the stand-in
//! GitHub, a real TLS registry, and helpers to sign deliveries and wait for builds.

pub mod engine_proxy;
pub mod forges;
pub mod github;
pub mod postgres;
pub mod registry;
pub mod token_service;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use github::{FakeEntry, FakeGitHub, FakeHook, Fault};
pub use registry::TestRegistry;

pub const SECRET: &str = "test-webhook-secret-3f9a";
pub const BASE_IMAGE: &str = "slipway-test-base:1";

/// A running `slipway serve` process, killed on drop.
pub struct Slipway {
    pub url: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    args: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

pub struct SlipwayOptions {
    pub github_api: String,
    pub registry: String,
    pub registry_ca: Option<PathBuf>,
    pub registry_user: Option<String>,
    pub registry_password: Option<String>,
    pub extra: Vec<(String, String)>,
}

impl SlipwayOptions {
    pub fn new(github: &FakeGitHub, registry: &TestRegistry) -> Self {
        Self {
            github_api: github.api_url(),
            registry: registry.host.clone(),
            registry_ca: Some(registry.ca_pem.clone()),
            registry_user: Some(registry.user.clone()),
            registry_password: Some(registry.password.clone()),
            extra: vec![],
        }
    }

    /// A registry address where nothing listens, for tests about answers only.
    pub fn without_registry(github: &FakeGitHub) -> Self {
        Self {
            github_api: github.api_url(),
            registry: format!("127.0.0.1:{}", free_port()),
            registry_ca: None,
            registry_user: None,
            registry_password: None,
            extra: vec![],
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_string(), value.to_string()));
        self
    }

    pub fn envs(self, extra: &[(&str, &str)]) -> Self {
        extra.iter().fold(self, |options, (k, v)| options.env(k, v))
    }
}

/// The stand-in GitHub, a real TLS registry, and Slipway wired to both.
pub async fn start_stack(extra: &[(&str, &str)]) -> (FakeGitHub, TestRegistry, Slipway) {
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start();
    let slipway = Slipway::start(SlipwayOptions::new(&github, &registry).envs(extra)).await;
    (github, registry, slipway)
}

/// Whether this test run keeps Slipway's records in PostgreSQL
/// (`SLIPWAY_TEST_STORE=postgres`) rather than SQLite.
pub fn on_postgres() -> bool {
    std::env::var("SLIPWAY_TEST_STORE").is_ok_and(|s| s == "postgres")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Slipway {
    pub async fn start(options: SlipwayOptions) -> Slipway {
        let dir = tempfile::Builder::new()
            .prefix("slipway-test-")
            .tempdir()
            .expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut args = vec![
            ("SLIPWAY_WEBHOOK_SECRET".to_string(), SECRET.to_string()),
            ("SLIPWAY_GITHUB_API".to_string(), options.github_api),
            ("SLIPWAY_REGISTRY".to_string(), options.registry),
            (
                "SLIPWAY_DATA_DIR".to_string(),
                data_dir.display().to_string(),
            ),
            ("SLIPWAY_BUILD_TIMEOUT".to_string(), "5m".to_string()),
            // The test engine may have no bridge network; builds need none.
            ("SLIPWAY_BUILD_NETWORK".to_string(), "none".to_string()),
        ];
        let optional = [
            (
                "SLIPWAY_REGISTRY_CA",
                options.registry_ca.map(|p| p.display().to_string()),
            ),
            ("SLIPWAY_REGISTRY_USER", options.registry_user),
            ("SLIPWAY_REGISTRY_PASSWORD", options.registry_password),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                args.push((key.to_string(), value));
            }
        }
        args.extend(options.extra);
        // `SLIPWAY_TEST_STORE=postgres` runs a test binary's Slipways on
        // PostgreSQL (scripts/test runs the core tests so, after SQLite).
        if on_postgres() && !args.iter().any(|(k, _)| k == "SLIPWAY_DATABASE") {
            args.push(("SLIPWAY_DATABASE".to_string(), postgres::database()));
        }
        let mut slipway = Slipway {
            url: String::new(),
            log_path: dir.path().join("slipway.log"),
            data_dir,
            child: None,
            args,
            _dir: dir,
        };
        slipway.launch().await;
        slipway
    }

    async fn launch(&mut self) {
        let port = free_port();
        self.url = format!("http://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,slipway=debug")
            .env("SLIPWAY_LISTEN", format!("127.0.0.1:{port}"))
            // Lets a bench run compare the push paths (`SLIPWAY_PUSH_PATH=export
            // scripts/bench merge`); a test that names one still wins.
            .envs(std::env::var("SLIPWAY_PUSH_PATH").map(|v| ("SLIPWAY_PUSH_PATH", v)))
            // The engine under test (the engine matrix sets it); a test that names
            // one, such as the engine without sessions, still wins.
            .envs(std::env::var("DOCKER_HOST").map(|v| ("DOCKER_HOST", v)))
            .envs(self.args.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn slipway"));
        self.wait_healthy().await;
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(resp) = reqwest::get(format!("{}/healthz", self.url)).await {
                if resp.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("slipway exited with {status}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("slipway did not become healthy:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the process (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (up to `limit`) for the process to exit;
    /// returns whether it exited successfully.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Starts it again with the same options and data dir.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    /// Reads the build's log as server-sent events until the `end` event;
    /// returns the log lines and the final status.
    pub async fn watch(&self, id: &str) -> (Vec<String>, String) {
        let events = sse_events(&format!("{}/builds/{id}/log", self.url), None).await;
        let mut lines = Vec::new();
        for (event, data) in events {
            match event.as_deref() {
                Some("end") => {
                    let end: Value = serde_json::from_str(&data).expect("end event is JSON");
                    return (
                        lines,
                        end["status"].as_str().unwrap_or_default().to_string(),
                    );
                }
                _ => lines.push(data),
            }
        }
        panic!("event stream of {id} closed without an end event");
    }

    /// Sends a signed delivery; returns status and JSON body.
    pub async fn deliver(&self, event: &str, delivery: &str, body: &[u8]) -> (u16, Value) {
        let (status, _, json) = self.deliver_with_headers(event, delivery, body).await;
        (status, json)
    }

    /// Sends a signed delivery; returns status, headers and JSON body.
    pub async fn deliver_with_headers(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/webhook", self.url))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign(body))
            .body(body.to_vec())
            .send()
            .await
            .expect("webhook answered");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let json = resp.json().await.unwrap_or(Value::Null);
        (status, headers, json)
    }

    /// Delivers a merged PR of `repository` at `sha`; returns the build id.
    pub async fn merge(&self, repository: &str, sha: &str) -> String {
        let body = merged_pr_payload(repository, sha, 7, "main");
        let (status, json) = self
            .deliver("pull_request", &uuid(), body.to_string().as_bytes())
            .await;
        assert_eq!(status, 202, "merged PR should be accepted: {json}");
        json["build_id"].as_str().expect("build id").to_string()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("answered");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The body of `GET path` as text (a page, `/metrics`, a log).
    pub async fn get_text(&self, path: &str) -> String {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("answered")
            .text()
            .await
            .expect("text")
    }

    pub async fn build_log(&self, id: &str) -> String {
        self.get_text(&format!("/builds/{id}/log")).await
    }

    /// Polls the build's record every 10 ms until `done` holds, for at most
    /// `limit`: `Ok` with that record, else `Err` with the last one seen.
    #[allow(dead_code)] // used by tests/process/instances.rs and the bench
    pub async fn record_when(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, Value> {
        let deadline = Instant::now() + limit;
        loop {
            let (_, record) = self.get_json(&format!("/builds/{id}")).await;
            if done(&record) {
                return Ok(record);
            }
            if Instant::now() >= deadline {
                return Err(record);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (up to `limit`) until a build of `commit` is listed, one that no
    /// delivery here asked for (a catch-up); returns its record.
    pub async fn build_of_commit(&self, commit: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (_, list) = self.get_json("/builds?limit=500").await;
            let found = list["builds"]
                .as_array()
                .and_then(|b| b.iter().find(|b| b["commit"] == commit).cloned());
            if let Some(build) = found {
                return build;
            }
            assert!(
                Instant::now() < deadline,
                "no build of {commit} after {limit:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the build ends; returns its record.
    pub async fn wait_for(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (status, record) = self.get_json(&format!("/builds/{id}")).await;
            assert_eq!(status, 200, "build {id} exists");
            if matches!(record["status"].as_str(), Some("succeeded" | "failed")) {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "build {id} did not finish: {record}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Slipway {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            self.assert_no_secret_leaked();
        }
    }
}

/// The options whose values must never show in a log, a record or an error.
const SECRET_OPTIONS: [&str; 5] = [
    "SLIPWAY_WEBHOOK_SECRET",
    "SLIPWAY_GITHUB_TOKEN",
    "SLIPWAY_REGISTRY_PASSWORD",
    "SLIPWAY_API_TOKEN",
    // Its URL holds the database password.
    "SLIPWAY_DATABASE",
];

impl Slipway {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident memory of the process so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Every test's service log and database (records and build logs) is
    /// searched for the secrets it was given; none may appear.
    fn assert_no_secret_leaked(&self) {
        let mut secrets: Vec<String> = self
            .args
            .iter()
            .filter(|(k, v)| SECRET_OPTIONS.contains(&k.as_str()) && v.len() >= 6)
            .map(|(_, v)| v.clone())
            .collect();
        // The signing key is given as a file: its PEM lines are the secret.
        for (_, path) in self.args.iter().filter(|(k, _)| k == "SLIPWAY_SIGNING_KEY") {
            let key = std::fs::read_to_string(path).unwrap_or_default();
            secrets.extend(
                key.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                    .map(str::to_string),
            );
        }
        let mut places = vec![self.log_path.clone()];
        for name in ["slipway.db", "slipway.db-wal"] {
            places.push(self.data_dir.join(name));
        }
        for place in places {
            let Ok(bytes) = std::fs::read(&place) else {
                continue;
            };
            for secret in &secrets {
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(
                    !found,
                    "a secret given to Slipway shows in {}",
                    place.display()
                );
            }
        }
    }
}

/// Reads a server-sent event stream to its end: (event name, data) pairs.
/// `on_line` is told the arrival of each data event, for latency figures.
pub async fn sse_events(
    url: &str,
    mut on_line: Option<&mut (dyn FnMut(&str) + Send)>,
) -> Vec<(Option<String>, String)> {
    use futures::StreamExt;
    let resp = reqwest::Client::new()
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("event stream answered");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream")));
    let mut body = resp.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = Some(name.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                }
            }
            if data.is_empty() {
                continue; // keep-alive comment
            }
            let data = data.join("\n");
            if let (None, Some(f)) = (&event, on_line.as_mut()) {
                f(&data);
            }
            events.push((event, data));
        }
    }
    events
}

pub fn sign(body: &[u8]) -> String {
    slipway::webhook::signature::sign(SECRET.as_bytes(), body)
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A 40-hex commit sha unique to this test run.
pub fn sha() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{}", &b[..8])
}

/// The real merged-PR fixture, pointed at `repository` and `sha`.
pub fn merged_pr_payload(repository: &str, sha: &str, number: u64, base: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/pull_request.closed.merged.ailisp-reallyfastci.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut value: Value =
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
    value["pull_request"]["merge_commit_sha"] = json!(sha);
    value["pull_request"]["number"] = json!(number);
    value["pull_request"]["base"]["ref"] = json!(base);
    value["repository"]["full_name"] = json!(repository);
    value["repository"]["html_url"] = json!(format!("https://github.com/{repository}"));
    value
}

/// Runs a docker CLI command; returns stdout, panicking with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker run --rm` without networking (the test engine may have no bridge).
pub fn docker_run(image: &str, command: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--network", "none", image];
    args.extend_from_slice(command);
    docker(&args)
}

/// Removes the local copy and pulls `image` back from the registry.
pub fn pull_fresh(image: &str) {
    let _ = Command::new("docker").args(["rmi", "-f", image]).output();
    docker(&["pull", image]);
}

/// Ids of the processes on this machine whose argument list passes `wanted`.
/// Build steps show here whichever builder runs them: the classic builder's
/// containers and BuildKit's runc sandboxes alike.
pub fn processes(wanted: impl Fn(&[&str]) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                return false;
            };
            let text = String::from_utf8_lossy(&cmdline);
            let args: Vec<&str> = text.split('\0').filter(|a| !a.is_empty()).collect();
            !args.is_empty() && wanted(&args)
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The service named `name` in a build record.
pub fn service<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {record}"))
}
