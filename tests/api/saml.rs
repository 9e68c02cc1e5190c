//! SAML 2.0 login (issue 18 item 1, README "Authentication service"): `POST /auth/saml` → the IdP
//! → the ACS → confab code → `POST /auth/token`. The IdP is npm `samlify` (tests/saml/idp.mjs,
//! installed by `.ci/run` with `npm ci`): it parses confab's real AuthnRequest and signs real
//! Responses; the attack vectors are made from its signed output the way an attacker would.

use std::{
    collections::HashMap,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::{arc::new_client, both_backends, helpers::*};

/// Runs the test IdP with one command; panics with its stderr when it fails (a missing
/// `npm ci` fails here rather than skipping).
fn idp(cmd: Value) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/saml");
    assert!(dir.join("node_modules/samlify").is_dir(), "run `npm ci` in tests/saml (.ci/run does)");
    let mut child = Command::new("node")
        .arg("idp.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    child.stdin.take().unwrap().write_all(cmd.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "idp.mjs failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

struct Sp {
    admin: String,
    client: String,
    secret: String,
    /// The client's `saml` view: spEntityId, acsUrl, metadataUrl.
    view: Value,
}

/// An auth client of the default company with the samlify IdP's metadata uploaded.
async fn saml_client(app: &TestApp) -> Sp {
    let admin = app.admin_token().await;
    let metadata = idp(json!({"op": "metadata"}))["xml"].as_str().unwrap().to_owned();
    let (client, secret) = new_client(app, &admin, json!({"saml": {"idpMetadataXml": metadata}})).await;
    let (status, clients) = app.get("/auth-clients", Some(&admin)).await;
    assert_eq!(status, 200);
    let view = clients.as_array().unwrap().iter().find(|c| c["clientId"] == client.as_str()).unwrap()["saml"].clone();
    Sp { admin, client, secret: secret.unwrap(), view }
}

/// A staff user of the admin's company (invited, then signed up: a proven e-mail).
async fn staff(app: &TestApp, admin: &str, email: &str, phone: &str) {
    let (status, invite) = app.post("/agent/invite", Some(admin), &json!({"email": email, "role": "agent"})).await;
    assert_eq!(status, 201, "{invite}");
    let (status, signup) = app
        .post(
            "/auth/signup",
            None,
            &json!({"email": email, "password": "agent-password", "firstName": "Ada", "lastName": "L",
                    "phone": phone, "inviteToken": invite["inviteToken"]}),
        )
        .await;
    assert_eq!(status, 201, "{signup}");
}

/// `POST /auth/saml` as a form: the 302 `Location` to the IdP.
async fn start(app: &TestApp, sp: &Sp) -> String {
    let res = app
        .client
        .post(app.url("/auth/saml"))
        .form(&[("client_id", sp.client.as_str()), ("client_secret", sp.secret.as_str())])
        .send()
        .await
        .unwrap();
    let location = res.headers().get("location").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
    let (status, body) = into_json(res).await;
    assert_eq!(status, 302, "{body}");
    location
}

/// The IdP's answer to the login started at `location`, for `email`, with `options`. The SP is
/// described by its entity id and ACS (so `options` decide what samlify signs).
fn respond(sp: &Sp, location: &str, email: &str, options: Value) -> Value {
    idp(json!({"op": "respond", "location": location, "email": email, "options": options,
               "sp": {"entityId": sp.view["spEntityId"], "acs": sp.view["acsUrl"]}}))
}

/// Posts the IdP's form to the ACS at `path`: status, `Location`, body.
async fn post_acs(app: &TestApp, path: &str, answer: &Value) -> (u16, String, Value) {
    let form = [
        ("SAMLResponse", answer["SAMLResponse"].as_str().unwrap()),
        ("RelayState", answer["RelayState"].as_str().unwrap()),
    ];
    let res = app.client.post(app.url(path)).form(&form).send().await.unwrap();
    let location = res.headers().get("location").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
    let (status, body) = into_json(res).await;
    (status, location, body)
}

/// A whole login: start, the IdP's answer (possibly tampered), the ACS.
async fn login(app: &TestApp, sp: &Sp, email: &str, options: Value) -> (u16, String, Value) {
    let location = start(app, sp).await;
    let answer = respond(sp, &location, email, options);
    post_acs(app, "/auth/saml-redirect", &answer).await
}

/// The code of a successful ACS answer redeemed at `/auth/token`: who it logged in.
async fn tokens_for(app: &TestApp, sp: &Sp, redirect: &str) -> String {
    assert!(redirect.starts_with("https://app.example.com/callback?code="), "{redirect}");
    let code = query(redirect)["code"].clone();
    let (status, tokens) =
        app.post("/auth/token", None, &json!({"code": code, "clientId": sp.client, "client_secret": sp.secret})).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["refreshToken"].is_string(), "{tokens}");
    let (status, me) = app.get("/auth/me", tokens["accessToken"].as_str()).await;
    assert_eq!(status, 200, "{me}");
    me["email"].as_str().unwrap().to_owned()
}

both_backends!(saml_config_metadata_and_start, |app: TestApp| async move {
    let sp = saml_client(&app).await;
    let public = app.config.public_url.trim_end_matches('/').to_owned();
    assert_eq!(sp.view["idpEntityId"], "https://idp.example.test/metadata", "{}", sp.view);
    assert_eq!(sp.view["acsUrl"], format!("{public}/auth/saml-redirect"));
    let metadata_url = sp.view["metadataUrl"].as_str().unwrap().to_owned();
    assert_eq!(sp.view["spEntityId"], metadata_url.as_str(), "the default SP entity id is the metadata URL");

    // confab's SP metadata: entity id and ACS.
    let path = metadata_url.strip_prefix(&public).unwrap();
    let res = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().contains("samlmetadata+xml"));
    let xml = res.text().await.unwrap();
    assert!(xml.contains(&format!("entityID=\"{}\"", metadata_url.replace('&', "&amp;"))), "{xml}");
    assert!(xml.contains(&format!("{public}/auth/saml-redirect")), "{xml}");
    let (status, body) = app.get("/auth/saml/metadata?client_id=nobody", None).await;
    assert_error(status, &body, 404, "not_found");

    // The start: 302 to the IdP's SSO endpoint, HTTP-Redirect binding, a RelayState.
    let location = start(&app, &sp).await;
    assert!(location.starts_with("https://idp.example.test/sso?"), "{location}");
    let q = query(&location);
    assert!(q.contains_key("SAMLRequest"), "{location}");
    assert!(q["RelayState"].len() >= 22, "{location}");
    // samlify (a real IdP) reads it: the request ID it answers to, the ACS.
    let answer = respond(&sp, &location, &app.admin_email, json!({}));
    let xml = answer["xml"].as_str().unwrap();
    assert!(xml.contains("InResponseTo=\"") && xml.contains(&format!("{public}/auth/saml-redirect")), "{xml}");

    // Configuration errors.
    let (status, body) = app
        .post("/auth-clients", Some(&sp.admin), &json!({"clientId": "bad-saml", "saml": {"idpMetadataXml": "<nope/>"}}))
        .await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"].to_string().contains("saml.idpMetadataXml"), "{body}");
    let (status, body) = app.post("/auth-clients", Some(&sp.admin), &json!({"clientId": "bad-saml", "saml": {}})).await;
    assert_error(status, &body, 400, "validation_failed");
    // A client without SAML cannot start one.
    let (plain, plain_secret) = new_client(&app, &sp.admin, json!({})).await;
    let res = app
        .client
        .post(app.url("/auth/saml"))
        .form(&[("client_id", plain.as_str()), ("client_secret", plain_secret.unwrap().as_str())])
        .send()
        .await
        .unwrap();
    let (status, body) = into_json(res).await;
    assert_error(status, &body, 400, "provider_not_configured");
    // Wrong client secret.
    let res = app
        .client
        .post(app.url("/auth/saml"))
        .form(&[("client_id", sp.client.as_str()), ("client_secret", "wrong-secret-123456")])
        .send()
        .await
        .unwrap();
    let (status, body) = into_json(res).await;
    assert_error(status, &body, 401, "invalid_client");

    // Metadata from a URL (fetched through the outbound client; tests allow loopback).
    let xml = idp(json!({"op": "metadata"}))["xml"].as_str().unwrap().to_owned();
    let server = actix_web::HttpServer::new(move || {
        let xml = xml.clone();
        actix_web::App::new().route(
            "/idp-metadata",
            actix_web::web::get().to(move || {
                let xml = xml.clone();
                async move { actix_web::HttpResponse::Ok().content_type("application/xml").body(xml) }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    let url = format!("http://127.0.0.1:{port}/idp-metadata");
    let (status, body) = app
        .post("/auth-clients", Some(&sp.admin), &json!({"clientId": "saml-by-url", "saml": {"idpMetadataUrl": url}}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["saml"]["idpEntityId"], "https://idp.example.test/metadata", "{body}");
    assert_eq!(body["saml"]["idpMetadataUrl"], url.as_str());
    let (status, body) = app
        .post(
            "/auth-clients",
            Some(&sp.admin),
            &json!({"clientId": "saml-bad-url", "saml": {"idpMetadataUrl": format!("http://127.0.0.1:{port}/nothing")}}),
        )
        .await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"].to_string().contains("saml.idpMetadataUrl"), "{body}");

    // PATCH: a new SP entity id keeps the metadata; null removes SAML.
    let (_, clients) = app.get("/auth-clients", Some(&sp.admin)).await;
    let id = clients.as_array().unwrap().iter().find(|c| c["clientId"] == sp.client.as_str()).unwrap()["id"].clone();
    let (status, body) = app
        .patch(&format!("/auth-clients/{id}"), Some(&sp.admin), &json!({"saml": {"spEntityId": "urn:confab:test"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["saml"]["spEntityId"], "urn:confab:test");
    assert_eq!(body["saml"]["idpEntityId"], "https://idp.example.test/metadata");
    let (status, body) = app.patch(&format!("/auth-clients/{id}"), Some(&sp.admin), &json!({"saml": null})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("saml").is_none(), "{body}");
});

both_backends!(saml_login_end_to_end, |app: TestApp| async move {
    let sp = saml_client(&app).await;
    // samlify reads confab's SP metadata (as an IdP admin would import it) and signs the
    // Response the way the metadata asks.
    let public = app.config.public_url.trim_end_matches('/').to_owned();
    let path = sp.view["metadataUrl"].as_str().unwrap().strip_prefix(&public).unwrap().to_owned();
    let sp_metadata = app.client.get(app.url(&path)).send().await.unwrap().text().await.unwrap();
    let location = start(&app, &sp).await;
    let answer = idp(json!({"op": "respond", "location": location, "email": app.admin_email,
                            "options": {}, "sp": {"metadata": sp_metadata}}));
    let (status, redirect, body) = post_acs(&app, "/auth/saml-redirect", &answer).await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(tokens_for(&app, &sp, &redirect).await, app.admin_email);

    // A Response addressed to `/auth/saml-redirect` is refused at the other ACS path
    // (Destination and Recipient are the URL it arrived at).
    let location = start(&app, &sp).await;
    let answer = respond(&sp, &location, &app.admin_email, json!({}));
    let (status, _, body) = post_acs(&app, "/auth/saml-auth-redirect", &answer).await;
    assert_error(status, &body, 401, "invalid_saml_response");

    // A signed assertion inside an unsigned Response.
    let location = start(&app, &sp).await;
    let answer = respond(&sp, &location, &app.admin_email, json!({"signAssertion": true}));
    let xml = answer["xml"].as_str().unwrap();
    assert_eq!(xml.matches("<ds:SignatureValue>").count(), 1, "{xml}");
    assert!(xml.find("<ds:Signature").unwrap() > xml.find("<saml:Assertion").unwrap(), "{xml}");
    let (status, redirect, body) = post_acs(&app, "/auth/saml-redirect", &answer).await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(tokens_for(&app, &sp, &redirect).await, app.admin_email);

    // Only the Response signed (the assertion not).
    let (status, redirect, body) =
        login(&app, &sp, &app.admin_email, json!({"signAssertion": false, "signResponse": true})).await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(tokens_for(&app, &sp, &redirect).await, app.admin_email);

    // The same Response again: its request record is used up.
    let (status, _, body) = post_acs(&app, "/auth/saml-redirect", &answer).await;
    assert_error(status, &body, 401, "invalid_state");

    // The seed's `GET /auth/saml-auth-redirect`: a Response in HTTP-Redirect encoding
    // (deflated, in the query), addressed to that ACS; still signed XML.
    let location = start(&app, &sp).await;
    let acs = format!("{public}/auth/saml-auth-redirect");
    let answer = idp(json!({"op": "respond", "location": location, "email": app.admin_email,
                            "options": {"binding": "redirect"},
                            "sp": {"entityId": sp.view["spEntityId"], "acs": acs}}));
    let get = |query: String| {
        let url = app.url(&format!("/auth/saml-auth-redirect?{query}"));
        let client = app.client.clone();
        async move {
            let res = client.get(url).send().await.unwrap();
            let location = res.headers().get("location").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
            let (status, body) = into_json(res).await;
            (status, location, body)
        }
    };
    let (status, redirect, body) = get(answer["redirectQuery"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(tokens_for(&app, &sp, &redirect).await, app.admin_email);
    // Unsigned, the same way: refused.
    let location = start(&app, &sp).await;
    let answer = idp(json!({"op": "respond", "location": location, "email": app.admin_email,
                            "options": {"binding": "redirect", "unsigned": true},
                            "sp": {"entityId": sp.view["spEntityId"], "acs": acs}}));
    let (status, _, body) = get(answer["redirectQuery"].as_str().unwrap().to_owned()).await;
    assert_error(status, &body, 401, "invalid_saml_response");

    // Audit: the logins, with the provider.
    let (status, page) = app.get("/auth/audit?limit=100&kind=oauth_login", Some(&sp.admin)).await;
    assert_eq!(status, 200);
    let entries = page["data"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{page}");
    assert!(entries.iter().all(|e| e["detail"]["provider"] == "saml"), "{page}");
});

both_backends!(saml_refuses_forged_and_stale_responses, |app: TestApp| async move {
    let sp = saml_client(&app).await;
    let victim = app.admin_email.clone();
    staff(&app, &sp.admin, "mallory@evil.test", "+14155550171").await;

    let refused = |status: u16, body: &Value, code: &str, what: &str| {
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
    };

    // Signature wrapping: mallory's validly signed assertion moved under (xsw4) or placed
    // after (xsw3) an unsigned copy naming the victim.
    for wrap in ["xsw4", "xsw3"] {
        let (status, _, body) = login(&app, &sp, "mallory@evil.test", json!({"wrap": wrap, "victim": victim})).await;
        refused(status, &body, "invalid_saml_response", wrap);
    }
    // No signature at all.
    let (status, _, body) = login(&app, &sp, &victim, json!({"unsigned": true})).await;
    refused(status, &body, "invalid_saml_response", "unsigned");
    // Signed, but not by the key of the IdP's metadata (samlify embeds its own certificate).
    let (status, _, body) = login(&app, &sp, &victim, json!({"key": "other"})).await;
    refused(status, &body, "invalid_saml_response", "other key");
    // Validly signed for another SP.
    let (status, _, body) = login(&app, &sp, &victim, json!({"audience": "https://other-sp.example"})).await;
    refused(status, &body, "invalid_saml_response", "wrong audience");
    // Expired an hour ago (NotOnOrAfter far beyond the skew).
    let (status, _, body) = login(&app, &sp, &victim, json!({"shiftSeconds": -3600})).await;
    refused(status, &body, "invalid_saml_response", "expired");
    // Not yet valid.
    let (status, _, body) = login(&app, &sp, &victim, json!({"shiftSeconds": 3600})).await;
    refused(status, &body, "invalid_saml_response", "not yet valid");
    // A Response for another login (its InResponseTo) posted with this login's RelayState.
    let first = start(&app, &sp).await;
    let second = start(&app, &sp).await;
    let mut answer = respond(&sp, &first, &victim, json!({}));
    answer["RelayState"] = query(&second)["RelayState"].clone().into();
    let (status, _, body) = post_acs(&app, "/auth/saml-redirect", &answer).await;
    refused(status, &body, "invalid_saml_response", "InResponseTo of another request");
    // No or an unknown RelayState.
    answer["RelayState"] = "made-up-relay-state".into();
    let (status, _, body) = post_acs(&app, "/auth/saml-redirect", &answer).await;
    refused(status, &body, "invalid_state", "unknown RelayState");

    // Replay: the same assertion (its ID) in a Response to a new request is refused once used.
    let (status, redirect, body) = login(&app, &sp, &victim, json!({"assertionId": "_fixed-assertion-1"})).await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(tokens_for(&app, &sp, &redirect).await, victim);
    let (status, _, body) = login(&app, &sp, &victim, json!({"assertionId": "_fixed-assertion-1"})).await;
    refused(status, &body, "assertion_replayed", "replayed assertion id");

    // Each failure is audited with its reason.
    let (_, page) = app.get("/auth/audit?limit=100&kind=oauth_login_failed", Some(&sp.admin)).await;
    let reasons: Vec<&str> =
        page["data"].as_array().unwrap().iter().filter_map(|e| e["detail"]["reason"].as_str()).collect();
    assert!(reasons.contains(&"invalid_saml_response") && reasons.contains(&"assertion_replayed"), "{reasons:?}");
});

both_backends!(saml_comment_in_name_id_is_not_another_user, |app: TestApp| async move {
    let sp = saml_client(&app).await;
    // The IdP signs `user@evil.com.victim.com`, the attacker's own account there; a comment
    // inserted after `user@evil.com` keeps the signature valid (exclusive C14N drops comments)
    // and must not log in as `user@evil.com`.
    staff(&app, &sp.admin, "user@evil.com", "+14155550172").await;
    let (status, _, body) =
        login(&app, &sp, "user@evil.com.victim.com", json!({"commentAfter": "user@evil.com"})).await;
    assert_error(status, &body, 401, "no_account");
    // With that account present, the login is that account's, never the shorter one's.
    staff(&app, &sp.admin, "user@evil.com.victim.com", "+14155550173").await;
    let (status, redirect, body) =
        login(&app, &sp, "user@evil.com.victim.com", json!({"commentAfter": "user@evil.com"})).await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(tokens_for(&app, &sp, &redirect).await, "user@evil.com.victim.com");
});
