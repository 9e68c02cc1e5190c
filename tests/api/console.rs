//! The agent console's static files (issue 10). The page itself is driven in a real browser
//! by `tests/browser/console.test.mjs`; this checks how confab serves it.

use crate::helpers::{Backend, TestApp, assert_error, into_json};

#[actix_web::test]
async fn console_files_are_served_with_types_etags_and_a_strict_csp() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();

    let res = app.client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 308);
    assert_eq!(res.headers()["location"], "/console/");

    let res = app.client.get(app.url("/console/")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"), "{csp}");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="js/app.js">"#), "{html}");

    let res = app.client.get(app.url("/console/")).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 304);
    assert!(res.bytes().await.unwrap().is_empty());

    for (path, kind) in [("/console/js/app.js", "javascript"), ("/console/console.css", "text/css")] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.contains(kind), "{path}: {ct}");
        assert_ne!(res.headers()["etag"], etag.as_str(), "each file has its own ETag");
    }

    let res = app.client.head(app.url("/console/js/api.js")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);

    for missing in ["/console/nope.js", "/console/../Cargo.toml", "/console/js/%2e%2e/%2e%2e/Cargo.toml"] {
        let (status, body) = into_json(app.client.get(app.url(missing)).send().await.unwrap()).await;
        assert_error(status, &body, 404, "not_found");
    }
}
