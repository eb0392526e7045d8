//! A real PostgreSQL for the tests, from Debian's packages: one server per
//! test process (initdb and pg_ctl on a free loopback port, `fsync=off`, as
//! `nobody` when the tests run as root, since PostgreSQL refuses root), and a
//! fresh database for each test. A watchdog stops the server and removes its
//! files once the test process is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SUPERUSER: &str = "slipway";

pub struct PgServer {
    bin: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    dir: PathBuf,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The server of this test process, started on first use.
pub fn server() -> &'static PgServer {
    SERVER.get_or_init(PgServer::start)
}

/// A new, empty database on the server: its `postgres://` URL.
pub fn database() -> String {
    server().create_database()
}

/// `/usr/lib/postgresql/<newest>/bin`.
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test-env.sh installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl PgServer {
    fn start() -> Self {
        let bin = pg_bin();
        let run_as = is_root().then_some("nobody");
        let dir = tempfile::Builder::new()
            .prefix("slipway-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        if let Some(user) = run_as {
            run(Command::new("chown").args(["-R", user]).arg(&dir));
        }
        let server = Self {
            bin,
            port: super::free_port(),
            run_as,
            dir: dir.clone(),
        };
        let data = dir.join("data");
        let initdb = server.bin.join("initdb");
        run(&mut server.command(&format!(
            "{} -D {} -U {SUPERUSER} --auth=trust -E UTF8 --no-sync >/dev/null",
            initdb.display(),
            data.display()
        )));
        server.spawn_with_watchdog(&dir, &data);
        server.wait_ready();
        server
    }

    /// A server of its own, for a test that stops and restarts it.
    #[allow(dead_code)]
    pub fn private() -> Self {
        Self::start()
    }

    /// A new, empty database on this server: its `postgres://` URL.
    #[allow(dead_code)]
    pub fn database(&self) -> String {
        self.create_database()
    }

    /// Stops the server (fast shutdown: sessions are cut, as in a restart).
    #[allow(dead_code)]
    pub fn stop(&self) {
        run(&mut self.command(&format!(
            "{} -D {} -m fast -w stop >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.dir.join("data").display()
        )));
    }

    /// Starts a stopped server again, with the options it first ran with.
    #[allow(dead_code)]
    pub fn start_again(&self) {
        run(&mut self.command(&format!(
            "{} -D {} -o '{}' -l {}/log -w start >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.dir.join("data").display(),
            self.options(),
            self.dir.display()
        )));
        self.wait_ready();
    }

    /// Runs `sql` in `database` as the superuser; its output.
    #[allow(dead_code)]
    pub fn sql(&self, database: &str, sql: &str) -> Result<String, String> {
        self.psql(database, sql)
    }

    /// Statements the server has logged so far (for databases set to
    /// `log_statement = all`).
    #[allow(dead_code)]
    pub fn log_statements(&self) -> usize {
        std::fs::read_to_string(self.dir.join("log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("LOG:  statement:") || l.contains("LOG:  execute "))
            .count()
    }

    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.display()
        )
    }

    /// A shell command, as the unprivileged user when there is one.
    fn command(&self, script: &str) -> Command {
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--", "sh", "-c", script]);
                cmd
            }
            None => {
                let mut cmd = Command::new("sh");
                cmd.args(["-c", script]);
                cmd
            }
        };
        cmd.current_dir("/tmp");
        cmd
    }

    /// Starts the server, and stops it (and removes its files) once this
    /// test process has exited. The watchdog outlives this process on
    /// purpose, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    fn spawn_with_watchdog(&self, dir: &Path, data: &Path) {
        let pg_ctl = self.bin.join("pg_ctl");
        let (pg_ctl, data, dir) = (pg_ctl.display(), data.display(), dir.display());
        let options = self.options();
        let script = format!(
            "{pg_ctl} -D {data} -o '{options}' -l {dir}/log -w start >/dev/null || exit 1; \
             while [ -d /proc/{pid} ]; do sleep 1; done; \
             {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id()
        );
        self.command(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start PostgreSQL");
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("PostgreSQL on port {} did not start", self.port);
    }

    fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-qAt",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn create_database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }
}

fn run(cmd: &mut Command) {
    let status = cmd.status().expect("run");
    assert!(status.success(), "{cmd:?} failed");
}
