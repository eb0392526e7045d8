//! Repository webhooks, their deliveries, the pulls listing and issue
//! comments, as GitHub does them, traps included:
//! - a second hook with the same URL is refused with 422 "Hook already exists";
//! - a config update without `secret` removes the secret;
//! - a ping, a merge or a redelivery really POSTs the signed event to the
//!   hook's URL; a refused connection is a failed delivery, kept in the log;
//! - a redelivery re-sends the same GUID, marked `redelivery`.

use std::time::Duration;

use serde_json::{json, Value};
use warp::http::{Method, Response, StatusCode};

use super::{
    github_error, json_response, not_found, respond, unix_now, FakeComment, FakeDelivery,
    FakeGitHub, FakeHook, FakePull, Outbound, Shared, State, DOCS_COMMENTS, DOCS_HOOKS, DOCS_PULLS,
};

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl State {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        // GitHub's ids are large; a test must not get away with small ones.
        500_000_000 + self.next_id
    }

    fn hook_mut(&mut self, repository: &str, id: u64) -> Option<&mut FakeHook> {
        let key = repository.to_ascii_lowercase();
        self.hooks
            .iter_mut()
            .find(|h| h.id == id && h.repository == key)
    }
}

impl FakeHook {
    fn describe(&self, api_url: &str) -> Value {
        let mut config = json!({
            "url": self.url,
            "content_type": self.content_type,
            "insecure_ssl": self.insecure_ssl,
        });
        if self.secret.is_some() {
            config["secret"] = json!("********");
        }
        let base = format!("{api_url}/repos/{}/hooks/{}", self.repository, self.id);
        json!({
            "type": "Repository",
            "id": self.id,
            "name": "web",
            "active": self.active,
            "events": self.events,
            "config": config,
            "updated_at": rfc3339(unix_now()),
            "created_at": rfc3339(unix_now()),
            "url": base,
            "test_url": format!("{base}/test"),
            "ping_url": format!("{base}/pings"),
            "deliveries_url": format!("{base}/deliveries"),
            "last_response": self.last_response,
        })
    }

    /// Applies a `config` object; fields left out fall back as GitHub's do:
    /// the secret disappears, the rest keep their value.
    fn apply_config(&mut self, config: &Value) {
        if let Some(url) = config["url"].as_str() {
            self.url = url.to_string();
        }
        if let Some(kind) = config["content_type"].as_str() {
            self.content_type = kind.to_string();
        }
        if let Some(ssl) = config["insecure_ssl"].as_str() {
            self.insecure_ssl = ssl.to_string();
        }
        self.secret = config["secret"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
    }
}

fn hook_exists() -> Response<Vec<u8>> {
    let body = json!({
        "message": "Validation Failed",
        "errors": [{ "resource": "Hook", "code": "custom", "message": "Hook already exists on this repository" }],
        "documentation_url": DOCS_HOOKS,
        "status": "422",
    });
    json_response(StatusCode::UNPROCESSABLE_ENTITY, &body)
}

fn parse_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn bad_json() -> Response<Vec<u8>> {
    github_error(StatusCode::BAD_REQUEST, "Problems parsing JSON", DOCS_HOOKS)
}

pub(super) fn hooks_endpoint(
    shared: &Shared,
    state: &mut State,
    method: &Method,
    repository: &str,
    rest: &[String],
    body: &[u8],
) -> Response<Vec<u8>> {
    if state.repo(repository).is_none() {
        return not_found(DOCS_HOOKS);
    }
    let key = repository.to_ascii_lowercase();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let id = rest.first().and_then(|id| id.parse::<u64>().ok());
    match (method, rest.as_slice(), id) {
        (&Method::GET, [], _) => {
            let hooks: Vec<Value> = state
                .hooks
                .iter()
                .filter(|h| h.repository == key)
                .map(|h| h.describe(&shared.api_url))
                .collect();
            json_response(StatusCode::OK, &Value::Array(hooks))
        }
        (&Method::POST, [], _) => create_hook(shared, state, &key, body),
        (&Method::GET, [_], Some(id)) => match state.hook_mut(&key, id) {
            Some(hook) => json_response(StatusCode::OK, &hook.describe(&shared.api_url)),
            None => not_found(DOCS_HOOKS),
        },
        (&Method::PATCH, [_], Some(id)) => update_hook(shared, state, &key, id, body, false),
        (&Method::PATCH, [_, "config"], Some(id)) => {
            update_hook(shared, state, &key, id, body, true)
        }
        (&Method::POST, [_, "pings"], Some(id)) => ping(state, &key, id),
        (&Method::GET, [_, "deliveries"], Some(id)) => list_deliveries(state, &key, id),
        (&Method::POST, [_, "deliveries", delivery, "attempts"], Some(id)) => {
            redeliver(state, &key, id, delivery)
        }
        _ => not_found(DOCS_HOOKS),
    }
}

fn create_hook(shared: &Shared, state: &mut State, key: &str, body: &[u8]) -> Response<Vec<u8>> {
    let Some(body) = parse_body(body) else {
        return bad_json();
    };
    let Some(url) = body["config"]["url"].as_str().filter(|u| !u.is_empty()) else {
        let message = "Validation Failed: config.url is missing";
        return github_error(StatusCode::UNPROCESSABLE_ENTITY, message, DOCS_HOOKS);
    };
    if state
        .hooks
        .iter()
        .any(|h| h.repository == key && h.url == url)
    {
        return hook_exists();
    }
    let events = body["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_else(|| vec!["push".to_string()]);
    let mut hook = FakeHook {
        id: state.new_id(),
        repository: key.to_string(),
        active: body["active"].as_bool().unwrap_or(true),
        events,
        url: url.to_string(),
        content_type: "form".to_string(),
        secret: None,
        insecure_ssl: "0".to_string(),
        last_response: json!({ "code": null, "status": "unused", "message": null }),
    };
    hook.apply_config(&body["config"]);
    let described = hook.describe(&shared.api_url);
    queue_ping(state, &hook);
    state.hooks.push(hook);
    // GitHub pings every new hook.
    json_response(StatusCode::CREATED, &described)
}

fn update_hook(
    shared: &Shared,
    state: &mut State,
    key: &str,
    id: u64,
    body: &[u8],
    config_only: bool,
) -> Response<Vec<u8>> {
    let Some(body) = parse_body(body) else {
        return bad_json();
    };
    let config = if config_only { &body } else { &body["config"] };
    let new_url = config["url"].as_str().map(str::to_string);
    let clash = new_url.as_ref().is_some_and(|url| {
        state
            .hooks
            .iter()
            .any(|h| h.repository == key && h.id != id && &h.url == url)
    });
    if clash {
        return hook_exists();
    }
    let Some(hook) = state.hook_mut(key, id) else {
        return not_found(DOCS_HOOKS);
    };
    if config_only || body.get("config").is_some() {
        hook.apply_config(config);
    }
    if let Some(active) = body["active"].as_bool() {
        hook.active = active;
    }
    if let Some(events) = body["events"].as_array() {
        hook.events = events
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    if config_only {
        let mut config = json!({ "url": hook.url, "content_type": hook.content_type, "insecure_ssl": hook.insecure_ssl });
        if hook.secret.is_some() {
            config["secret"] = json!("********");
        }
        return json_response(StatusCode::OK, &config);
    }
    json_response(StatusCode::OK, &hook.describe(&shared.api_url))
}

fn queue_ping(state: &mut State, hook: &FakeHook) {
    let payload = json!({
        "zen": "Keep it logically awesome.",
        "hook_id": hook.id,
        "hook": { "type": "Repository", "id": hook.id, "events": hook.events, "config": { "url": hook.url } },
        "repository": { "full_name": hook.repository },
    });
    state.outbox.push(Outbound {
        hook_id: hook.id,
        guid: uuid::Uuid::new_v4().to_string(),
        event: "ping".to_string(),
        payload: payload.to_string().into_bytes(),
        redelivery: false,
    });
}

fn ping(state: &mut State, key: &str, id: u64) -> Response<Vec<u8>> {
    let Some(hook) = state.hook_mut(key, id).map(|h| h.clone()) else {
        return not_found(DOCS_HOOKS);
    };
    queue_ping(state, &hook);
    respond(StatusCode::NO_CONTENT, "text/plain", Vec::new())
}

fn list_deliveries(state: &State, key: &str, id: u64) -> Response<Vec<u8>> {
    if !state
        .hooks
        .iter()
        .any(|h| h.id == id && h.repository == key)
    {
        return not_found(DOCS_HOOKS);
    }
    let listed: Vec<Value> = state
        .deliveries
        .iter()
        .rev()
        .filter(|d| d.hook_id == id)
        .map(|d| {
            json!({
                "id": d.id, "guid": d.guid, "delivered_at": d.delivered_at,
                "redelivery": d.redelivery, "duration": 0.01, "status": d.status,
                "status_code": d.status_code, "event": d.event, "action": d.action,
                "installation_id": null, "repository_id": 1,
            })
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(listed))
}

fn redeliver(state: &mut State, key: &str, id: u64, delivery: &str) -> Response<Vec<u8>> {
    let found = state
        .deliveries
        .iter()
        .find(|d| d.hook_id == id && d.id.to_string() == delivery)
        .cloned();
    if !state
        .hooks
        .iter()
        .any(|h| h.id == id && h.repository == key)
    {
        return not_found(DOCS_HOOKS);
    }
    let Some(original) = found else {
        return not_found(DOCS_HOOKS);
    };
    state.outbox.push(Outbound {
        hook_id: id,
        guid: original.guid,
        event: original.event,
        payload: original.payload,
        redelivery: true,
    });
    json_response(StatusCode::ACCEPTED, &json!({}))
}

/// Sends one delivery as GitHub's hookshot does, and logs the attempt.
pub(super) async fn send_delivery(
    shared: std::sync::Arc<Shared>,
    outbound: Outbound,
) -> FakeDelivery {
    let hook = shared
        .lock()
        .hooks
        .iter()
        .find(|h| h.id == outbound.hook_id)
        .cloned();
    let Some(hook) = hook else {
        panic!("delivery for a hook that does not exist");
    };
    let mut request = reqwest::Client::new()
        .post(&hook.url)
        .timeout(Duration::from_secs(10))
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .header("x-github-event", &outbound.event)
        .header("x-github-delivery", &outbound.guid)
        .header("x-github-hook-id", hook.id.to_string())
        .header("x-github-hook-installation-target-type", "repository");
    let body = if hook.content_type == "json" {
        request = request.header("content-type", "application/json");
        outbound.payload.clone()
    } else {
        request = request.header("content-type", "application/x-www-form-urlencoded");
        let text = String::from_utf8_lossy(&outbound.payload).into_owned();
        serde_urlencoded::to_string([("payload", text)])
            .unwrap_or_default()
            .into_bytes()
    };
    if let Some(secret) = &hook.secret {
        let signature = slipway::webhook::signature::sign(secret.as_bytes(), &body);
        request = request.header("x-hub-signature-256", signature);
    }
    let (status_code, status) = match request.body(body).send().await {
        Ok(resp) => (
            resp.status().as_u16(),
            resp.status().canonical_reason().unwrap_or("").to_string(),
        ),
        Err(err) if err.is_timeout() => (0, "timed out".to_string()),
        Err(_) => (0, "failed to connect to host".to_string()),
    };
    let action = serde_json::from_slice::<Value>(&outbound.payload)
        .ok()
        .and_then(|v| v["action"].as_str().map(str::to_string));
    let mut state = shared.lock();
    let delivery = FakeDelivery {
        id: state.new_id(),
        hook_id: hook.id,
        guid: outbound.guid,
        event: outbound.event,
        action,
        redelivery: outbound.redelivery,
        status_code,
        status: if status_code == 0 {
            status.clone()
        } else {
            "OK".to_string()
        },
        delivered_at: rfc3339(unix_now()),
        payload: outbound.payload,
    };
    if let Some(h) = state.hooks.iter_mut().find(|h| h.id == hook.id) {
        h.last_response = json!({
            "code": (status_code != 0).then_some(status_code),
            "status": if (200..300).contains(&status_code) { "active" } else { "failed" },
            "message": if status_code == 0 { status } else { format!("Invalid HTTP Response: {status_code}") },
        });
    }
    state.deliveries.push(delivery.clone());
    delivery
}

pub(super) fn list_pulls(
    state: &State,
    repository: &str,
    req: &super::Incoming,
) -> Response<Vec<u8>> {
    if state.repo(repository).is_none() {
        return not_found(DOCS_PULLS);
    }
    let key = repository.to_ascii_lowercase();
    let wanted = req.query_param("state").unwrap_or_else(|| "open".into());
    let per_page: usize = req
        .query_param("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .min(100);
    let page: usize = req
        .query_param("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut pulls: Vec<&FakePull> = state
        .pulls
        .iter()
        .filter(|p| p.repository.to_ascii_lowercase() == key)
        .filter(|_| wanted == "closed" || wanted == "all")
        .collect();
    // sort=updated&direction=desc, the order a catch-up reads.
    pulls.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    let listed: Vec<Value> = pulls
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|p| {
            json!({
                "number": p.number, "state": "closed",
                "title": format!("PR {}", p.number),
                "merged_at": p.merged_at, "closed_at": p.updated_at, "updated_at": p.updated_at,
                "merge_commit_sha": p.merge_commit_sha,
                "head": { "ref": format!("feature-{}", p.number), "sha": "0".repeat(40) },
                "base": { "ref": p.base, "repo": { "full_name": p.repository, "html_url": format!("https://github.com/{}", p.repository) } },
            })
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(listed))
}

pub(super) fn comments_endpoint(
    state: &mut State,
    method: &Method,
    repository: &str,
    rest: &[String],
    body: &[u8],
) -> Response<Vec<u8>> {
    if state.repo(repository).is_none() {
        return not_found(DOCS_COMMENTS);
    }
    let key = repository.to_ascii_lowercase();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["body"].as_str().map(str::to_string));
    match (method, rest.as_slice()) {
        (&Method::POST, [issue, "comments"]) => {
            let (Ok(issue), Some(text)) = (issue.parse::<u64>(), text) else {
                return github_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed",
                    DOCS_COMMENTS,
                );
            };
            let id = state.new_id();
            state.comments.push(FakeComment {
                id,
                repository: key,
                issue,
                body: text.clone(),
            });
            json_response(StatusCode::CREATED, &json!({ "id": id, "body": text }))
        }
        (&Method::PATCH, ["comments", id]) => {
            let found = state
                .comments
                .iter_mut()
                .find(|c| c.repository == key && c.id.to_string() == *id);
            match (found, text) {
                (Some(comment), Some(text)) => {
                    comment.body = text.clone();
                    json_response(StatusCode::OK, &json!({ "id": comment.id, "body": text }))
                }
                (None, _) => not_found(DOCS_COMMENTS),
                (_, None) => github_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed",
                    DOCS_COMMENTS,
                ),
            }
        }
        _ => not_found(DOCS_COMMENTS),
    }
}

/// What tests do on the GitHub side.
impl FakeGitHub {
    /// The hooks of `repository`, secrets included (tests check them).
    pub fn hooks(&self, repository: &str) -> Vec<FakeHook> {
        let key = repository.to_ascii_lowercase();
        let state = self.shared.lock();
        state
            .hooks
            .iter()
            .filter(|h| h.repository == key)
            .cloned()
            .collect()
    }

    /// A hook made by hand on the settings page.
    pub fn add_hook(
        &self,
        repository: &str,
        url: &str,
        events: &[&str],
        secret: Option<&str>,
    ) -> u64 {
        let mut state = self.shared.lock();
        let id = state.new_id();
        state.hooks.push(FakeHook {
            id,
            repository: repository.to_ascii_lowercase(),
            active: true,
            events: events.iter().map(|e| e.to_string()).collect(),
            url: url.to_string(),
            content_type: "json".to_string(),
            secret: secret.map(str::to_string),
            insecure_ssl: "0".to_string(),
            last_response: json!({ "code": null, "status": "unused", "message": null }),
        });
        id
    }

    pub fn deliveries(&self) -> Vec<FakeDelivery> {
        self.shared.lock().deliveries.clone()
    }

    pub fn comments(&self, repository: &str, issue: u64) -> Vec<FakeComment> {
        let key = repository.to_ascii_lowercase();
        let state = self.shared.lock();
        state
            .comments
            .iter()
            .filter(|c| c.repository == key && c.issue == issue)
            .cloned()
            .collect()
    }

    /// A pull request merged `seconds_ago`, listed but never delivered.
    pub fn add_merged_pull(
        &self,
        repository: &str,
        number: u64,
        sha: &str,
        base: &str,
        seconds_ago: u64,
    ) {
        let at = rfc3339(unix_now().saturating_sub(seconds_ago));
        self.shared.lock().pulls.push(FakePull {
            repository: repository.to_string(),
            number,
            merge_commit_sha: sha.to_string(),
            base: base.to_string(),
            merged_at: Some(at.clone()),
            updated_at: at,
        });
    }

    /// Merges a pull request now: it is listed, and its `pull_request`
    /// `closed` event is delivered to every active hook of the repository
    /// that wants it. Returns the delivery attempts.
    pub async fn merge_pull(
        &self,
        repository: &str,
        number: u64,
        sha: &str,
        base: &str,
    ) -> Vec<FakeDelivery> {
        self.add_merged_pull(repository, number, sha, base, 0);
        let payload = crate::support::merged_pr_payload(repository, sha, number, base).to_string();
        let key = repository.to_ascii_lowercase();
        let hooks: Vec<u64> = self
            .shared
            .lock()
            .hooks
            .iter()
            .filter(|h| {
                h.repository == key
                    && h.active
                    && h.events.iter().any(|e| e == "pull_request" || e == "*")
            })
            .map(|h| h.id)
            .collect();
        let mut sent = Vec::new();
        for hook_id in hooks {
            let outbound = Outbound {
                hook_id,
                guid: uuid::Uuid::new_v4().to_string(),
                event: "pull_request".to_string(),
                payload: payload.clone().into_bytes(),
                redelivery: false,
            };
            sent.push(send_delivery(self.shared.clone(), outbound).await);
        }
        sent
    }
}

impl FakeGitHub {
    /// Points a hook elsewhere, as a user on the settings page would.
    pub fn set_hook_url(&self, id: u64, url: &str) {
        let mut state = self.shared.lock();
        if let Some(hook) = state.hooks.iter_mut().find(|h| h.id == id) {
            hook.url = url.to_string();
        }
    }
}
