//! The GitHub App side of the stand-in: JWTs checked as GitHub checks them
//! (RS256 with the App's public key, `iss` the App id, `exp` at most ten
//! minutes after `iat`, not expired), each repository's installation,
//! installation tokens with an expiry, and check runs, which only an App
//! may write ("You must authenticate via a GitHub App").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};
use warp::http::{Method, Response, StatusCode};

use super::{github_error, not_found, unix_now, State, DOCS_ROOT};

const DOCS_APPS: &str = "https://docs.github.com/rest/apps/apps";
const DOCS_CHECKS: &str = "https://docs.github.com/rest/checks/runs";

/// A GitHub App the stand-in knows.
pub struct FakeApp {
    pub app_id: u64,
    /// The App key's public half, PKCS#1 `RSAPublicKey` DER.
    pub public_key: Vec<u8>,
    pub installation_id: u64,
    /// How long an installation token lives.
    pub token_ttl: Duration,
    pub tokens: Vec<IssuedToken>,
    pub jwts_accepted: u64,
}

#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: u64,
    pub revoked: bool,
}

/// A check run as GitHub keeps it, with every write it received.
#[derive(Clone, Debug)]
pub struct FakeCheckRun {
    pub id: u64,
    pub repository: String,
    pub head_sha: String,
    pub name: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub external_id: Option<String>,
    pub details_url: Option<String>,
    pub output: Value,
    pub writes: Vec<Value>,
}

impl State {
    /// Whether `token` is an installation token that still works.
    pub(super) fn live_installation_token(&self, token: &str) -> bool {
        self.app.as_ref().is_some_and(|app| {
            app.tokens
                .iter()
                .any(|t| t.token == token && !t.revoked && t.expires_at > unix_now())
        })
    }
}

/// The App's endpoints; `None` for any other request.
pub(super) fn route(
    state: &mut State,
    method: &Method,
    segments: &[&str],
    authorization: Option<&str>,
    body: &[u8],
) -> Option<Response<Vec<u8>>> {
    state.app.as_ref()?;
    let bearer =
        authorization.and_then(|h| h.strip_prefix("Bearer ").or(h.strip_prefix("bearer ")));
    Some(match (method, segments) {
        (&Method::GET, ["repos", owner, name, "installation"]) => {
            if let Err(refused) = check_jwt(state, bearer) {
                return Some(*refused);
            }
            if state.repo(&format!("{owner}/{name}")).is_none() {
                return Some(not_found(DOCS_APPS));
            }
            let app = state.app.as_ref()?;
            json_answer(
                StatusCode::OK,
                json!({"id": app.installation_id, "app_id": app.app_id}),
            )
        }
        (&Method::POST, ["app", "installations", id, "access_tokens"]) => {
            if let Err(refused) = check_jwt(state, bearer) {
                return Some(*refused);
            }
            let app = state.app.as_mut()?;
            if id.parse::<u64>().ok() != Some(app.installation_id) {
                return Some(not_found(DOCS_APPS));
            }
            let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
            let expires_at = unix_now() + app.token_ttl.as_secs();
            app.tokens.push(IssuedToken {
                token: token.clone(),
                expires_at,
                revoked: false,
            });
            json_answer(
                StatusCode::CREATED,
                json!({"token": token, "expires_at": rfc3339(expires_at), "permissions": {"checks": "write", "contents": "read", "statuses": "write"}}),
            )
        }
        (&Method::GET, ["app", "installations"]) => {
            if let Err(refused) = check_jwt(state, bearer) {
                return Some(*refused);
            }
            let app = state.app.as_ref()?;
            json_answer(
                StatusCode::OK,
                json!([{"id": app.installation_id, "app_id": app.app_id, "account": {"login": "acme"}}]),
            )
        }
        (&Method::GET, ["installation", "repositories"]) => {
            if !bearer.is_some_and(|t| state.live_installation_token(t)) {
                return Some(github_error(
                    StatusCode::UNAUTHORIZED,
                    "Bad credentials",
                    DOCS_ROOT,
                ));
            }
            let mut names: Vec<&str> = state.repos.values().map(|r| r.name.as_str()).collect();
            names.sort();
            let repositories: Vec<Value> = names.iter().map(|n| json!({"full_name": n})).collect();
            json_answer(
                StatusCode::OK,
                json!({"total_count": repositories.len(), "repositories": repositories}),
            )
        }
        (_, ["repos", owner, name, "check-runs", rest @ ..]) => {
            let token_ok = bearer.is_some_and(|t| state.live_installation_token(t));
            if !token_ok {
                return Some(github_error(
                    StatusCode::FORBIDDEN,
                    "You must authenticate via a GitHub App.",
                    DOCS_CHECKS,
                ));
            }
            let repository = format!("{owner}/{name}");
            let Ok(body) = serde_json::from_slice::<Value>(body) else {
                return Some(github_error(
                    StatusCode::BAD_REQUEST,
                    "Problems parsing JSON",
                    DOCS_CHECKS,
                ));
            };
            match (method, rest) {
                (&Method::POST, []) => create_check_run(state, repository, body),
                (&Method::PATCH, [id]) => update_check_run(state, &repository, id, body),
                _ => not_found(DOCS_CHECKS),
            }
        }
        _ => return None,
    })
}

/// A refusal, boxed: a response is large beside `Ok(())`.
type Refusal = Box<Response<Vec<u8>>>;

fn check_jwt(state: &mut State, bearer: Option<&str>) -> Result<(), Refusal> {
    let refused = |why: &str| -> Refusal {
        Box::new(github_error(
            StatusCode::UNAUTHORIZED,
            &format!("A JSON web token could not be decoded ({why})"),
            DOCS_ROOT,
        ))
    };
    let Some(app) = state.app.as_mut() else {
        return Err(refused("no App"));
    };
    let jwt = bearer.ok_or_else(|| refused("no bearer"))?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(refused("not three parts"));
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signature = b64.decode(signature).map_err(|_| refused("signature"))?;
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &app.public_key,
    );
    key.verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| refused("signature does not verify"))?;
    let header: Value = b64
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| refused("header"))?;
    if header["alg"] != "RS256" {
        return Err(refused("alg"));
    }
    let claims: Value = b64
        .decode(claims)
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or_else(|| refused("claims"))?;
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(refused("iat/exp"));
    };
    let now = unix_now() as i64;
    let iss = claims["iss"]
        .as_str()
        .map(str::to_string)
        .or_else(|| claims["iss"].as_u64().map(|n| n.to_string()));
    if iss != Some(app.app_id.to_string()) {
        return Err(refused("iss"));
    }
    if exp - iat > 600 || exp <= now || iat > now + 60 {
        return Err(Box::new(github_error(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') is too far in the future",
            DOCS_ROOT,
        )));
    }
    app.jwts_accepted += 1;
    Ok(())
}

fn create_check_run(state: &mut State, repository: String, body: Value) -> Response<Vec<u8>> {
    let (Some(name), Some(head_sha)) = (body["name"].as_str(), body["head_sha"].as_str()) else {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request: name and head_sha are required",
            DOCS_CHECKS,
        );
    };
    state.next_id += 1;
    let mut run = FakeCheckRun {
        id: state.next_id,
        repository,
        head_sha: head_sha.to_string(),
        name: name.to_string(),
        status: "queued".into(),
        conclusion: None,
        external_id: None,
        details_url: None,
        output: Value::Null,
        writes: vec![],
    };
    if let Err(problem) = apply(&mut run, &body) {
        return *problem;
    }
    let answer = describe(&run);
    state.check_runs.push(run);
    json_answer(StatusCode::CREATED, answer)
}

fn update_check_run(
    state: &mut State,
    repository: &str,
    id: &str,
    body: Value,
) -> Response<Vec<u8>> {
    let Some(run) = state
        .check_runs
        .iter_mut()
        .find(|r| r.id.to_string() == id && r.repository.eq_ignore_ascii_case(repository))
    else {
        return not_found(DOCS_CHECKS);
    };
    if let Err(problem) = apply(run, &body) {
        return *problem;
    }
    json_answer(StatusCode::OK, describe(run))
}

/// GitHub's rules: `completed` needs a conclusion, a conclusion means completed.
fn apply(run: &mut FakeCheckRun, body: &Value) -> Result<(), Refusal> {
    let status = body["status"].as_str().unwrap_or(&run.status).to_string();
    if !["queued", "in_progress", "completed"].contains(&status.as_str()) {
        return Err(Box::new(github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request: status",
            DOCS_CHECKS,
        )));
    }
    let conclusion = body["conclusion"].as_str().map(str::to_string);
    if (status == "completed") != conclusion.is_some() {
        return Err(Box::new(github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request: conclusion is required when status is completed",
            DOCS_CHECKS,
        )));
    }
    run.status = status;
    run.conclusion = conclusion;
    if let Some(id) = body["external_id"].as_str() {
        run.external_id = Some(id.to_string());
    }
    if let Some(url) = body["details_url"].as_str() {
        run.details_url = Some(url.to_string());
    }
    if !body["output"].is_null() {
        run.output = body["output"].clone();
    }
    run.writes.push(body.clone());
    Ok(())
}

fn describe(run: &FakeCheckRun) -> Value {
    json!({
        "id": run.id,
        "name": run.name,
        "head_sha": run.head_sha,
        "status": run.status,
        "conclusion": run.conclusion,
        "external_id": run.external_id,
        "details_url": run.details_url,
        "output": run.output,
    })
}

fn json_answer(status: StatusCode, body: Value) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string().into_bytes())
        .expect("response")
}

fn rfc3339(unix: u64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(unix);
    let since = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(since)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
