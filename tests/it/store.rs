//! One conformance suite for the `Store`, run against each backend: every
//! check is written once, as an async fn taking the store, and `conformance!`
//! makes one test per backend of it. Each check is also given the store's
//! clock, set by hand (as River's driver suite passes `now`): a lease runs out
//! when the check moves the clock past it, never after a sleep.

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use slipway::trigger::MergedPullRequest;
use slipway::types::{CommitSha, Forge, Repository};

use slipway::store::{
    Admission, BuildRecord, BuildStatus, Fence, ListFilter, ManualClock, Notice, PostgresStore,
    SqliteStore, Store, StoreError, Trigger,
};

fn record(id: &str, delivery: Option<&str>, commit: &str) -> BuildRecord {
    let merge = MergedPullRequest {
        repository: Repository::parse("o/r").expect("a repository"),
        number: 1,
        commit: CommitSha::parse(&"0".repeat(40)).expect("a commit"),
        base_ref: "main".into(),
        source_url: "https://github.com/o/r".into(),
        forge: Forge::GitHub,
    };
    // The store keys on these; any text does for it.
    BuildRecord {
        id: id.into(),
        commit: commit.into(),
        ..BuildRecord::queued(merge, delivery.map(Into::into), Trigger::Webhook)
    }
}

fn created(id: &str) -> Admission {
    Admission::Created(id.into())
}

fn dup(id: &str) -> Admission {
    Admission::Duplicate(id.into())
}

async fn duplicates_by_delivery_and_by_commit(store: Arc<dyn Store>, _clock: ManualClock) {
    let first = record("a", Some("d1"), "c1");
    assert_eq!(store.admit(&first, 10).await.unwrap(), created("a"));
    let same_delivery = record("b", Some("d1"), "c2");
    assert_eq!(store.admit(&same_delivery, 10).await.unwrap(), dup("a"));
    let same_commit = record("c", Some("d2"), "c1");
    assert_eq!(store.admit(&same_commit, 10).await.unwrap(), dup("a"));
    let mut retry = record("r", None, "c1");
    retry.retry_of = Some("a".into());
    assert_eq!(store.admit(&retry, 10).await.unwrap(), created("r"));
    let over = record("x", Some("d3"), "c3");
    assert_eq!(store.admit(&over, 2).await.unwrap(), Admission::QueueFull);
}

async fn queued_count_follows_status_changes(store: Arc<dyn Store>, _clock: ManualClock) {
    for (id, delivery, commit) in [("a", "d1", "c1"), ("b", "d2", "c2"), ("c", "d3", "c3")] {
        store
            .admit(&record(id, Some(delivery), commit), 10)
            .await
            .unwrap();
    }
    assert_eq!(store.queued_count().await.unwrap(), 3);
    let mut a = record("a", Some("d1"), "c1");
    a.status = BuildStatus::Running;
    store.save(&a).await.unwrap();
    store.save(&a).await.unwrap();
    assert_eq!(store.queued_count().await.unwrap(), 2);
    assert_eq!(store.unfinished().await.unwrap().len(), 3);
    a.status = BuildStatus::Queued;
    store.save(&a).await.unwrap();
    assert_eq!(store.queued_count().await.unwrap(), 3);
}

async fn log_lines_come_back_in_order(store: Arc<dyn Store>, _clock: ManualClock) {
    store
        .admit(&record("a", Some("d1"), "c1"), 10)
        .await
        .unwrap();
    let fence = Fence {
        build: "a".into(),
        attempt: 0,
    };
    let written = store
        .append_log(&fence, &["one".into(), "two".into()])
        .await
        .unwrap();
    store.append_log(&fence, &["three".into()]).await.unwrap();
    let lines = store.read_log("a", 0).await.unwrap();
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(written, lines[..2]);
    let after_first = store.read_log("a", lines[0].seq).await.unwrap();
    assert_eq!(after_first, lines[1..]);
    let filter = ListFilter {
        status: Some(BuildStatus::Succeeded),
        limit: 10,
        ..Default::default()
    };
    assert!(store.list(&filter).await.unwrap().is_empty());
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let clock = super::ManualClock::new();
                    let store = super::SqliteStore::open(dir.path())
                        .unwrap()
                        .with_clock(clock.clone().into());
                    super::$check(std::sync::Arc::new(store), clock).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let url = crate::support::postgres::database();
                    let clock = super::ManualClock::new();
                    let store = super::PostgresStore::open(&url)
                        .await
                        .unwrap()
                        .with_clock(clock.clone().into());
                    super::$check(std::sync::Arc::new(store), clock).await;
                }
            )*
        }
    };
}

/// Two instances starting at once on a fresh database both come up: the
/// migrations take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_stores_migrate_one_fresh_database_at_once() {
    let url = support::postgres::database();
    let (a, b) = tokio::join!(PostgresStore::open(&url), PostgresStore::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.admit(&record("a", Some("d1"), "c1"), 10).await.unwrap();
    assert_eq!(b.queued_count().await.unwrap(), 1);
}

/// Many admissions of one merge at once, from many tasks: exactly one build.
async fn concurrent_admissions_of_one_commit_create_one_build(
    store: Arc<dyn Store>,
    _clock: ManualClock,
) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let delivery = format!("d{i}");
                store
                    .admit(&record(&format!("b{i}"), Some(&delivery), "same"), 100)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Admission::Created(_)) {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.queued_count().await.unwrap(), 1);
}

/// One batch: duplicates within it and against stored builds, and the limit.
async fn a_batch_is_admitted_in_order(store: Arc<dyn Store>, _clock: ManualClock) {
    store
        .admit(&record("old", Some("d0"), "c0"), 10)
        .await
        .unwrap();
    let batch = [
        record("a", Some("d1"), "c1"),
        record("b", Some("d1"), "c2"),
        record("c", Some("d3"), "c0"),
        record("d", Some("d4"), "c4"),
    ];
    let answers: Vec<Admission> = store
        .admit_batch(&batch, 2)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        answers,
        [created("a"), dup("a"), dup("old"), Admission::QueueFull]
    );
}

async fn catch_up_starts_at_the_first_build_or_the_first_question(
    store: Arc<dyn Store>,
    _clock: ManualClock,
) {
    let asked = "2026-01-01T00:00:00Z";
    assert_eq!(store.catch_up_since("o/new", asked).await.unwrap(), asked);
    let later = "2026-02-01T00:00:00Z";
    assert_eq!(store.catch_up_since("o/new", later).await.unwrap(), asked);
    let mut first = record("a", Some("d1"), "c1");
    first.created_at = "2025-12-01T00:00:00Z".into();
    store.admit(&first, 10).await.unwrap();
    assert_eq!(
        store.catch_up_since("o/r", later).await.unwrap(),
        first.created_at
    );
}

/// Slipway itself on PostgreSQL: a merge published, its record listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slipway_publishes_a_merge_with_its_records_in_postgres() {
    let url = support::postgres::database();
    let (github, registry, slipway) = support::start_stack(&[("SLIPWAY_DATABASE", &url)]).await;
    let commit = support::sha();
    github.add_commit_files(
        "acme/pg",
        &commit,
        &[
            (
                "dockerInfo.json",
                r#"{"service_name":"on-pg","version":"1.0.0"}"#,
            ),
            (
                "Dockerfile",
                "FROM slipway-test-base:1\nCOPY Dockerfile /\n",
            ),
        ],
    );
    let id = slipway.merge("acme/pg", &commit).await;
    let record = slipway.wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(registry.tags("on-pg"), vec!["1.0.0"]);
    let (status, builds) = slipway.get_json("/builds").await;
    assert_eq!(status, 200);
    assert!(builds.to_string().contains(&id), "{builds}");
    assert!(
        !slipway.data_dir.join("slipway.db").exists(),
        "nothing went to SQLite"
    );
    let log = slipway.build_log(&id).await;
    assert!(log.contains("published"), "{log}");
}

/// Never runs out during a check: the clock moves by `SHORT`s only.
const LEASE: Duration = Duration::from_secs(3600);
/// Runs out once the check moves the clock past it.
const SHORT: Duration = Duration::from_secs(30);
/// Past the end of a `SHORT` lease taken now.
const PAST_SHORT: Duration = Duration::from_secs(31);

async fn admit_all(store: &Arc<dyn Store>, ids: &[&str]) {
    for id in ids {
        let delivery = format!("d-{id}");
        let commit = format!("c-{id}");
        let answer = store
            .admit(&record(id, Some(&delivery), &commit), 1000)
            .await;
        assert_eq!(answer.unwrap(), created(id));
    }
}

async fn claim(store: &Arc<dyn Store>, instance: &str, lease: Duration) -> Option<BuildRecord> {
    store
        .claim(instance, lease)
        .await
        .unwrap()
        .map(|claimed| claimed.record)
}

fn is_lease_lost<T: std::fmt::Debug>(answer: Result<T, StoreError>) -> bool {
    matches!(answer, Err(StoreError::LeaseLost { .. }))
}

async fn claims_take_the_oldest_waiting_build_once(store: Arc<dyn Store>, _clock: ManualClock) {
    admit_all(&store, &["a", "b"]).await;
    let first = store.claim("one", LEASE).await.unwrap().unwrap();
    assert_eq!(first.record.id, "a");
    assert_eq!(first.record.status, BuildStatus::Running);
    assert_eq!(first.record.instance.as_deref(), Some("one"));
    assert_eq!(first.record.attempt, 1);
    assert_eq!(first.taken_from, None);
    assert_eq!(claim(&store, "two", LEASE).await.unwrap().id, "b");
    assert!(claim(&store, "three", LEASE).await.is_none());
    assert_eq!(store.queued_count().await.unwrap(), 0);
    let stored = store.get("a").await.unwrap().unwrap();
    assert_eq!(stored, first.record, "the record says who holds it");
}

async fn concurrent_claims_never_share_a_build(store: Arc<dyn Store>, _clock: ManualClock) {
    let ids: Vec<String> = (0..24).map(|i| format!("b{i}")).collect();
    admit_all(&store, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let claimers: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(build) = claim(&store, &format!("i{i}"), LEASE).await {
                    mine.push(build.id);
                }
                mine
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    assert_eq!(claimed.len(), ids.len(), "{claimed:?}");
    let unique: HashSet<&String> = claimed.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a build was claimed twice: {claimed:?}"
    );
}

async fn renewing_keeps_a_build_from_takeover(store: Arc<dyn Store>, clock: ManualClock) {
    admit_all(&store, &["a"]).await;
    let held = claim(&store, "one", SHORT).await.unwrap();
    for _ in 0..4 {
        clock.advance(SHORT / 2);
        assert!(store.renew(&Fence::of(&held), SHORT).await.unwrap());
        assert!(claim(&store, "two", LEASE).await.is_none());
    }
}

async fn an_expired_lease_is_taken_over_and_the_old_attempt_fenced(
    store: Arc<dyn Store>,
    clock: ManualClock,
) {
    admit_all(&store, &["a"]).await;
    let old = claim(&store, "one", SHORT).await.unwrap();
    assert!(
        claim(&store, "two", LEASE).await.is_none(),
        "the lease still runs"
    );
    clock.advance(PAST_SHORT);
    let taken = store.claim("two", LEASE).await.unwrap().unwrap();
    assert_eq!(taken.record.id, "a");
    assert_eq!(taken.record.attempt, 2);
    assert_eq!(taken.taken_from.as_deref(), Some("one"));

    let stale = Fence::of(&old);
    assert!(!store.renew(&stale, LEASE).await.unwrap());
    let mut late = old.clone();
    late.status = BuildStatus::Failed;
    assert!(is_lease_lost(store.save(&late).await));
    assert!(is_lease_lost(
        store.append_log(&stale, &["late".into()]).await
    ));
    assert!(!store.hand_back(&stale).await.unwrap());

    let current = Fence::of(&taken.record);
    assert!(store.renew(&current, LEASE).await.unwrap());
    store
        .append_log(&current, &["on two".into()])
        .await
        .unwrap();
    let stored = store.get("a").await.unwrap().unwrap();
    assert_eq!(
        stored.status,
        BuildStatus::Running,
        "the stale write changed nothing"
    );
    assert_eq!(stored.instance.as_deref(), Some("two"));
    let texts: Vec<String> = store
        .read_log("a", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(texts, ["on two"]);
}

async fn log_lines_stay_in_order_across_a_takeover(store: Arc<dyn Store>, clock: ManualClock) {
    admit_all(&store, &["a"]).await;
    let old = Fence::of(&claim(&store, "one", SHORT).await.unwrap());
    store
        .append_log(&old, &["one-1".into(), "one-2".into()])
        .await
        .unwrap();
    clock.advance(PAST_SHORT);
    let new = Fence::of(&claim(&store, "two", LEASE).await.unwrap());
    store.append_log(&new, &["two-1".into()]).await.unwrap();
    assert!(is_lease_lost(
        store.append_log(&old, &["one-3".into()]).await
    ));
    store.append_log(&new, &["two-2".into()]).await.unwrap();
    let lines = store.read_log("a", 0).await.unwrap();
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["one-1", "one-2", "two-1", "two-2"]);
    assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq));
}

async fn a_handed_back_build_is_claimed_again(store: Arc<dyn Store>, _clock: ManualClock) {
    admit_all(&store, &["a"]).await;
    let held = claim(&store, "one", LEASE).await.unwrap();
    let first = Fence::of(&held);
    assert!(store.hand_back(&first).await.unwrap());
    assert!(
        is_lease_lost(store.save(&held).await),
        "a handed-back build takes no more writes from its old holder"
    );
    let stored = store.get("a").await.unwrap().unwrap();
    assert_eq!(stored.status, BuildStatus::Queued);
    assert_eq!(stored.instance, None);
    assert_eq!(store.queued_count().await.unwrap(), 1);
    let again = store.claim("two", LEASE).await.unwrap().unwrap();
    assert_eq!(again.record.attempt, 2);
    assert_eq!(again.taken_from, None, "handed back, not taken over");
    assert!(!store.hand_back(&first).await.unwrap());
}

async fn a_restarted_instance_releases_its_builds_at_once(
    store: Arc<dyn Store>,
    _clock: ManualClock,
) {
    admit_all(&store, &["a"]).await;
    claim(&store, "one", LEASE).await.unwrap();
    assert!(claim(&store, "one", LEASE).await.is_none());
    assert_eq!(store.release_instance("one").await.unwrap(), 1);
    let resumed = store.claim("one", LEASE).await.unwrap().unwrap();
    assert_eq!(resumed.record.id, "a");
    assert_eq!(resumed.record.attempt, 2);
}

async fn a_tag_is_leased_to_one_build_at_a_time(store: Arc<dyn Store>, clock: ManualClock) {
    let a = Fence {
        build: "a".into(),
        attempt: 1,
    };
    let b = Fence {
        build: "b".into(),
        attempt: 1,
    };
    let tag = "reg.example/api:1.0.0";
    assert!(store.lease_tag(tag, &a, LEASE).await.unwrap());
    assert!(!store.lease_tag(tag, &b, LEASE).await.unwrap());
    assert!(
        store.lease_tag(tag, &a, LEASE).await.unwrap(),
        "renewed by its holder"
    );
    let a_again = Fence {
        build: "a".into(),
        attempt: 2,
    };
    assert!(
        !store.lease_tag(tag, &a_again, LEASE).await.unwrap(),
        "another attempt is another holder"
    );
    store.release_tag(tag, &b).await.unwrap();
    assert!(
        !store.lease_tag(tag, &b, LEASE).await.unwrap(),
        "only the holder releases"
    );
    store.release_tag(tag, &a).await.unwrap();
    assert!(store.lease_tag(tag, &b, SHORT).await.unwrap());
    clock.advance(PAST_SHORT);
    assert!(
        store.lease_tag(tag, &a, LEASE).await.unwrap(),
        "a lease that ran out is taken"
    );
    assert!(!store.lease_tag(tag, &b, LEASE).await.unwrap());
}

async fn next(notices: &mut tokio::sync::mpsc::Receiver<Notice>) -> Notice {
    let wait = tokio::time::timeout(Duration::from_secs(10), notices.recv());
    wait.await
        .expect("a notice within 10 s")
        .expect("listening")
}

/// PostgreSQL tells the other instances: an admission, and log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notifies_other_instances_of_admissions_and_log_lines() {
    let url = support::postgres::database();
    let here = PostgresStore::open(&url).await.unwrap();
    let there: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
    let mut notices = here.notices().unwrap();
    assert_eq!(
        next(&mut notices).await,
        Notice::Missed,
        "first, look at everything"
    );
    admit_all(&there, &["a"]).await;
    assert_eq!(next(&mut notices).await, Notice::Queued);
    let fence = Fence::of(&claim(&there, "there", LEASE).await.unwrap());
    there
        .append_log(&fence, &["x".into(), "y".into()])
        .await
        .unwrap();
    assert_eq!(
        next(&mut notices).await,
        Notice::Logged("a".into()),
        "one notice per batch"
    );
}

conformance!(
    claims_take_the_oldest_waiting_build_once,
    concurrent_claims_never_share_a_build,
    renewing_keeps_a_build_from_takeover,
    an_expired_lease_is_taken_over_and_the_old_attempt_fenced,
    log_lines_stay_in_order_across_a_takeover,
    a_handed_back_build_is_claimed_again,
    a_restarted_instance_releases_its_builds_at_once,
    a_tag_is_leased_to_one_build_at_a_time,
    concurrent_admissions_of_one_commit_create_one_build,
    a_batch_is_admitted_in_order,
    catch_up_starts_at_the_first_build_or_the_first_question,
    duplicates_by_delivery_and_by_commit,
    queued_count_follows_status_changes,
    log_lines_come_back_in_order,
);
