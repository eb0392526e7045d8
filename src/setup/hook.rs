//! `slipway hook install OWNER/REPO`: the repository's webhook without a
//! visit to GitHub's settings page.

use std::time::Duration;

use crate::config::HookInstallArgs;
use crate::github::hooks::{webhook_url, HookError, Installed};
use crate::github::{ForgeError, GitHub};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Hook(#[from] HookError),
    #[error("{0}")]
    GitHub(#[from] ForgeError),
    #[error("no public URL for Slipway: give --url, or --public-url, or start the tunnel ({0})")]
    NoUrl(crate::setup::tunnel::TunnelError),
}

/// What was done, as printed.
pub struct Report {
    pub id: u64,
    pub url: String,
    pub installed: Installed,
    /// The ping's answer as GitHub recorded it, or `None` if none came in time.
    pub ping: Option<(bool, String)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "hook {} {}: {} (events: pull_request)",
            self.id,
            self.installed.as_str(),
            self.url
        )?;
        match &self.ping {
            Some((true, answer)) => write!(f, "ping reached Slipway: {answer}"),
            Some((false, answer)) => write!(
                f,
                "ping did not reach Slipway: {answer} (is Slipway running at that URL?)"
            ),
            None => write!(
                f,
                "ping sent; GitHub recorded no delivery yet (see the hook's Recent Deliveries)"
            ),
        }
    }
}

pub async fn install(args: &HookInstallArgs) -> Result<Report, InstallError> {
    let token = args.github_token.clone().filter(|t| !t.expose().is_empty());
    let repo = &args.repository;
    if token.is_none() {
        return Err(HookError::NoToken(repo.clone()).into());
    }
    let base = match args
        .url
        .clone()
        .or_else(|| args.public_url.clone())
        .filter(|u| !u.trim().is_empty())
    {
        Some(url) => url,
        None => crate::setup::tunnel::public_url(&args.ngrok_api)
            .await
            .map_err(InstallError::NoUrl)?,
    };
    let url = webhook_url(&base)?;
    let github = GitHub::new(&args.github_api, token, Duration::from_secs(30))?;
    let (hook, installed) = github
        .install_hook(repo, &url, &args.webhook_secret)
        .await?;
    let ping = github
        .ping_and_wait(repo, hook.id, args.ping_wait)
        .await?
        .map(|d| (d.succeeded(), format!("{} {}", d.status_code, d.status)));
    Ok(Report {
        id: hook.id,
        url,
        installed,
        ping,
    })
}
