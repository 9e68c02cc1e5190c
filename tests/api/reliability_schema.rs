//! Issue 24 item 3 (README "Reliability"): Schemathesis (PyPI, pinned and installed by
//! `.ci/run`) generates valid and invalid requests for every operation of the running server's
//! `/openapi.json`, with an admin's bearer token, against a company that has one of every
//! resource. Checks (`tests/schemathesis/hooks.py`): no 5xx, and every 4xx/5xx
//! carries the unified error body. Short form: a bounded number of examples per operation;
//! `CONFAB_SOAK=1` runs many more, on both backends.
//!
//! Without schemathesis (`python3 -m schemathesis.cli`) the test says so and passes, unless
//! `CONFAB_REQUIRE_SCHEMATHESIS=1` (set by `.ci/run`), where a missing tool fails it.

use std::process::Command;

use crate::{both_backends, helpers::*, reliability_isolation::Tenant};

/// Operations left out, with the reason: they end the session the whole run authenticates
/// with, so every later request would be a 401 and test nothing.
const EXCLUDED: &[(&str, &str)] = &[
    ("/logout", "revokes the run's own session"),
    ("/keycloak/logout", "revokes the run's own session"),
    ("/auth/change-password", "revokes the run's other sessions and may change the password"),
    ("/service/application/user/authentication/v1.0/logout", "ends the storefront session of the run"),
];

fn soak() -> bool {
    std::env::var("CONFAB_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `python3 -m schemathesis.cli`: the module of the pinned package, wherever pip put its script.
fn schemathesis() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "schemathesis.cli"]);
    cmd
}

fn schemathesis_available() -> bool {
    schemathesis().arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The run's configuration: the admin's bearer token everywhere but on the storefront, which
/// gets the application's; and the ids of the tenant's real resources as path and query
/// parameters, per route prefix (the isolation matrix's table), so that generated requests
/// reach past the 404 of a made-up id.
fn config_toml(t: &Tenant) -> String {
    let mut by_prefix: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (key, value) in &t.ids {
        let (prefix, param) = key.split_once('/').unwrap();
        let (location, name) = match param.strip_prefix('?') {
            Some(q) => ("query", q),
            None => ("path", param),
        };
        let value = if value.parse::<i64>().is_ok() { value.clone() } else { format!("{value:?}") };
        by_prefix.entry(prefix).or_default().push(format!("{:?} = {value}", format!("{location}.{name}")));
    }
    let mut out = format!("headers = {{ Authorization = \"Bearer {}\" }}\n", t.co.admin);
    out += &format!(
        "\n[[operations]]\ninclude-path-regex = \"^/service/application/\"\nheaders = {{ Authorization = \"Bearer {}\" }}\n",
        t.app_bearer
    );
    for (prefix, params) in by_prefix {
        let regex = if prefix == "service" { "^/service/(platform|panel)/".to_owned() } else { format!("^/{prefix}/") };
        out += &format!("\n[[operations]]\ninclude-path-regex = {regex:?}\nparameters = {{ {} }}\n", params.join(", "));
    }
    out
}

async fn run_schemathesis(app: TestApp) {
    if !schemathesis_available() {
        assert!(
            std::env::var("CONFAB_REQUIRE_SCHEMATHESIS").is_err(),
            "CONFAB_REQUIRE_SCHEMATHESIS is set but schemathesis is missing \
             (`python3 -m pip install schemathesis==4.32.5`)"
        );
        eprintln!("skipped: schemathesis is not installed (README \"Reliability\")");
        return;
    }
    let tenant = Tenant::populate(&app, "+14155550183").await;
    let config = app.data_dir().join("schemathesis.toml");
    std::fs::write(&config, config_toml(&tenant)).unwrap();
    let examples = std::env::var("CONFAB_SCHEMATHESIS_EXAMPLES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(if soak() { 200 } else { 6 });
    let phases = if soak() { "examples,coverage,fuzzing,stateful" } else { "examples,coverage,fuzzing" };
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis");
    let report = app.data_dir().join("schemathesis.ndjson");
    let mut cmd = schemathesis();
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", "no_server_error,unified_error_body"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--phases", phases])
        .args(["--seed", "24"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "30"])
        .args(["--suppress-health-check", "all"])
        .args(["--generation-database", "none"])
        .args(["--no-color", "--continue-on-failure"])
        .args(["--report", "ndjson", "--report-ndjson-path"])
        .arg(&report);
    for (path, _) in EXCLUDED {
        cmd.args(["--exclude-path", path]);
    }
    // Its cache (`.schemathesis/`) goes to the test's own directory, not the checkout.
    cmd.current_dir(app.data_dir());
    cmd.env("SCHEMATHESIS_HOOKS", "hooks").env("PYTHONPATH", hooks).env("NO_COLOR", "1");
    let started = std::time::Instant::now();
    let out = actix_web::web::block(move || cmd.output()).await.unwrap().expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The summary: the last lines of the run.
    let summary: Vec<&str> = stdout.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect();
    println!(
        "schemathesis ({:?}, {examples} examples per operation, phases {phases}, {:.0?}):\n{}",
        app.backend,
        started.elapsed(),
        summary.join("\n")
    );
    assert!(out.status.success(), "schemathesis found failures:\n{stdout}\n{stderr}");
}

mod schemathesis_finds_no_5xx_and_only_unified_errors {
    use super::*;

    #[actix_web::test]
    async fn sqlite() {
        run_schemathesis(TestApp::spawn(Backend::Sqlite).await.unwrap()).await;
    }

    /// The long form only (`CONFAB_SOAK=1`): CI's time goes to the SQLite run.
    #[actix_web::test]
    async fn postgres() {
        if !soak() {
            eprintln!("skipped: the PostgreSQL run is the long form (CONFAB_SOAK=1)");
            return;
        }
        match TestApp::spawn(Backend::Postgres).await {
            Some(app) => run_schemathesis(app).await,
            None => eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set"),
        }
    }
}

// Found by Schemathesis: a method a resource does not route (TRACE on `/media/save`, PUT on
// `/auth/google`) got actix's bare 405 with no body; now the unified body.
both_backends!(unrouted_methods_answer_the_unified_body, |app: TestApp| async move {
    let admin = app.admin_token().await;
    for (method, path) in [
        ("TRACE", "/media/save"),
        ("PUT", "/auth/google"),
        ("TRACE", "/media/1"),
        ("DELETE", "/auth/google-auth-redirect"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let res = app.client.request(method.clone(), app.url(path)).bearer_auth(&admin).send().await.unwrap();
        let (status, body) = into_json(res).await;
        assert_error(status, &body, 405, "method_not_allowed");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{method} {path}: {body}");
    }
});
