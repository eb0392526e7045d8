//! Benchmark 6: several instances sharing one PostgreSQL (issue 13): the
//! webhook on PostgreSQL, claims per second, how soon an idle instance starts
//! a build another admitted, takeover after SIGKILL, and what an idle
//! instance costs the database.

use std::time::{Duration, Instant, SystemTime};

use slipway::store::{BuildRecord, PostgresStore, Store, Trigger};
use slipway::trigger::MergedPullRequest;
use slipway::types::{CommitSha, Forge, Repository};

use super::common::*;
use super::load;
use super::webhook::{check, merged_generator, with_cpu, Cell};
use crate::support::{self, postgres, FakeGitHub, Slipway, SlipwayOptions, TestRegistry};

const HOW: &str = "One PostgreSQL 15 from Debian's packages on loopback (fsync off, as in the \
tests), on the same 2 cores as Slipway, the engine, the registry and this process. Each figure \
starts from a fresh database. The webhook rows are the same loads as section 1, against an \
instance whose store is PostgreSQL; their builds fail fast in the background (the stand-in GitHub \
does not know the commits), two at a time, claimed from the database.";

/// The lease and poll of the takeover rows: a lease short enough for 20
/// kills to fit in a bench run.
const TAKEOVER_LEASE: &str = "3s";
const TAKEOVER_POLL: &str = "1s";

pub async fn run(mode: Mode, github: &FakeGitHub, registry: &TestRegistry) -> Section {
    let mut section = Section::new("6. Several instances on PostgreSQL", HOW);
    section
        .tables
        .push(webhook_on_postgres(mode, github, registry).await);
    section.tables.push(claims_per_second(mode).await);
    section
        .tables
        .push(start_elsewhere(mode, github, registry).await);
    section.tables.push(takeovers(mode, github, registry).await);
    section
        .tables
        .push(idle_queries(mode, github, registry).await);
    section
}

fn instance(
    github: &FakeGitHub,
    registry: &TestRegistry,
    database: &str,
    name: &str,
) -> SlipwayOptions {
    SlipwayOptions::new(github, registry).envs(&[
        ("SLIPWAY_DATABASE", database),
        ("SLIPWAY_INSTANCE_ID", name),
        ("SLIPWAY_MAX_QUEUED_BUILDS", "1000000000"),
    ])
}

async fn webhook_on_postgres(mode: Mode, github: &FakeGitHub, registry: &TestRegistry) -> Table {
    let database = postgres::database();
    let slipway = Slipway::start(instance(github, registry, &database, "pg-webhook")).await;
    let url = format!("{}/webhook", slipway.url);
    let pid = slipway_pid(&slipway);
    let warmup = Duration::from_secs_f64(mode.pick(1.0, 0.2));
    let duration = Duration::from_secs_f64(mode.pick(5.0, 1.0));
    let mut table = Table::new(
        "Webhook answer on PostgreSQL (medians of runs)",
        &[
            "load",
            "requests/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "slipway CPU/request",
            "p99 per run",
            "not 202",
        ],
    );
    for connections in [16usize, 128] {
        let mut cell = Cell::new();
        for rep in 0..mode.reps() {
            let (result, cpu) = with_cpu(
                pid,
                load::closed_loop(&url, connections, warmup, duration, merged_generator()),
            )
            .await;
            check(
                mode,
                &format!("pg merged x{connections} run {}", rep + 1),
                &result,
                202,
            );
            cell.add(&result, 202, cpu);
        }
        row(
            &mut table,
            &format!("closed loop, {connections} connections"),
            &cell,
        );
    }
    let rate = mode.pick(1000.0, 200.0);
    let mut cell = Cell::new();
    for rep in 0..mode.reps() {
        let (result, cpu) = with_cpu(
            pid,
            load::fixed_rate(&url, rate, 64, warmup, duration * 2, merged_generator()),
        )
        .await;
        check(
            mode,
            &format!("pg fixed {rate}/s run {}", rep + 1),
            &result,
            202,
        );
        cell.add(&result, 202, cpu);
    }
    row(&mut table, &format!("fixed {rate:.0}/s"), &cell);
    table.note(
        "Merged deliveries, each a new build: one transaction per admission batch (group \
         commit), the queue counter row locked in it, and a NOTIFY per batch. The queue is not \
         drained between runs (tens of thousands of builds wait in it), which also shows that a \
         deep queue does not slow admission or claims.",
    );
    keep_log(&slipway, "instances-webhook");
    table
}

fn row(table: &mut Table, label: &str, cell: &Cell) {
    table.row(vec![
        label.to_string(),
        fmt_rate(median(&cell.rates)),
        fmt_us(median(&cell.p50)),
        fmt_us(median(&cell.p99)),
        fmt_us(median(&cell.p999)),
        fmt_us(max(&cell.max)),
        format!("{:.0} µs", median(&cell.slipway_cpu_us)),
        each(&cell.p99, fmt_us),
        cell.unexpected.to_string(),
    ]);
}

fn queued(id: String) -> BuildRecord {
    let merge = MergedPullRequest {
        repository: Repository::parse("bench/claims").expect("a repository"),
        number: 1,
        commit: CommitSha::parse(&"0".repeat(40)).expect("a commit"),
        base_ref: "main".into(),
        source_url: "https://github.com/bench/claims".into(),
        forge: Forge::GitHub,
    };
    // Each build its own commit, so none is a duplicate of another.
    BuildRecord {
        id: id.clone(),
        commit: id.clone(),
        ..BuildRecord::queued(merge, Some(id), Trigger::Webhook)
    }
}

/// Claims straight on the store: one claimer, then eight at once.
async fn claims_per_second(mode: Mode) -> Table {
    let builds = mode.pick(4000usize, 200);
    let mut table = Table::new(
        "Claims per second (the store alone)",
        &["claimers", "builds claimed", "claims/s", "claimed twice"],
    );
    for claimers in [1usize, 8] {
        let database = postgres::database();
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(
            PostgresStore::open(&database)
                .await
                .expect("open the store"),
        );
        let records: Vec<BuildRecord> = (0..builds)
            .map(|i| queued(format!("{:040x}", i + 1)))
            .collect();
        for batch in records.chunks(200) {
            store.admit_batch(batch, u64::MAX).await.expect("admit");
        }
        let started = Instant::now();
        let tasks: Vec<_> = (0..claimers)
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    let name = format!("claimer-{c}");
                    while let Some(claimed) = store
                        .claim(&name, Duration::from_secs(60))
                        .await
                        .expect("claim")
                    {
                        ids.push(claimed.record.id);
                    }
                    ids
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.extend(task.await.expect("claimer"));
        }
        let took = started.elapsed();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        table.row(vec![
            claimers.to_string(),
            ids.len().to_string(),
            fmt_rate(ids.len() as f64 / took.as_secs_f64()),
            (ids.len() - unique.len()).to_string(),
        ]);
    }
    table.note(
        "Each claim is an `EXISTS` read, then one transaction: the queue counter's row lock \
         (taken first, as admissions take it, so that a claim and an admission of the same \
         commit cannot deadlock), and one statement that takes the oldest waiting build \
         `FOR UPDATE SKIP LOCKED` and sets it running with its attempt raised and a lease on \
         the database's clock. The counter lock serialises claims, so 8 claimers go no faster \
         than one. Claimers are tasks of this process, each with its own pooled connection.",
    );
    table
}

/// A slow service, so that a build occupies an instance for as long as needed.
fn slow_commit(github: &FakeGitHub, name: &str) -> String {
    let commit = support::sha();
    github.add_commit_files(
        "bench/slow",
        &commit,
        &[
            (
                "dockerInfo.json",
                &format!(r#"{{"service_name":"{name}","version":"1.0.0"}}"#),
            ),
            (
                "Dockerfile",
                &format!(
                    "FROM {}\nRUN echo {commit} && sleep 600\n",
                    support::BASE_IMAGE
                ),
            ),
        ],
    );
    commit
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(SystemTime::from(at))
}

/// A build admitted on A (whose one build slot is taken) starts on B: the
/// time from A's 202 to the build's `started_at`, which B sets as it claims.
async fn start_elsewhere(mode: Mode, github: &FakeGitHub, registry: &TestRegistry) -> Table {
    let database = postgres::database();
    let options = |name: &str| {
        instance(github, registry, &database, name).env("SLIPWAY_MAX_CONCURRENT_BUILDS", "1")
    };
    let a = Slipway::start(options("bench-a")).await;
    let b = Slipway::start(options("bench-b")).await;
    let busy = a
        .merge("bench/slow", &slow_commit(github, "occupies-a"))
        .await;
    let running = a
        .record_when(&busy, Duration::from_secs(60), |r| r["status"] == "running")
        .await
        .expect("the slow build starts");
    // Whichever instance took the slow build is A from here on.
    let (a, b) = if running["instance"] == "bench-a" {
        (a, b)
    } else {
        (b, a)
    };
    let samples = mode.pick(20, 3);
    let mut delays = Vec::new();
    let mut elsewhere = 0;
    for _ in 0..samples {
        let id = a.merge("bench/unknown", &support::sha()).await;
        let answered = SystemTime::now();
        let started = b
            .record_when(&id, Duration::from_secs(30), |r| {
                r["started_at"].is_string()
            })
            .await
            .expect("the build starts");
        if started["instance"] != running["instance"] {
            elsewhere += 1;
        }
        let at = started["started_at"].as_str().and_then(parse_time);
        if let Some(delay) = at.and_then(|at| at.duration_since(answered).ok()) {
            delays.push(ms(delay));
        } else {
            delays.push(0.0);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop((a, b));
    remove_containers_running("sleep 600");
    let mut table = Table::new(
        "From a 202 on A to the build's start on B",
        &["builds", "started on B", "min", "median", "max"],
    );
    let sorted = sorted(delays);
    table.row(vec![
        samples.to_string(),
        elsewhere.to_string(),
        fmt_ms(sorted.first().copied().unwrap_or_default()),
        fmt_ms(median(&sorted)),
        fmt_ms(sorted.last().copied().unwrap_or_default()),
    ]);
    table.note(
        "A holds a slow build in its only slot (SLIPWAY_MAX_CONCURRENT_BUILDS=1), so B, idle, \
         claims each new build: woken by the admission's NOTIFY, not by its 1 s poll. Start is \
         the record's started_at (written by B as it claims) against the moment A's 202 arrived \
         here; both clocks are this machine's.",
    );
    table
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// SIGKILL of the instance running a build: the time until another has
/// claimed it (attempt 2), over several kills, each on a fresh database.
async fn takeovers(mode: Mode, github: &FakeGitHub, registry: &TestRegistry) -> Table {
    let kills = mode.pick(20, 2);
    let mut delays = Vec::new();
    for kill in 0..kills {
        let database = postgres::database();
        let options = |name: String| {
            instance(github, registry, &database, &name).envs(&[
                ("SLIPWAY_LEASE", TAKEOVER_LEASE),
                ("SLIPWAY_QUEUE_POLL", TAKEOVER_POLL),
            ])
        };
        let mut victim = Slipway::start(options(format!("victim-{kill}"))).await;
        let id = victim
            .merge(
                "bench/slow",
                &slow_commit(github, &format!("takeover-{kill}")),
            )
            .await;
        victim
            .record_when(&id, Duration::from_secs(60), |r| r["status"] == "running")
            .await
            .expect("the victim runs the build");
        let survivor = Slipway::start(options(format!("survivor-{kill}"))).await;
        // A random point in the lease's renewal cycle.
        tokio::time::sleep(Duration::from_millis(500 + 97 * kill as u64 % 1000)).await;
        let killed = Instant::now();
        victim.kill();
        let taken = survivor
            .record_when(&id, Duration::from_secs(30), |r| {
                r["attempt"].as_u64() >= Some(2) && r["status"] == "running"
            })
            .await;
        if taken.is_ok() {
            delays.push(secs(killed.elapsed()));
        }
        drop(survivor);
    }
    remove_containers_running("sleep 600");
    let mut table = Table::new(
        "Takeover after SIGKILL",
        &[
            "kills",
            "taken over",
            "--lease",
            "--queue-poll",
            "min",
            "median",
            "max",
        ],
    );
    let taken = delays.len();
    let sorted = sorted(delays);
    table.row(vec![
        kills.to_string(),
        taken.to_string(),
        TAKEOVER_LEASE.into(),
        TAKEOVER_POLL.into(),
        fmt_s(sorted.first().copied().unwrap_or_default()),
        fmt_s(median(&sorted)),
        fmt_s(sorted.last().copied().unwrap_or_default()),
    ]);
    table.note(
        "From the SIGKILL to the record showing attempt 2 running on the survivor. The lease was \
         renewed every third of it, so it runs out between 2/3 of a lease and a whole lease after \
         the kill; the survivor's poll adds up to one interval. Bound: --lease + --queue-poll.",
    );
    table
}

/// Builds left by killed instances: their engine builds stop when the
/// connection goes, but a `RUN` may linger for a moment.
fn remove_containers_running(command: &str) {
    let (_, listing) = docker_cli(&[
        "ps",
        "-q",
        "--filter",
        "status=running",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Command}}",
    ]);
    let ids: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains(command))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        let _ = docker_cli(&args);
    }
}

/// What idle instances cost the database: statements per second, counted
/// in the server's own log (`log_statement = all` for this database only).
async fn idle_queries(mode: Mode, github: &FakeGitHub, registry: &TestRegistry) -> Table {
    let window = Duration::from_secs_f64(mode.pick(20.0, 3.0));
    let mut table = Table::new(
        "Idle instances: statements per second per instance",
        &[
            "instances",
            "window",
            "statements",
            "per instance per second",
        ],
    );
    for count in [1usize, 3] {
        let database = postgres::database();
        let name = database.rsplit('/').next().unwrap_or_default().to_string();
        postgres::server()
            .sql(
                "postgres",
                &format!("ALTER DATABASE {name} SET log_statement = 'all'"),
            )
            .expect("log statements");
        let mut instances = Vec::new();
        for i in 0..count {
            instances.push(
                Slipway::start(instance(github, registry, &database, &format!("idle-{i}"))).await,
            );
        }
        // Past the start (migrations, the first claims).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = postgres::server().log_statements();
        tokio::time::sleep(window).await;
        let statements = postgres::server().log_statements().saturating_sub(before);
        drop(instances);
        table.row(vec![
            count.to_string(),
            fmt_s(window.as_secs_f64()),
            statements.to_string(),
            format!(
                "{:.1}",
                statements as f64 / count as f64 / window.as_secs_f64()
            ),
        ]);
    }
    table.note(
        "With nothing to build, an instance polls for a claim once per --queue-poll (1 s) and \
         keeps one LISTEN connection open (which sends nothing while idle); pooled connections \
         are checked before reuse. Counted from the server's statement log lines (`statement:` \
         and `execute`), which only this database's sessions write.",
    );
    table
}
