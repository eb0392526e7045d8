//! One conformance suite for the `Store`, run against each backend: every
//! check is written once, as an async fn taking the store, and `conformance!`
//! makes one test per backend of it.

use std::sync::Arc;

use slipway::store::{
    now_rfc3339, Admission, BuildRecord, BuildStatus, ListFilter, SqliteStore, Store,
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
    };
}

conformance!(
    duplicates_by_delivery_and_by_commit,
    queued_count_follows_status_changes,
    log_lines_come_back_in_order,
);
