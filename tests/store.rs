//! One conformance suite for the `Store`, run against each backend: every
//! check is written once, as an async fn taking the store, and `conformance!`
//! makes one test per backend of it.

mod support;

use std::sync::Arc;

use slipway::store::{
    now_rfc3339, Admission, BuildRecord, BuildStatus, ListFilter, PostgresStore, SqliteStore, Store,
};

fn record(id: &str, delivery: Option<&str>, commit: &str) -> BuildRecord {
    BuildRecord {
        id: id.into(),
        status: BuildStatus::Queued,
        repository: "o/r".into(),
        pull_request: 1,
        commit: commit.into(),
        base_ref: "main".into(),
        delivery: delivery.map(Into::into),
        created_at: now_rfc3339(),
        started_at: None,
        finished_at: None,
        error: None,
        services: vec![],
        source_url: "https://github.com/o/r".into(),
        retry_of: None,
        instance: None,
        trigger: Default::default(),
        pr_comment: None,
    }
}

fn created(id: &str) -> Admission {
    Admission::Created(id.into())
}

fn dup(id: &str) -> Admission {
    Admission::Duplicate(id.into())
}

async fn duplicates_by_delivery_and_by_commit(store: Arc<dyn Store>) {
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

async fn queued_count_follows_status_changes(store: Arc<dyn Store>) {
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

async fn log_lines_come_back_in_order(store: Arc<dyn Store>) {
    store
        .admit(&record("a", Some("d1"), "c1"), 10)
        .await
        .unwrap();
    let written = store
        .append_log("a", &["one".into(), "two".into()])
        .await
        .unwrap();
    store.append_log("a", &["three".into()]).await.unwrap();
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
                    let store = super::SqliteStore::open(dir.path()).unwrap();
                    super::$check(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let url = super::support::postgres::database();
                    let store = super::PostgresStore::open(&url).await.unwrap();
                    super::$check(std::sync::Arc::new(store)).await;
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
async fn concurrent_admissions_of_one_commit_create_one_build(store: Arc<dyn Store>) {
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
async fn a_batch_is_admitted_in_order(store: Arc<dyn Store>) {
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

async fn catch_up_starts_at_the_first_build_or_the_first_question(store: Arc<dyn Store>) {
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

conformance!(
    concurrent_admissions_of_one_commit_create_one_build,
    a_batch_is_admitted_in_order,
    catch_up_starts_at_the_first_build_or_the_first_question,
    duplicates_by_delivery_and_by_commit,
    queued_count_follows_status_changes,
    log_lines_come_back_in_order,
);
