//! The HTML pages: `/` lists recent builds, `/builds/<id>/page` shows one
//! build's services and its live log. Server-rendered, a little plain
//! JavaScript (EventSource), no front-end build step.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use warp::reply::Response;
use warp::{Filter, Reply};

use super::builds::{find, list_filter};
use super::ApiError;
use crate::state::AppState;
use crate::store::{BuildRecord, ServiceRecord};

pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_state = warp::any().map(move || state.clone());
    let index = warp::path::end()
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .then(index);
    let build = warp::path!("builds" / String / "page")
        .and(warp::get())
        .and(with_state)
        .then(build_page);
    index.or(build).unify()
}

fn html(body: String) -> Response {
    warp::reply::html(body).into_response()
}

async fn index(query: HashMap<String, String>, state: Arc<AppState>) -> Response {
    let builds = async { Ok::<_, ApiError>(state.store.list(&list_filter(&query)?).await?) };
    let builds = match builds.await {
        Ok(builds) => builds,
        Err(err) => return err.into_response(),
    };
    let mut body = String::new();
    let tunnel = state.tunnel_url().await;
    if let Some(url) = tunnel {
        let _ = write!(
            body,
            "<p class=tunnel>Webhook URL for GitHub: <code>{}/webhook</code></p>",
            esc(&url)
        );
    }
    hook_states(&mut body, &state);
    if builds.is_empty() {
        body.push_str("<p class=empty>No builds yet. Merge a pull request to see one here.</p>");
    }
    body.push_str("<div class=builds>");
    for build in &builds {
        build_card(&mut body, build);
    }
    body.push_str("</div>");
    let refresh = builds.iter().any(|b| !b.status.is_finished());
    let script = if refresh {
        "<script>setTimeout(()=>location.reload(),3000)</script>"
    } else {
        ""
    };
    html(layout("Slipway builds", &format!("{body}{script}")))
}

/// `--manage-hooks`: where each repository's hook points, and what GitHub
/// last got from it.
fn hook_states(out: &mut String, state: &AppState) {
    let hooks = state.hooks.snapshot();
    if hooks.is_empty() {
        return;
    }
    out.push_str(
        "<table class=hooks><tr><th>repository</th><th>webhook</th><th>last response</th></tr>",
    );
    for (repo, hook) in hooks {
        let last = match (&hook.error, &hook.last_response) {
            (Some(error), _) => format!("error: {error}"),
            (None, Some(last)) => last.clone(),
            (None, None) => "none yet".to_string(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&repo),
            esc(hook.url.as_deref().unwrap_or("not installed")),
            esc(&last)
        );
    }
    out.push_str("</table>");
}

fn build_card(out: &mut String, build: &BuildRecord) {
    let _ = write!(
        out,
        "<article class=\"build {status}\"><header><a href=\"/builds/{id}/page\">{repo} #{pr}</a> \
         <span class=badge>{status}</span></header>\
         <p class=meta><code title=\"{commit}\">{short}</code> → {base} · {duration}{instance}</p>",
        status = build.status.as_str(),
        id = esc(&build.id),
        repo = esc(&build.repository),
        pr = build.pull_request,
        commit = esc(&build.commit),
        short = esc(build.commit.get(..7).unwrap_or(&build.commit)),
        base = esc(&build.base_ref),
        duration = duration(build),
        instance = on_instance(build),
    );
    if let Some(error) = &build.error {
        let _ = write!(out, "<p class=error>{}</p>", esc(error));
    }
    out.push_str("<ul class=services>");
    for service in &build.services {
        service_item(out, service);
    }
    out.push_str("</ul></article>");
}

/// Which instance runs (or ran) the build, and on which attempt after a takeover.
fn on_instance(build: &BuildRecord) -> String {
    match (&build.instance, build.attempt) {
        (None, _) => String::new(),
        (Some(instance), 0 | 1) => format!(" · on <span class=instance>{}</span>", esc(instance)),
        (Some(instance), attempt) => format!(
            " · on <span class=instance>{}</span> (attempt {attempt})",
            esc(instance)
        ),
    }
}

fn service_item(out: &mut String, service: &ServiceRecord) {
    let image = service.image.as_deref().unwrap_or(&service.name);
    let _ = write!(
        out,
        "<li class={status}><span class=badge>{status}</span> <code>{image}</code>",
        status = service.status.as_str(),
        image = esc(image),
    );
    if let Some(signature) = &service.signature {
        let _ = write!(
            out,
            " <span class=\"badge signed\" title=\"signature {}\">signed</span>",
            esc(signature)
        );
    }
    if let Some(tags) = service.tags.as_ref().filter(|t| !t.is_empty()) {
        let tags: Vec<String> = tags
            .iter()
            .map(|t| format!("<code>{}</code>", esc(t)))
            .collect();
        let _ = write!(out, "<div class=tags>also tagged {}</div>", tags.join(" "));
    }
    if !service.platforms.is_empty() {
        let platforms: Vec<String> = service
            .platforms
            .iter()
            .map(|p| {
                format!(
                    "<code title=\"{}\">{}</code>",
                    esc(&p.digest),
                    esc(&p.platform)
                )
            })
            .collect();
        let _ = write!(
            out,
            "<div class=platforms>platforms {}</div>",
            platforms.join(" ")
        );
    }
    if let Some(error) = &service.error {
        let _ = write!(out, "<div class=error>{}</div>", esc(error));
    }
    out.push_str("</li>");
}

async fn build_page(id: String, state: Arc<AppState>) -> Response {
    let build = match find(&state, &id).await {
        Ok(build) => build,
        Err(err) => return err.into_response(),
    };
    let mut body = String::new();
    body.push_str("<p><a href=\"/\">← all builds</a></p><div id=build>");
    build_card(&mut body, &build);
    body.push_str("</div><h2>Log <label><input type=checkbox id=follow checked> follow</label></h2><pre id=log></pre>");
    let running = !build.status.is_finished();
    let _ = write!(
        body,
        "<script>{}</script>",
        live_log_script(&build.id, running)
    );
    html(layout(
        &format!("{} #{} · Slipway", build.repository, build.pull_request),
        &body,
    ))
}

/// Appends log lines as they arrive; when a running build ends, reloads
/// once to show the final services.
fn live_log_script(id: &str, running: bool) -> String {
    let id = serde_json::to_string(id).unwrap_or_default();
    format!(
        r#"
const log = document.getElementById('log');
const follow = document.getElementById('follow');
const source = new EventSource('/builds/' + {id} + '/log');
source.onmessage = (e) => {{
  log.append(e.data + '\n');
  if (follow.checked) window.scrollTo(0, document.body.scrollHeight);
}};
source.addEventListener('end', () => {{
  source.close();
  if ({running}) setTimeout(() => location.reload(), 300);
}});
if ({running}) setInterval(async () => {{
  const r = await fetch('/builds/' + {id} + '/page');
  if (!r.ok) return;
  const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
  const fresh = doc.getElementById('build');
  if (fresh) document.getElementById('build').replaceWith(fresh);
}}, 2000);
"#
    )
}

fn duration(build: &BuildRecord) -> String {
    use time::format_description::well_known::Rfc3339;
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    match (parse(&build.started_at), parse(&build.finished_at)) {
        (Some(start), Some(end)) => format!("{:.1} s", (end - start).as_seconds_f64()),
        (Some(_), None) => "running".into(),
        _ => "queued".into(),
    }
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>{title}</title><style>{STYLE}</style></head>
<body><header class=top><a href="/">Slipway</a></header><main>{body}</main></body></html>"#,
        title = esc(title),
    )
}

const STYLE: &str = r#"
:root { --ok:#1a7f37; --bad:#cf222e; --run:#9a6700; --muted:#57606a; font-family: system-ui, sans-serif; }
body { margin:0; background:#f6f8fa; color:#1f2328; }
header.top { background:#24292f; padding:.6rem 1rem; }
header.top a { color:#fff; font-weight:600; text-decoration:none; }
main { max-width:60rem; margin:0 auto; padding:1rem; }
article.build { background:#fff; border:1px solid #d0d7de; border-left:.3rem solid var(--muted); border-radius:.4rem; padding:.6rem .8rem; margin:.6rem 0; }
article.succeeded { border-left-color:var(--ok); } article.failed { border-left-color:var(--bad); } article.running { border-left-color:var(--run); }
article header a { font-weight:600; color:#0969da; text-decoration:none; }
.meta { color:var(--muted); margin:.2rem 0; font-size:.9rem; }
.badge { font-size:.75rem; padding:.05rem .45rem; border-radius:1rem; background:#eaeef2; }
.succeeded > header .badge, li.succeeded .badge, li.skipped .badge { background:#dafbe1; color:var(--ok); }
.failed > header .badge, li.failed .badge { background:#ffebe9; color:var(--bad); }
.running > header .badge, li.building .badge, li.pushing .badge { background:#fff8c5; color:var(--run); }
ul.services { list-style:none; padding:0; margin:.3rem 0 0; }
ul.services li { padding:.2rem 0; overflow-wrap:anywhere; }
.error { color:var(--bad); font-size:.9rem; white-space:pre-wrap; overflow-wrap:anywhere; }
.tags { font-size:.85rem; color:var(--muted); }
pre#log { background:#0d1117; color:#e6edf3; padding:.8rem; border-radius:.4rem; overflow-x:auto; font-size:.8rem; min-height:6rem; white-space:pre-wrap; overflow-wrap:anywhere; }
h2 { font-size:1.1rem; } h2 label { font-size:.8rem; font-weight:normal; color:var(--muted); }
code { font-size:.85rem; } .tunnel { background:#ddf4ff; padding:.5rem; border-radius:.4rem; overflow-wrap:anywhere; }
@media (max-width: 40rem) { main { padding:.5rem; } article.build { padding:.5rem; } }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
