//! The forges Slipway takes merges from, and the API client of each: where a
//! build's manifest and sources are read and where its statuses go.
//!
//! Owns which forges are configured; must not import the pipeline, the
//! webhook or the store.

use crate::github::GitHub;
use crate::types::Forge;

/// GitHub always (public repositories need no token); Gitea/Forgejo and
/// GitLab when their API is given.
pub struct Forges {
    github: GitHub,
    gitea: Option<GitHub>,
    gitlab: Option<GitHub>,
}

impl Forges {
    pub fn new(github: GitHub, gitea: Option<GitHub>, gitlab: Option<GitHub>) -> Self {
        Self {
            github,
            gitea,
            gitlab,
        }
    }

    pub fn github(&self) -> &GitHub {
        &self.github
    }

    /// The client for `forge`'s API, or `None` when Slipway was not given it.
    pub fn client(&self, forge: Forge) -> Option<&GitHub> {
        match forge {
            Forge::GitHub => Some(&self.github),
            Forge::Gitea | Forge::Forgejo => self.gitea.as_ref(),
            Forge::GitLab => self.gitlab.as_ref(),
        }
    }

    /// The forges whose deliveries this instance takes.
    pub fn configured(&self) -> Vec<Forge> {
        [Forge::GitHub, Forge::Gitea, Forge::Forgejo, Forge::GitLab]
            .into_iter()
            .filter(|forge| self.client(*forge).is_some())
            .collect()
    }
}
