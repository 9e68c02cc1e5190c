//! Operations and cross-cutting conventions: CONTRACT §1 and §2.

use std::collections::BTreeSet;

use diesel::{Connection, QueryableByName, RunQueryDsl, sql_types::Text};
use serde_json::json;

use crate::{both_backends, helpers::*};

both_backends!(root_health_ready_metrics_openapi, |app: TestApp| async move {
    let (status, root) = app.get("/", None).await;
    assert_eq!(status, 200);
    assert_eq!(root, json!({"name": "confab", "version": env!("CARGO_PKG_VERSION"), "openapi": "/openapi.json"}));
    let res = app.client.get(app.url("/")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(res.headers()["location"], "/console/");
    assert_eq!(app.get("/healthz", None).await.0, 200);
    assert_eq!(app.get("/readyz", None).await, (200, json!({"status": "ready"})));

    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    for path in
        ["/auth/signup", "/auth/login", "/auth/token-refresh", "/logout", "/auth/me", "/healthz", "/readyz", "/metrics"]
    {
        assert!(doc["paths"][path].is_object(), "{path} missing from /openapi.json");
    }

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"confab_http_requests_total{method="GET",route="/healthz",status="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("confab_http_request_duration_seconds_bucket"));
});

both_backends!(bad_input_gets_the_unified_error_body, |app: TestApp| async move {
    let raw = |body: Vec<u8>| {
        app.client.post(app.url("/auth/login")).header("Content-Type", "application/json").body(body).send()
    };
    let (status, body) = into_json(raw(b"{not json".to_vec()).await.unwrap()).await;
    assert_error(status, &body, 400, "invalid_json");
    let (status, body) = into_json(raw(br#"{"email": 5, "password": []}"#.to_vec()).await.unwrap()).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = into_json(raw(vec![b' '; 2 * 1024 * 1024]).await.unwrap()).await;
    assert_error(status, &body, 413, "payload_too_large");
    let (status, body) = app.get("/no/such/route", None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = into_json(
        app.client.post(app.url("/auth/login")).header("Content-Type", "text/plain").body("hi").send().await.unwrap(),
    )
    .await;
    assert_error(status, &body, 415, "unsupported_media_type");
    let (status, body) = app.delete("/healthz", None).await;
    assert_error(status, &body, 404, "not_found");
});

#[actix_web::test]
async fn first_start_bootstraps_once() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let b = app.bootstrap.clone().expect("first start bootstraps");
    assert_eq!(b.admin_email, "admin@localhost");
    assert!(b.generated_password.is_none(), "CONFAB_ADMIN_PASSWORD was set");
    app.login("admin@localhost", ADMIN_PASSWORD).await;
    let (config, dir) = (app.config.clone(), app.dir.clone());
    app.stop().await;
    drop(app);
    let again = TestApp::start(Backend::Sqlite, config, dir, None).await;
    assert!(again.bootstrap.is_none(), "second start prints nothing");
    again.login("admin@localhost", ADMIN_PASSWORD).await;
}

#[actix_web::test]
async fn generated_admin_password_is_returned_once_and_works() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.admin_password = None).await.unwrap();
    let password = app.bootstrap.clone().unwrap().generated_password.unwrap();
    assert!(password.len() >= 16);
    app.login("admin@localhost", &password).await;
}

#[actix_web::test]
async fn readyz_is_503_when_the_database_is_gone() {
    let Some(scope) = PgScope::database() else {
        eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set");
        return;
    };
    let scope = std::sync::Arc::new(scope);
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = confab::core::config::Config::for_tests(dir.path().to_path_buf(), scope.url.clone());
    config.admin_password = Some(ADMIN_PASSWORD.to_owned().into());
    let app = TestApp::start(Backend::Postgres, config, dir, Some(scope.clone())).await;
    assert_eq!(app.get("/readyz", None).await.0, 200);
    scope.drop_now();
    // A fresh connection: under load the drop can outlast the server's 5 s keep-alive, and a
    // pooled connection closed at that moment fails with IncompleteMessage.
    let res = reqwest::Client::new().get(app.url("/readyz")).send().await.unwrap();
    let (status, body) = into_json(res).await;
    assert_error(status, &body, 503, "not_ready");
    assert!(body["message"].as_str().unwrap().contains("database"));
}

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

/// Both migration folders must produce the same logical schema (issue "Foundation").
#[actix_web::test]
async fn sqlite_and_postgres_schemas_match() {
    let Some(scope) = PgScope::schema() else {
        eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("s.db").display());
    for url in [&sqlite_url, &scope.url] {
        confab::core::db::Pool::connect(url, 1).unwrap().migrate().unwrap();
    }
    let mut sqlite = diesel::SqliteConnection::establish(dir.path().join("s.db").to_str().unwrap()).unwrap();
    let sqlite_cols: Vec<Column> = diesel::sql_query(
        "SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE 'messages_fts%' \
         AND m.name <> '__diesel_schema_migrations'",
    )
    .load(&mut sqlite)
    .unwrap();
    let mut pg = diesel::PgConnection::establish(&scope.url).unwrap();
    let pg_cols: Vec<Column> = diesel::sql_query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '__diesel_schema_migrations' \
         AND column_name <> 'content_tsv'",
    )
    .load(&mut pg)
    .unwrap();
    let set = |cols: Vec<Column>| cols.into_iter().map(|c| (c.table_name, c.column_name)).collect::<BTreeSet<_>>();
    let (s, p) = (set(sqlite_cols), set(pg_cols));
    assert!(s.len() > 100, "read the schema: {}", s.len());
    assert_eq!(s.difference(&p).collect::<Vec<_>>(), Vec::<&(String, String)>::new(), "only in SQLite");
    assert_eq!(p.difference(&s).collect::<Vec<_>>(), Vec::<&(String, String)>::new(), "only in PostgreSQL");
}
