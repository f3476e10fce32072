//! The web pages in a real browser: `tests/browser/run.mjs` drives Debian's
//! headless Chromium against a demo server started here, and checks every
//! page with axe-core (RGAA 4, WCAG 2 AA), reflow at 320 px, the 3-request
//! / 30 KB budget, and keyboard-only walks through the consent and mandate
//! journeys.
//!
//! Without Node.js, the packages (`npm ci --prefix tests/browser`) or
//! Chromium this says SKIPPED loudly; `.ci/run` installs them all.
//!
//! `COFFRE_SCREENSHOTS=DIR` also saves a PNG of each main page there
//! (`scripts/screenshots` uses it to refresh `docs/screenshots/`).

use std::path::Path;
use std::process::Command;

use coffre::demo::DEMO_TOTP_SECRET;
use coffre::domain::mandate::totp;

use crate::support::{self, Setup, T0};

fn chromium() -> Option<String> {
    let path = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    Path::new(&path).exists().then_some(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_accessible_light_and_usable_with_the_keyboard() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        support::notice(
            "SKIPPED: browser tests (tests/browser/node_modules is missing: run `npm ci --prefix tests/browser`; .ci/run does)",
        );
        return;
    }
    let Some(chromium) = chromium() else {
        support::notice(
            "SKIPPED: browser tests (Chromium is not installed: Debian packages chromium and chromium-driver; .ci/run installs them)",
        );
        return;
    };
    let db_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db_dir.path().join("coffre.db").display());
    let app = support::build_app_with(
        &url,
        "sqlite",
        &Setup {
            demo: true,
            live: true,
            ..Setup::default()
        },
    )
    .await;
    let base = app.serve();
    // A release for `/statistiques` to show (October is over at T0).
    coffre::service::stats::publish(
        &app.state,
        coffre::domain::stats::Period::parse("2026-10"),
        T0,
    )
    .await
    .unwrap_or_else(|e| panic!("{:?}", e.code_and_status()));
    // The test clock stands still, so this code stays the current one.
    let code = totp::code(DEMO_TOTP_SECRET, totp::step_at(T0));
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("run.mjs"))
        .current_dir(&dir)
        .env("COFFRE_URL", &base)
        .env("COFFRE_TOTP", code)
        .env("CHROMIUM_PATH", chromium);
    if let Ok(shots) = std::env::var("COFFRE_SCREENSHOTS") {
        cmd.env("COFFRE_SCREENSHOTS", shots);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            support::notice(&format!(
                "SKIPPED: browser tests (could not run Node.js: {e}; .ci/run installs it)"
            ));
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
}
