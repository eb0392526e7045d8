//! Intake: the one place where a merge becomes a build. Whatever found the
//! merge (a forge's delivery, a retry, the catch-up), it asks here whether
//! the merge publishes (`--branches`, `--repositories`), and admits the
//! build here: stored once, logged, and the queue woken.

use crate::admission::{AdmissionError, Admissions};
use crate::queue::Queue;
use crate::store::{now_rfc3339, Admission, BuildRecord, BuildStatus, Trigger};
use crate::trigger::{self, MergedPullRequest};
use crate::types::{Forge, Repository};

pub struct Intake {
    /// `--branches`; empty publishes merges into every branch.
    branches: Vec<String>,
    /// `--repositories`; empty serves every repository.
    repositories: Vec<Repository>,
    /// The forges this instance was given an API for.
    forges: Vec<Forge>,
    admissions: Admissions,
    queue: Queue,
    max_queued_builds: u64,
    /// Tells the forge of each admitted build (a GitHub App's queued check run).
    announcer: Option<Announcer>,
}

/// Called with each build admitted; must not wait on the network.
pub type Announcer = Box<dyn Fn(&BuildRecord) + Send + Sync>;

impl Intake {
    pub fn new(
        branches: &[String],
        repositories: Vec<Repository>,
        forges: Vec<Forge>,
        admissions: Admissions,
        queue: Queue,
        max_queued_builds: u64,
    ) -> Self {
        let branches = branches
            .iter()
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect();
        Self {
            branches,
            repositories,
            forges,
            admissions,
            queue,
            max_queued_builds,
            announcer: None,
        }
    }

    /// `None`: nothing to announce, and no copy of each record made for it.
    pub fn with_announcer(mut self, announcer: Option<Announcer>) -> Self {
        self.announcer = announcer;
        self
    }

    pub fn branches(&self) -> &[String] {
        &self.branches
    }

    pub fn repositories(&self) -> &[Repository] {
        &self.repositories
    }

    pub fn max_queued_builds(&self) -> u64 {
        self.max_queued_builds
    }

    /// Whether this instance can build merges from `forge`.
    pub fn takes(&self, forge: Forge) -> bool {
        self.forges.contains(&forge)
    }

    /// Why this merge does not publish here, or `None` when it does.
    pub fn refusal(&self, merge: &MergedPullRequest) -> Option<String> {
        if let Some(reason) = trigger::branch_refusal(&self.branches, &merge.base_ref) {
            return Some(reason);
        }
        (!self.serves(&merge.repository))
            .then(|| format!("repository {} is not in --repositories", merge.repository))
    }

    /// Whether `--repositories` lets this repository publish (GitHub's names ignore case).
    pub fn serves(&self, repo: &Repository) -> bool {
        self.repositories.is_empty()
            || self
                .repositories
                .iter()
                .any(|r| r.as_str().eq_ignore_ascii_case(repo.as_str()))
    }

    /// Stores a new build, unless it duplicates one, and wakes the queue.
    pub async fn admit(&self, record: BuildRecord) -> Result<Admission, AdmissionError> {
        let (repository, pull_request, commit, trigger) = (
            record.repository.clone(),
            record.pull_request,
            record.commit.clone(),
            record.trigger,
        );
        let announced = self
            .announcer
            .as_ref()
            .map(|announce| (announce, record.clone()));
        let admission = self.admissions.admit(record).await?;
        if let Admission::Created(id) = &admission {
            tracing::info!(build = %id, %repository, pull_request, %commit, ?trigger, "build queued");
            if let Some((announce, record)) = announced {
                announce(&record);
            }
            self.queue.wake();
        }
        Ok(admission)
    }
}

impl BuildRecord {
    /// The one constructor of a new build: queued, nothing run yet.
    pub fn queued(merge: MergedPullRequest, delivery: Option<String>, trigger: Trigger) -> Self {
        BuildRecord {
            id: uuid::Uuid::new_v4().simple().to_string(),
            status: BuildStatus::Queued,
            repository: merge.repository.to_string(),
            pull_request: merge.number,
            commit: merge.commit.to_string(),
            base_ref: merge.base_ref,
            delivery,
            created_at: now_rfc3339(),
            started_at: None,
            finished_at: None,
            error: None,
            services: vec![],
            source_url: merge.source_url,
            retry_of: None,
            instance: None,
            trigger,
            pr_comment: None,
            attempt: 0,
            forge: merge.forge,
            check_run: None,
        }
    }

    /// A new build of the same commit for the check run's "Re-run".
    pub fn rerun(original: BuildRecord) -> Self {
        BuildRecord {
            trigger: Trigger::Rerun,
            ..Self::retry(original)
        }
    }

    /// A new build of the same commit as `original` (`POST /builds/<id>/retry`).
    pub fn retry(original: BuildRecord) -> Self {
        BuildRecord {
            id: uuid::Uuid::new_v4().simple().to_string(),
            status: BuildStatus::Queued,
            delivery: None,
            created_at: now_rfc3339(),
            started_at: None,
            finished_at: None,
            error: None,
            services: vec![],
            retry_of: Some(original.id.clone()),
            instance: None,
            trigger: Trigger::Retry,
            attempt: 0,
            ..original
        }
    }
}
