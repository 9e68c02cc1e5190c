//! OAuth/OIDC logins (CONTRACT §5): `POST /auth/{provider}` → provider → callback → confab code
//! → `POST /auth/token`, against an in-test provider (an actix server on 127.0.0.1:0 with
//! discovery, a JWKS of an RSA key made here, `/authorize`, `/token` and a Graph-style `/me`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use aws_lc_rs::{
    encoding::AsDer,
    rsa::{KeyPair, KeySize},
    signature::KeyPair as _,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{arc::new_client, both_backends, helpers::*};

const UPSTREAM_ID: &str = "confab-at-provider";
const UPSTREAM_SECRET: &str = "provider-secret-123";
const KID: &str = "mock-key-1";

/// One tag-length-value of DER: (contents, rest).
fn der(b: &[u8]) -> (&[u8], &[u8]) {
    let (len, head) = if b[1] < 0x80 {
        (b[1] as usize, 2)
    } else {
        let n = (b[1] & 0x7f) as usize;
        (b[2..2 + n].iter().fold(0usize, |l, x| (l << 8) | *x as usize), 2 + n)
    };
    (&b[head..head + len], &b[head + len..])
}

/// An RSA key: the signer (jsonwebtoken wants PKCS#1, aws-lc gives PKCS#8) and its JWK.
fn rsa_key() -> (EncodingKey, Value) {
    let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    let (info, _) = der(pkcs8.as_ref());
    let (_, rest) = der(info); // version
    let (_, rest) = der(rest); // algorithm
    let (pkcs1, _) = der(rest);
    let (public, _) = der(pair.public_key().as_ref());
    let (n, rest) = der(public);
    let (e, _) = der(rest);
    let n = n.strip_prefix(&[0]).unwrap_or(n);
    let jwk = json!({"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
                     "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)});
    (EncodingKey::from_rsa_der(pkcs1), jwk)
}

struct Grant {
    email: String,
    nonce: Option<String>,
    challenge: String,
    redirect_uri: String,
}

/// The provider's state; tests change `claims` (merged into the next ID tokens) and `rogue`
/// (sign with a key that is not in the JWKS).
struct Provider {
    issuer: String,
    key: EncodingKey,
    rogue: EncodingKey,
    jwk: Value,
    grants: HashMap<String, Grant>,
    tokens: HashMap<String, String>,
    claims: Value,
    use_rogue: bool,
    email_in_profile: bool,
}

#[derive(Clone)]
struct Mock(Arc<Mutex<Provider>>);

impl Mock {
    async fn start() -> Self {
        let (key, jwk) = rsa_key();
        let (rogue, _) = rsa_key();
        let mock = Mock(Arc::new(Mutex::new(Provider {
            issuer: String::new(),
            key,
            rogue,
            jwk,
            grants: HashMap::new(),
            tokens: HashMap::new(),
            claims: json!({}),
            use_rogue: false,
            email_in_profile: true,
        })));
        let data = web::Data::new(mock.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/.well-known/openid-configuration", web::get().to(discovery))
                .route("/jwks", web::get().to(jwks))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
                .route("/me", web::get().to(me))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        mock.0.lock().unwrap().issuer = format!("http://127.0.0.1:{port}");
        mock
    }

    fn issuer(&self) -> String {
        self.0.lock().unwrap().issuer.clone()
    }

    fn set_claims(&self, claims: Value) {
        self.0.lock().unwrap().claims = claims;
    }
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

async fn discovery(m: web::Data<Mock>) -> HttpResponse {
    let iss = m.issuer();
    HttpResponse::Ok().json(json!({
        "issuer": iss, "authorization_endpoint": format!("{iss}/authorize"), "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"), "response_types_supported": ["code"], "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]}))
}

async fn jwks(m: web::Data<Mock>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"keys": [m.0.lock().unwrap().jwk.clone()]}))
}

/// The user "logs in" as `login_hint`; back to the redirect URI with a code and the state.
async fn authorize(m: web::Data<Mock>, req: HttpRequest) -> HttpResponse {
    let q = query(&format!("http://x{}", req.uri()));
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], UPSTREAM_ID);
    let code = confab::core::crypto::random_hex_id();
    m.0.lock().unwrap().grants.insert(
        code.clone(),
        Grant {
            email: q["login_hint"].clone(),
            nonce: q.get("nonce").cloned(),
            challenge: q["code_challenge"].clone(),
            redirect_uri: q["redirect_uri"].clone(),
        },
    );
    let mut back = url::Url::parse(&q["redirect_uri"]).unwrap();
    back.query_pairs_mut().append_pair("code", &code).append_pair("state", &q["state"]);
    HttpResponse::Found().insert_header(("Location", back.to_string())).finish()
}

/// Checks the client's credentials (Basic or body), the code, the redirect URI and the PKCE
/// verifier; answers an access token and an ID token carrying the nonce it was given.
async fn token(m: web::Data<Mock>, req: HttpRequest, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let basic = req.headers().get("authorization").and_then(|h| h.to_str().ok()).map(str::to_owned);
    let creds_ok = match basic {
        Some(b) => {
            b == format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{UPSTREAM_ID}:{UPSTREAM_SECRET}"))
            )
        }
        None => {
            form.get("client_id").map(String::as_str) == Some(UPSTREAM_ID)
                && form.get("client_secret").map(String::as_str) == Some(UPSTREAM_SECRET)
        }
    };
    if !creds_ok {
        return HttpResponse::Unauthorized().json(json!({"error": "invalid_client"}));
    }
    let mut p = m.0.lock().unwrap();
    let Some(grant) = p.grants.remove(form.get("code").map(String::as_str).unwrap_or("")) else {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_grant"}));
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge
        || form.get("redirect_uri") != Some(&grant.redirect_uri)
    {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_grant"}));
    }
    let access = confab::core::crypto::random_hex_id();
    p.tokens.insert(access.clone(), grant.email.clone());
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({"iss": p.issuer, "sub": format!("sub-{}", grant.email), "aud": UPSTREAM_ID,
                            "iat": now, "exp": now + 300, "email": grant.email, "email_verified": true});
    if let Some(n) = grant.nonce {
        claims["nonce"] = n.into();
    }
    for (k, v) in p.claims.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    let key = if p.use_rogue { &p.rogue } else { &p.key };
    let id_token = jsonwebtoken::encode(&header, &claims, key).unwrap();
    HttpResponse::Ok().json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 300,
                                   "id_token": id_token}))
}

/// Graph API `/me?fields=id,name,email` for the bearer.
async fn me(m: web::Data<Mock>, req: HttpRequest) -> HttpResponse {
    let p = m.0.lock().unwrap();
    let bearer = req.headers().get("authorization").and_then(|h| h.to_str().ok()).unwrap_or("");
    let Some(email) = bearer.strip_prefix("Bearer ").and_then(|t| p.tokens.get(t)) else {
        return HttpResponse::Unauthorized().json(json!({"error": {"message": "Invalid OAuth access token"}}));
    };
    let mut body = json!({"id": format!("fb-{email}"), "name": "Ada"});
    if p.email_in_profile {
        body["email"] = email.clone().into();
    }
    HttpResponse::Ok().json(body)
}

/// A client of the admin's company with `provider` pointing at the mock.
async fn client_with(app: &TestApp, admin: &str, mock: &Mock, provider: &str) -> (String, String) {
    let iss = mock.issuer();
    let cfg = if provider == "facebook" {
        json!({"clientId": UPSTREAM_ID, "clientSecret": UPSTREAM_SECRET, "authUrl": format!("{iss}/authorize"),
               "tokenUrl": format!("{iss}/token"), "profileUrl": format!("{iss}/me")})
    } else {
        json!({"clientId": UPSTREAM_ID, "clientSecret": UPSTREAM_SECRET, "issuerUrl": iss})
    };
    let (id, secret) = new_client(app, admin, json!({"providers": {provider: cfg}})).await;
    (id, secret.unwrap())
}

/// `POST /auth/{start}` as a form; returns the status and `Location`.
async fn start(app: &TestApp, path: &str, client: &str, secret: &str) -> (u16, String, Value) {
    let res =
        app.client.post(app.url(path)).form(&[("client_id", client), ("client_secret", secret)]).send().await.unwrap();
    let location = res.headers().get("location").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
    let (status, body) = into_json(res).await;
    (status, location, body)
}

/// The user logs in at the mock as `email`; returns the callback query the provider sends back.
async fn at_provider(app: &TestApp, location: &str, email: &str) -> String {
    let mut url = url::Url::parse(location).unwrap();
    url.query_pairs_mut().append_pair("login_hint", email);
    let res = app.client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let back = res.headers()["location"].to_str().unwrap().to_owned();
    url::Url::parse(&back).unwrap().query().unwrap().to_owned()
}

/// Calls confab's callback with the provider's query; returns status, `Location` and body.
async fn callback(app: &TestApp, path: &str, query: &str) -> (u16, String, Value) {
    let res = app.client.get(app.url(&format!("{path}?{query}"))).send().await.unwrap();
    let location = res.headers().get("location").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
    let (status, body) = into_json(res).await;
    (status, location, body)
}

/// The whole browser round trip for `email`; returns the callback's answer.
async fn round_trip(app: &TestApp, client: &str, secret: &str, email: &str) -> (u16, String, Value) {
    let (status, location, body) = start(app, "/auth/google", client, secret).await;
    assert_eq!(status, 302, "{body}");
    let back = at_provider(app, &location, email).await;
    callback(app, "/auth/google-auth-redirect", &back).await
}

async fn audit(app: &TestApp, token: &str, kind: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/auth/audit?limit=100&kind={kind}"), Some(token)).await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

both_backends!(google_login_end_to_end, |app: TestApp| async move {
    let mock = Mock::start().await;
    let admin = app.admin_token().await;
    let (client, secret) = client_with(&app, &admin, &mock, "google").await;

    // The provider's secret is sealed at rest and never shown.
    let (_, list) = app.get("/auth-clients", Some(&admin)).await;
    let shown = &list[0]["providers"]["google"];
    assert_eq!(shown["clientId"], UPSTREAM_ID, "{list}");
    assert_eq!(shown["issuerUrl"], mock.issuer());
    assert!(shown.get("clientSecret").is_none(), "{list}");
    assert!(!list.to_string().contains(UPSTREAM_SECRET));
    let cid = client.clone();
    let stored: String = app
        .state
        .db
        .run(move |c| {
            use confab::core::db::schema::auth_clients::dsl::*;
            use diesel::prelude::*;
            Ok(auth_clients.filter(client_id.eq(cid)).select(oidc).first(c)?)
        })
        .await
        .unwrap();
    assert!(!stored.contains(UPSTREAM_SECRET), "{stored}");

    let (status, location, body) = start(&app, "/auth/google", &client, &secret).await;
    assert_eq!(status, 302, "{body}");
    assert!(location.starts_with(&format!("{}/authorize?", mock.issuer())), "{location}");
    let q = query(&location);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22, "{location}");
    assert!(q["scope"].split(' ').any(|s| s == "openid") && q["scope"].contains("email"));
    assert_eq!(q["redirect_uri"], format!("{}/auth/google-auth-redirect", app.config.public_url));

    let back = at_provider(&app, &location, &app.admin_email).await;
    let (status, redirect, body) = callback(&app, "/auth/google-auth-redirect", &back).await;
    assert_eq!(status, 302, "{body}");
    assert!(redirect.starts_with("https://app.example.com/callback?code="), "{redirect}");
    let code = query(&redirect)["code"].clone();

    let (status, tokens) =
        app.post("/auth/token", None, &json!({"code": code, "clientId": client, "client_secret": secret})).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["accessToken"].as_str().unwrap();
    assert!(tokens["refreshToken"].is_string());
    let (status, me) = app.get("/auth/me", Some(access)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["email"], app.admin_email.as_str());

    // The state is single use, and the confab code too.
    let (status, _, body) = callback(&app, "/auth/google-auth-redirect", &back).await;
    assert_error(status, &body, 401, "invalid_state");
    let (status, body) =
        app.post("/auth/token", None, &json!({"code": code, "clientId": client, "client_secret": secret})).await;
    assert_error(status, &body, 401, "invalid_grant");

    let logins = audit(&app, &admin, "oauth_login").await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0]["detail"]["provider"], "google");

    // The provider rotates its key: the cached JWKS is fetched again.
    let (key, jwk) = rsa_key();
    {
        let mut p = mock.0.lock().unwrap();
        (p.key, p.jwk) = (key, jwk);
    }
    let (status, redirect, body) = round_trip(&app, &client, &secret, &app.admin_email).await;
    assert_eq!(status, 302, "{body}");
    assert!(redirect.contains("code="));

    // The deprecated GET start does the same.
    let res = app
        .client
        .get(app.url(&format!("/auth/google?client_id={client}&client_secret={secret}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert!(res.headers()["location"].to_str().unwrap().starts_with(&mock.issuer()));
});

both_backends!(public_client_binds_the_confab_code_to_its_pkce_challenge, |app: TestApp| async move {
    let mock = Mock::start().await;
    let admin = app.admin_token().await;
    let google = json!({"clientId": UPSTREAM_ID, "clientSecret": UPSTREAM_SECRET, "issuerUrl": mock.issuer()});
    let (client, _) = new_client(&app, &admin, json!({"clientType": "public", "providers": {"google": google}})).await;
    let (status, body) = app.post("/auth/google", None, &json!({"client_id": client})).await;
    assert_error(status, &body, 400, "pkce_required");

    let verifier = "a-verifier-of-the-spa-that-is-long-enough-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut codes = Vec::new();
    for _ in 0..2 {
        // JSON body this time (ARC sends a form).
        let res = app
            .client
            .post(app.url("/auth/google"))
            .json(&json!({"client_id": client, "code_challenge": challenge, "code_challenge_method": "S256"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let back = at_provider(&app, &location, &app.admin_email).await;
        let (status, redirect, body) = callback(&app, "/auth/google-auth-redirect", &back).await;
        assert_eq!(status, 302, "{body}");
        codes.push(query(&redirect)["code"].clone());
    }
    let (status, body) = app
        .post("/auth/token", None, &json!({"code": codes[0], "clientId": client, "code_verifier": "wrong-verifier"}))
        .await;
    assert_error(status, &body, 401, "invalid_grant");
    let (status, tokens) =
        app.post("/auth/token", None, &json!({"code": codes[1], "clientId": client, "code_verifier": verifier})).await;
    assert_eq!(status, 200, "{tokens}");

    // The routes are in the OpenAPI document.
    let (_, doc) = app.get("/openapi.json", None).await;
    for path in ["/auth/{provider}", "/auth/{provider}-auth-redirect", "/auth/saml"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert_eq!(doc["paths"]["/auth/{provider}"]["get"]["deprecated"], true);
});

both_backends!(mfa_user_gets_the_second_step_code, |app: TestApp| async move {
    let mock = Mock::start().await;
    let admin = app.admin_token().await;
    let (client, secret) = client_with(&app, &admin, &mock, "google").await;
    let (status, qr) = app.post("/auth/create-qr-code", Some(&admin), &json!({})).await;
    assert_eq!(status, 200, "{qr}");
    let totp = crate::arc_mfa::totp_for(qr["secret"].as_str().unwrap());
    let now = chrono::Utc::now().timestamp() as u64;
    let (status, confirmed) = app.post("/auth/totp/confirm", Some(&admin), &json!({"otp": totp.generate(now)})).await;
    assert_eq!(status, 200, "{confirmed}");

    let (status, redirect, body) = round_trip(&app, &client, &secret, &app.admin_email).await;
    assert_eq!(status, 302, "{body}");
    let q = query(&redirect);
    assert_eq!(q["mfa"], "true", "{redirect}");
    let (status, body) =
        app.post("/auth/token", None, &json!({"code": q["code"], "clientId": client, "client_secret": secret})).await;
    assert_error(status, &body, 401, "mfa_required");
    let recovery = confirmed["recoveryCodes"][0].as_str().unwrap();
    let (status, body) =
        app.post("/auth/verify-otp", None, &json!({"key": app.admin_email, "otp": recovery, "clientId": client})).await;
    assert_eq!(status, 200, "{body}");
    let (status, tokens) = app
        .post("/auth/token", None, &json!({"code": body["code"], "clientId": client, "client_secret": secret}))
        .await;
    assert_eq!(status, 200, "{tokens}");
});

both_backends!(google_login_rejections, |app: TestApp| async move {
    let mock = Mock::start().await;
    let admin = app.admin_token().await;
    let (client, secret) = client_with(&app, &admin, &mock, "google").await;
    let email = app.admin_email.clone();

    let cases = [
        (json!({"nonce": "not-the-nonce"}), "invalid_id_token"),
        (json!({"aud": "somebody-else"}), "invalid_id_token"),
        (json!({"iss": "https://evil.example"}), "invalid_id_token"),
        (
            json!({"exp": chrono::Utc::now().timestamp() - 600, "iat": chrono::Utc::now().timestamp() - 900}),
            "invalid_id_token",
        ),
        (json!({"email_verified": false}), "email_not_verified"),
    ];
    for (claims, code) in cases {
        mock.set_claims(claims.clone());
        let (status, location, body) = round_trip(&app, &client, &secret, &email).await;
        assert_error(status, &body, 401, code);
        assert!(location.is_empty(), "{claims}: {location}");
    }
    mock.set_claims(json!({}));

    // Signed by a key that is not in the provider's JWKS (same kid).
    mock.0.lock().unwrap().use_rogue = true;
    let (status, _, body) = round_trip(&app, &client, &secret, &email).await;
    assert_error(status, &body, 401, "invalid_id_token");
    mock.0.lock().unwrap().use_rogue = false;

    // A user of another company is not logged in by this company's client.
    let (_, other) = app.new_company("Elsewhere").await;
    let other_email = other["user"]["email"].as_str().map(str::to_owned).unwrap_or_default();
    assert!(other_email.ends_with("@elsewhere.test"), "{other}");
    let (status, _, body) = round_trip(&app, &client, &secret, &other_email).await;
    assert_error(status, &body, 401, "no_account");
    let (status, _, body) = round_trip(&app, &client, &secret, "nobody@example.com").await;
    assert_error(status, &body, 401, "no_account");

    // The provider account that logged in as the admin later carries an agent's e-mail: it
    // does not become the agent (the subject stays linked to the admin).
    assert_eq!(round_trip(&app, &client, &secret, &email).await.0, 302);
    let co = app.default_company().await;
    let (_, agent) = app.get("/auth/me", Some(&co.agent)).await;
    mock.set_claims(json!({"sub": format!("sub-{email}"), "email": agent["email"]}));
    let (status, _, body) = round_trip(&app, &client, &secret, &email).await;
    assert_error(status, &body, 401, "identity_mismatch");
    mock.set_claims(json!({}));
    let agent_email = agent["email"].as_str().unwrap();
    let (status, redirect, body) = round_trip(&app, &client, &secret, agent_email).await;
    assert_eq!(status, 302, "the agent's own provider account works: {body}");
    let code = query(&redirect)["code"].clone();
    let (_, tokens) =
        app.post("/auth/token", None, &json!({"code": code, "clientId": client, "client_secret": secret})).await;
    let (_, me) = app.get("/auth/me", tokens["accessToken"].as_str()).await;
    assert_eq!(me["email"], agent["email"]);

    // Unknown or tampered state, missing state, and a state used at another provider's callback.
    let (_, location, _) = start(&app, "/auth/google", &client, &secret).await;
    let back = at_provider(&app, &location, &email).await;
    let q = query(&format!("http://x/?{back}"));
    let tampered = format!("code={}&state={}x", q["code"], q["state"]);
    let (status, _, body) = callback(&app, "/auth/google-auth-redirect", &tampered).await;
    assert_error(status, &body, 401, "invalid_state");
    let (status, _, body) = callback(&app, "/auth/google-auth-redirect", &format!("code={}", q["code"])).await;
    assert_error(status, &body, 401, "invalid_state");
    let (status, _, body) = callback(&app, "/auth/keycloak-auth-redirect", &back).await;
    assert_error(status, &body, 401, "invalid_state");
    // That state was not burnt by the wrong callbacks; it still works once, also as a form
    // POST (Apple's `response_mode=form_post`).
    let res = app
        .client
        .post(app.url("/auth/google-auth-redirect"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(back.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert!(res.headers()["location"].to_str().unwrap().starts_with("https://app.example.com/callback?code="));

    // An expired state is refused.
    let (_, location, _) = start(&app, "/auth/google", &client, &secret).await;
    let back = at_provider(&app, &location, &email).await;
    app.state
        .db
        .write(|c| {
            use confab::core::db::schema::oauth_states::dsl::*;
            use diesel::prelude::*;
            let past = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(11);
            diesel::update(oauth_states.filter(used_at.is_null())).set(expires_at.eq(past)).execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    let (status, _, body) = callback(&app, "/auth/google-auth-redirect", &back).await;
    assert_error(status, &body, 401, "invalid_state");

    // The provider refused.
    let (_, location, _) = start(&app, "/auth/google", &client, &secret).await;
    let state = query(&location)["state"].clone();
    let (status, _, body) =
        callback(&app, "/auth/google-auth-redirect", &format!("error=access_denied&state={state}")).await;
    assert_error(status, &body, 401, "provider_error");

    let failures = audit(&app, &admin, "oauth_login_failed").await;
    let reasons: Vec<&str> = failures.iter().map(|f| f["detail"]["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"invalid_id_token") && reasons.contains(&"email_not_verified"), "{reasons:?}");
    assert!(reasons.contains(&"no_account") && reasons.contains(&"provider_error"), "{reasons:?}");
});

both_backends!(start_errors, |app: TestApp| async move {
    let mock = Mock::start().await;
    let admin = app.admin_token().await;
    let (client, secret) = client_with(&app, &admin, &mock, "google").await;

    let (status, _, body) = start(&app, "/auth/google", &client, "wrong-secret-wrong-secret").await;
    assert_error(status, &body, 401, "invalid_client");
    let (status, _, body) = start(&app, "/auth/azure", &client, &secret).await;
    assert_error(status, &body, 400, "provider_not_configured");
    let (status, body) = app
        .post(
            "/auth/google",
            None,
            &json!({"client_id": client, "client_secret": secret,
                                              "redirect_url": "https://evil.example/cb"}),
        )
        .await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = app.post("/auth/google", None, &json!({"client_secret": secret})).await;
    assert_error(status, &body, 400, "invalid_json");

    // Provider configuration is validated.
    let (status, body) = app
        .post("/auth-clients", Some(&admin), &json!({"clientId": "x1", "providers": {"myspace": {"clientId": "a"}}}))
        .await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["providers.myspace"].is_string(), "{body}");
    let (status, body) = app
        .post("/auth-clients", Some(&admin), &json!({"clientId": "x2", "providers": {"azure": {"clientId": "a"}}}))
        .await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["providers.azure.issuerUrl"].is_string(), "{body}");

    // An unreachable provider is a 502, not a 500.
    let (_, list) = app.get("/auth-clients", Some(&admin)).await;
    let id = list[0]["id"].as_i64().unwrap();
    let (status, body) = app
        .patch(
            &format!("/auth-clients/{id}"),
            Some(&admin),
            &json!({"providers": {"keycloak": {"clientId": "k", "issuerUrl": "http://127.0.0.1:9/realms/x"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"]["google"]["clientId"], UPSTREAM_ID, "google kept: {body}");
    let (status, _, body) = start(&app, "/auth/keycloak", &client, &secret).await;
    assert_error(status, &body, 502, "provider_unavailable");
    // Removing a provider.
    let (status, body) =
        app.patch(&format!("/auth-clients/{id}"), Some(&admin), &json!({"providers": {"keycloak": null}})).await;
    assert_eq!(status, 200);
    assert!(body["providers"].get("keycloak").is_none(), "{body}");
});

both_backends!(facebook_login, |app: TestApp| async move {
    let mock = Mock::start().await;
    let admin = app.admin_token().await;
    let (client, secret) = client_with(&app, &admin, &mock, "facebook").await;

    let (status, location, body) = start(&app, "/auth/facebook", &client, &secret).await;
    assert_eq!(status, 302, "{body}");
    let q = query(&location);
    assert!(location.starts_with(&format!("{}/authorize?", mock.issuer())));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "email");
    assert!(!q.contains_key("nonce"));
    let back = at_provider(&app, &location, &app.admin_email).await;
    let (status, redirect, body) = callback(&app, "/auth/facebook-auth-redirect", &back).await;
    assert_eq!(status, 302, "{body}");
    let code = query(&redirect)["code"].clone();
    let (status, tokens) =
        app.post("/auth/token", None, &json!({"code": code, "clientId": client, "client_secret": secret})).await;
    assert_eq!(status, 200, "{tokens}");
    let (_, me) = app.get("/auth/me", Some(tokens["accessToken"].as_str().unwrap())).await;
    assert_eq!(me["email"], app.admin_email.as_str());

    // Without an e-mail in the profile nobody is matched.
    mock.0.lock().unwrap().email_in_profile = false;
    let (_, location, _) = start(&app, "/auth/facebook", &client, &secret).await;
    let back = at_provider(&app, &location, &app.admin_email).await;
    let (status, _, body) = callback(&app, "/auth/facebook-auth-redirect", &back).await;
    assert_error(status, &body, 401, "email_not_verified");
});
