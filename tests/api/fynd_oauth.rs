//! The Fynd SDK's platform OAuth (CONTRACT §9): `…/oauth/token` with client credentials in a
//! Basic header, the refresh grant the SDK renews with, the authorization-code grant and
//! `…/oauth/offline-token`; tenancy and grant checks.

use base64::Engine;
use serde_json::{Value, json};

use crate::{
    arc::new_client,
    both_backends,
    fynd_platform::{company_of, create_app, platform},
    helpers::*,
};

fn token_path(company: i64, rest: &str) -> String {
    format!("/service/panel/authentication/v1.0/company/{company}/oauth/{rest}")
}

/// A form POST as the SDK's `getAccesstokenObj` sends it.
async fn form_token(app: &TestApp, company: i64, id: &str, secret: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let res = app
        .client
        .post(app.url(&token_path(company, "token")))
        .header("Authorization", format!("Basic {basic}"))
        .form(form)
        .send()
        .await
        .unwrap();
    into_json(res).await
}

both_backends!(client_credentials_token_calls_the_platform_api, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, _) = create_app(&app, &admin, "sdkstore").await;
    let (id, secret) = new_client(&app, &admin, json!({"grants": ["client_credentials"]})).await;
    let secret = secret.unwrap();

    let (status, tok) = form_token(&app, company, &id, &secret, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    let expires_in = tok["expires_in"].as_i64().unwrap();
    assert!((1..=900).contains(&expires_in), "{tok}");
    assert!(tok["expires_at"].as_i64().unwrap() > 1_700_000_000_000);
    let access = tok["access_token"].as_str().unwrap().to_owned();
    let refresh = tok["refresh_token"].as_str().unwrap().to_owned();

    // The token works on the platform API of its company, as the service account.
    let (status, list) = app.get(&platform(company, app_id, "/customers/list"), Some(&access)).await;
    assert_eq!(status, 200, "{list}");
    let (status, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["role"], "service");
    // The service account is not an agent.
    let (_, agents) = app.get("/agent", Some(&admin)).await;
    assert!(!agents.to_string().contains(&id), "{agents}");

    // The SDK renews with the refresh grant; the old refresh token is then spent.
    let (status, renewed) =
        form_token(&app, company, &id, &secret, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(status, 200, "{renewed}");
    assert_ne!(renewed["refresh_token"], tok["refresh_token"]);
    let (status, body) =
        form_token(&app, company, &id, &secret, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_error(status, &body, 401, "token_reused");

    // Deleting the client ends every session it opened.
    let (_, clients) = app.get("/auth-clients", Some(&admin)).await;
    let row = clients.as_array().unwrap().iter().find(|c| c["clientId"] == id.as_str()).unwrap().clone();
    let (status, _) = app.delete(&format!("/auth-clients/{}", row["id"]), Some(&admin)).await;
    assert_eq!(status, 204);
    let renewed_access = renewed["access_token"].as_str().unwrap();
    let (status, body) = app.get(&platform(company, app_id, "/customers/list"), Some(renewed_access)).await;
    assert_error(status, &body, 401, "session_revoked");
});

both_backends!(oauth_token_rejects_wrong_clients_and_grants, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (id, secret) = new_client(&app, &admin, json!({"grants": ["client_credentials"]})).await;
    let secret = secret.unwrap();
    let cc = [("grant_type", "client_credentials")];

    let (status, body) = form_token(&app, company, &id, "wrong-secret-000000", &cc).await;
    assert_error(status, &body, 401, "invalid_client");
    let (status, body) = form_token(&app, company, "nobody", &secret, &cc).await;
    assert_error(status, &body, 401, "invalid_client");
    // Another company's path: the client is not theirs.
    let (other_admin, _) = app.new_company("Other Oauth").await;
    let other = company_of(&app, &other_admin).await;
    let (status, body) = form_token(&app, other, &id, &secret, &cc).await;
    assert_error(status, &body, 401, "invalid_client");
    let (status, body) = form_token(&app, company, &id, &secret, &[("grant_type", "password")]).await;
    assert_error(status, &body, 400, "unsupported_grant_type");
    // A client without the grant may not use it (client credentials are opt-in).
    let (plain, plain_secret) = new_client(&app, &admin, json!({})).await;
    let (status, body) = form_token(&app, company, &plain, &plain_secret.unwrap(), &cc).await;
    assert_error(status, &body, 401, "unauthorized_client");
    // No credentials at all, and a body of the wrong type.
    let res = app.client.post(app.url(&token_path(company, "token"))).form(&cc).send().await.unwrap();
    let (status, body) = into_json(res).await;
    assert_error(status, &body, 401, "invalid_client");
    let res = app
        .client
        .post(app.url(&token_path(company, "token")))
        .header("Content-Type", "text/plain")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(into_json(res).await.0, 415);
    // A refresh token of another client's session is refused.
    let (status, tok) = form_token(&app, company, &id, &secret, &cc).await;
    assert_eq!(status, 200);
    let (second, second_secret) = new_client(&app, &admin, json!({"grants": ["client_credentials"]})).await;
    let refresh = tok["refresh_token"].as_str().unwrap();
    let (status, body) = form_token(
        &app,
        company,
        &second,
        &second_secret.unwrap(),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_error(status, &body, 401, "invalid_grant");
});

both_backends!(offline_token_redeems_a_login_code_once, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (id, secret) = new_client(&app, &admin, json!({})).await;
    let secret = secret.unwrap();
    let (status, code) = app
        .post(
            "/auth/login",
            None,
            &json!({"client_id": id, "client_secret": secret, "username": app.admin_email, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{code}");
    let body = json!({"client_id": id, "client_secret": secret, "grant_type": "authorization_code",
                      "scope": ["company/profile"], "code": code["code"]});
    let (status, tok) = app.post(&token_path(company, "offline-token"), None, &body).await;
    assert_eq!(status, 200, "{tok}");
    let (status, me) = app.get("/auth/me", tok["access_token"].as_str()).await;
    assert_eq!(status, 200);
    assert_eq!(me["role"], "admin");
    let (status, body) = app.post(&token_path(company, "offline-token"), None, &body).await;
    assert_error(status, &body, 401, "invalid_grant");
});
