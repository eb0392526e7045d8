//! The page, in a real browser: Debian's chromium driven over WebDriver.
//! Loads `/`, follows a build's link, and watches its live log grow.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use fantoccini::{ClientBuilder, Locator};

const REPO: &str = "acme/browser";

struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver, installed by scripts/test-env.sh)");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &ChromeDriver, width: u32, height: u32) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                     format!("--window-size={width},{height}")]}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return client,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("chromedriver did not start a session: {err}"),
        }
    }
}

fn artefact(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_builds_and_a_live_log_that_grows() {
    let (github, _registry, slipway) = start_stack(&[]).await;
    let sha = sha();
    let dockerfile = format!(
        "FROM slipway-test-base:1\nRUN echo {sha}\nRUN for i in $(seq 1 40); do echo \"step $i of 40\"; sleep 0.25; done\n"
    );
    github.add_commit_files(
        REPO,
        &sha,
        &[("dockerInfo.json", r#"[{"service_name":"site","version":"3.1.0"},{"service_name":"Bad","version":"1"}]"#),
          ("site/Dockerfile", &dockerfile)],
    );
    let id = slipway.merge(REPO, &sha).await;

    let driver = ChromeDriver::start();
    let client = browser(&driver, 1280, 900).await;
    client.goto(&slipway.url).await.expect("load /");
    let link = client
        .wait()
        .for_element(Locator::Css(&format!("a[href=\"/builds/{id}/page\"]")))
        .await
        .expect("the build is listed with a link");
    let index_text = client
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(index_text.contains("acme/browser #7"), "{index_text}");
    assert!(
        index_text.contains("must be a valid") || index_text.contains("not a valid image name"),
        "failed service shows its error: {index_text}"
    );
    link.click().await.expect("follow the link");

    let log = client
        .wait()
        .for_element(Locator::Id("log"))
        .await
        .expect("log");
    let mut sizes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sizes.len() < 3 && Instant::now() < deadline {
        let text = log.text().await.unwrap_or_default();
        let steps = text.matches("step ").count();
        if steps > 0 && sizes.last().is_none_or(|last| steps > *last) {
            sizes.push(steps);
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(
        sizes.len() >= 3,
        "the log grew while the build ran: {sizes:?}"
    );
    let shot = client.screenshot().await.expect("screenshot");
    std::fs::write(artefact("build-page.png"), shot).expect("save screenshot");

    slipway.wait_for(&id).await;
    // The page reloads itself when the build ends, showing final statuses.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client
            .find(Locator::Id("build"))
            .await
            .expect("build")
            .text()
            .await
            .unwrap_or_default();
        if text.contains("succeeded") && text.contains("3.1.0") {
            break;
        }
        assert!(Instant::now() < deadline, "final statuses shown: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // After the reload, the finished build's log is replayed in full.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = log_text(&client).await;
        if text.contains("step 40 of 40") && text.contains("build failed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "whole log shown after the build: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(
        artefact("build-page-finished.png"),
        client.screenshot().await.expect("shot"),
    )
    .expect("save");
    client.goto(&slipway.url).await.expect("load /");
    std::fs::write(
        artefact("index.png"),
        client.screenshot().await.expect("shot"),
    )
    .expect("save");
    client.close().await.expect("close");

    let phone = browser(&driver, 390, 844).await;
    phone
        .goto(&format!("{}/builds/{id}/page", slipway.url))
        .await
        .expect("load page");
    phone
        .wait()
        .for_element(Locator::Id("log"))
        .await
        .expect("log");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let overflow: serde_json::Value = phone
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(
        overflow,
        serde_json::json!(false),
        "no sideways scrolling on a phone"
    );
    std::fs::write(
        artefact("build-page-phone.png"),
        phone.screenshot().await.expect("shot"),
    )
    .expect("save");
    phone.close().await.expect("close");
    println!("screenshots in {}", artefact("").display());
}

async fn log_text(client: &fantoccini::Client) -> String {
    client
        .find(Locator::Id("log"))
        .await
        .expect("log")
        .text()
        .await
        .unwrap_or_default()
}
