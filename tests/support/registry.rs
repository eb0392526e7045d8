//! A real container registry for integration tests: Debian's `docker-registry`
//! (Docker Distribution 2.8) serving TLS from a throwaway CA, with htpasswd basic auth.
//!
//! Needs what `scripts/test-env.sh` installs: docker-registry, openssl, htpasswd (apache2-utils),
//! curl and a Docker Engine answering `docker info`.
//!
//! Synchronous on purpose (std::process, std::net) so sync and async tests can both use it.

// Every integration-test binary compiles this module but each uses only part of it.

use std::collections::hash_map::RandomState;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::token_service::TokenService;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_USER: &str = "slipway";
const SETUP_HINT: &str = "run scripts/test-env.sh to install the test environment";

pub struct TestRegistry {
    /// "127.0.0.1:PORT"
    pub host: String,
    /// PEM of the CA that signed the registry's certificate
    pub ca_pem: PathBuf,
    pub user: String,
    pub password: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    storage: PathBuf,
    /// With one, the registry takes bearer tokens from it (`auth: token`)
    /// instead of basic credentials.
    pub token_service: Option<TokenService>,
    /// distribution's `storage.delete.enabled`.
    deletes: bool,
}

impl TestRegistry {
    /// Starts a registry with user "slipway" and a random password.
    pub fn start() -> TestRegistry {
        Self::start_with_credentials(DEFAULT_USER, &random_password())
    }

    /// Starts a registry on a free loopback port with TLS, basic auth and fresh storage, makes the
    /// local Docker Engine trust its CA and logs the docker CLI in, so tests can `docker pull`.
    pub fn start_with_credentials(user: &str, password: &str) -> TestRegistry {
        Self::start_with(user, password, false, true)
    }

    /// A registry that refuses to delete manifests (405 UNSUPPORTED), as
    /// distribution does by default.
    #[allow(dead_code)] // only tests/it/retention.rs
    pub fn start_without_deletes() -> TestRegistry {
        Self::start_with(DEFAULT_USER, &random_password(), false, false)
    }

    /// A registry that wants bearer tokens from a token service (as Harbor,
    /// GitLab's and Docker Hub's do), which issues them to user "slipway".
    pub fn start_with_token_service() -> TestRegistry {
        Self::start_with(DEFAULT_USER, &random_password(), true, true)
    }

    fn start_with(
        user: &str,
        password: &str,
        with_token_service: bool,
        deletes: bool,
    ) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("slipway-registry-")
            .tempdir()
            .expect("create registry temp dir");
        make_certs(dir.path());
        write_htpasswd(dir.path(), user, password);
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).expect("create registry storage dir");
        let mut registry = TestRegistry {
            host: String::new(),
            ca_pem: dir.path().join("ca.pem"),
            user: user.to_string(),
            password: password.to_string(),
            dir,
            child: None,
            port: 0,
            storage,
            token_service: None,
            deletes,
        };
        if with_token_service {
            let cert = registry.dir.path().join("token.pem");
            registry.token_service = Some(TokenService::start(user, password, &cert));
        }
        registry.start_on_free_port();
        registry.trust_ca();
        registry.docker_login();
        registry
    }

    /// Kills the registry process; storage, certs and port are kept for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port with the same storage and certs.
    #[allow(dead_code)] // only tests/process/faults.rs restarts a registry
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            self.fail(&e);
        }
    }

    /// The registry's configuration file, for `docker-registry garbage-collect`.
    #[allow(dead_code)] // only tests/it/retention.rs
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// Where the registry keeps blobs and manifests, to search them.
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// Tags of `repository` from the registry API; empty when the repository does not exist.
    pub fn tags(&self, repository: &str) -> Vec<String> {
        let path = format!("/v2/{repository}/tags/list");
        let (status, body) = self
            .curl(&path, true)
            .unwrap_or_else(|e| panic!("{}", self.report(&format!("GET {path}: {e}"))));
        match status {
            // NAME_UNKNOWN: nothing was ever pushed there.
            404 => Vec::new(),
            200 => parse_tags(&body),
            _ => panic!(
                "{}",
                self.report(&format!("GET {path} answered {status}: {body}"))
            ),
        }
    }

    fn start_on_free_port(&mut self) {
        // The probed port can be taken by someone else before the registry binds it: retry then.
        for _ in 0..3 {
            self.port = free_port();
            self.host = format!("127.0.0.1:{}", self.port);
            self.write_config();
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if e.contains("address already in use") => continue,
                Err(e) => self.fail(&e),
            }
        }
        self.fail("every probed port was taken before the registry could bind it");
    }

    fn write_config(&self) {
        let dir = self.dir.path().display();
        let config = format!(
            r#"version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: "{storage}"
  delete:
    enabled: {deletes}
http:
  addr: "{host}"
  # Fixed rather than random so upload sessions stay valid across restart().
  secret: slipway-test-registry-secret
  tls:
    certificate: "{dir}/server.pem"
    key: "{dir}/server.key"
{auth}
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"#,
            storage = self.storage.display(),
            host = self.host,
            auth = self.auth_config(),
            deletes = self.deletes,
        );
        fs::write(self.dir.path().join("config.yml"), config).expect("write registry config");
    }

    fn auth_config(&self) -> String {
        let dir = self.dir.path().display();
        match &self.token_service {
            None => format!(
                "auth:\n  htpasswd:\n    realm: slipway-test-registry\n    path: \"{dir}/htpasswd\""
            ),
            Some(tokens) => format!(
                "auth:\n  token:\n    realm: \"{}\"\n    service: {}\n    issuer: {}\n    rootcertbundle: \"{dir}/token.pem\"",
                tokens.realm,
                super::token_service::SERVICE,
                super::token_service::ISSUER,
            ),
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn()?;
        self.wait_ready()
    }

    fn spawn(&mut self) -> Result<(), String> {
        // Appending keeps the log of earlier runs after a restart.
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open registry log: {e}"))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // REGISTRY_* variables override the config file; keep the caller's environment out.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn docker-registry: {e} ({SETUP_HINT})"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until GET /v2/ without credentials answers 401, i.e. TLS and auth are both up.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("registry spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                // Its last log line is the fatal error, e.g. "bind: address already in use".
                let tail = self.log_tail();
                let last_line = tail.lines().last().unwrap_or_default();
                return Err(format!(
                    "docker-registry exited early ({status}): {last_line}"
                ));
            }
            let last = match self.curl("/v2/", false) {
                Ok((401, _)) => return Ok(()),
                Ok((status, body)) => format!("answered {status}: {body}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "https://{}/v2/ did not answer 401 within {READY_TIMEOUT:?}; last: {last}",
                    self.host
                ));
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// GET https://host{path} with curl trusting our CA; returns (status, body).
    fn curl(&self, path: &str, with_auth: bool) -> Result<(u16, String), String> {
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--max-time", "5", "--cacert"])
            .arg(&self.ca_pem)
            .args(["--write-out", "\n%{http_code}"]);
        match (&self.token_service, with_auth) {
            (_, false) => {}
            (None, true) => {
                cmd.arg("--user")
                    .arg(format!("{}:{}", self.user, self.password));
            }
            (Some(tokens), true) => {
                let scope = read_scope(path);
                cmd.arg("--header")
                    .arg(format!("Authorization: Bearer {}", tokens.token(&[&scope])));
            }
        }
        let out = cmd
            .arg(format!("https://{}{path}", self.host))
            .output()
            .map_err(|e| format!("run curl: {e} ({SETUP_HINT})"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = code
            .trim()
            .parse()
            .map_err(|_| format!("curl printed no status: {text}"))?;
        Ok((status, body.to_string()))
    }

    /// The engine reads /etc/docker/certs.d/HOST/ca.crt on every pull/push; no restart needed.
    fn trust_ca(&self) {
        let dir = certs_d(&self.host);
        let copied =
            fs::create_dir_all(&dir).and_then(|_| fs::copy(&self.ca_pem, dir.join("ca.crt")));
        if let Err(e) = copied {
            // Not fatal: the engine treats 127.0.0.0/8 as an insecure registry anyway.
            eprintln!("warning: cannot write {}: {e}", dir.display());
        }
    }

    fn docker_login(&mut self) {
        let _lock = docker_config_lock();
        let out = run_with_stdin(
            Command::new("docker").args([
                "login",
                &self.host,
                "--username",
                &self.user,
                "--password-stdin",
            ]),
            &self.password,
        );
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => self.fail(&format!(
                "docker login {} failed: {}",
                self.host,
                output_text(&out)
            )),
            Err(e) => self.fail(&format!("run docker login: {e} ({SETUP_HINT})")),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn report(&self, msg: &str) -> String {
        format!(
            "test registry {}: {msg}\nregistry log {}:\n{}",
            self.host,
            self.log_path().display(),
            self.log_tail()
        )
    }

    /// Panics with the log tail, keeping the temp dir so the printed log path stays readable.
    fn fail(&mut self, msg: &str) -> ! {
        self.dir.disable_cleanup(true);
        self.stop();
        panic!("{}", self.report(msg));
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        // Port 0: start failed before any host was chosen; nothing to undo outside the temp dir.
        if self.port == 0 {
            return;
        }
        let _ = fs::remove_dir_all(certs_d(&self.host));
        let _lock = docker_config_lock();
        let _ = Command::new("docker").args(["logout", &self.host]).output();
    }
}

/// The pull scope a read of `path` (`/v2/NAME/tags/list`, …) needs.
fn read_scope(path: &str) -> String {
    let name = path
        .trim_start_matches("/v2/")
        .split("/tags/")
        .next()
        .unwrap_or_default()
        .split("/manifests/")
        .next()
        .unwrap_or_default();
    format!("repository:{name}:pull")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn random_password() -> String {
    format!("pw-{:016x}", RandomState::new().build_hasher().finish())
}

fn certs_d(host: &str) -> PathBuf {
    Path::new("/etc/docker/certs.d").join(host)
}

/// `docker login`/`logout` rewrite the whole ~/.docker/config.json: serialize them across threads
/// and processes (nextest) so concurrent registries do not drop each other's credentials.
fn docker_config_lock() -> Option<File> {
    let file = File::create(std::env::temp_dir().join("slipway-docker-config.lock")).ok()?;
    file.lock().ok()?;
    Some(file)
}

/// A CA (CA:TRUE) and a server cert for 127.0.0.1/localhost with serverAuth; EC keys are fast to make.
fn make_certs(dir: &Path) {
    fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n",
    )
    .expect("write server.ext");
    // `req -newkey` makes the key and the request (or, with -x509, the self-signed CA) in one go.
    const NEW_EC_KEY: &str = "req -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1";
    openssl(
        dir,
        &format!(
            "{NEW_EC_KEY} -x509 -days 7 -subj /CN=slipway-test-CA \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign -keyout ca.key -out ca.pem"
        ),
    );
    openssl(
        dir,
        &format!("{NEW_EC_KEY} -subj /CN=127.0.0.1 -keyout server.key -out server.csr"),
    );
    openssl(
        dir,
        "x509 -req -days 7 -in server.csr -CA ca.pem -CAkey ca.key \
         -extfile server.ext -out server.pem",
    );
}

/// Runs openssl in `dir` with whitespace-separated `args` (none of ours contains a space).
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("run openssl: {e} ({SETUP_HINT})"));
    assert!(
        out.status.success(),
        "openssl {args} failed: {}",
        output_text(&out)
    );
}

fn write_htpasswd(dir: &Path, user: &str, password: &str) {
    // Distribution only accepts bcrypt entries (-B).
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .unwrap_or_else(|e| panic!("run htpasswd: {e} ({SETUP_HINT})"));
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        output_text(&out)
    );
    fs::write(dir.join("htpasswd"), &out.stdout).expect("write htpasswd");
}

fn parse_tags(body: &str) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("tags/list is not JSON ({e}): {body}"));
    // "tags" is null once every tag of an existing repository was deleted.
    json["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())?;
    child.wait_with_output()
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}
