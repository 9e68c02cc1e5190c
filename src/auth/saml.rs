//! SAML 2.0 service-provider login (issue 18, seed 003 `postLoginViaSaml`, `samlCallback`,
//! auth.md §1.9). Each auth client may name one identity provider (its metadata, uploaded or
//! fetched from a URL, and the SP entity id confab uses towards it). `POST /auth/saml` sends the
//! browser to the IdP with an AuthnRequest (HTTP-Redirect binding); the IdP posts the Response
//! to the ACS, `POST /auth/saml-redirect`; it ends like every other upstream login
//! ([`oauth::finish`]): 302 to the client's redirect URL with a confab code.
//!
//! The XML work is `saml-rs` (pure Rust; XML-DSig, exclusive C14N, digests and RSA through
//! `bergshamra` on AWS-LC, README "Dependencies and why"). confab configures it strictly and
//! adds the parts that need storage:
//! - the Response or its Assertion must carry a valid signature by a certificate of the IdP's
//!   metadata, RSA-SHA256 or stronger with exclusive canonicalization and one `#id` reference
//!   ([`XmlSignatureProfile::StrictRsaSha2`]); the data used is the signed data (signature
//!   wrapping is refused by the library's reference-placement checks);
//! - issuer, audience (the SP entity id, required), `Destination` and the bearer
//!   `Recipient` (the ACS URL the Response arrived at), `InResponseTo` (the AuthnRequest ID of
//!   the server-side request record), status, and `NotBefore`/`NotOnOrAfter` with
//!   [`CLOCK_SKEW_MS`] of skew;
//! - the request record is the `oauth_states` row of the RelayState (hashed, 10 minutes,
//!   claimed once), so a Response is accepted at most once per login started here;
//! - each assertion ID is accepted once per IdP (`saml_assertions`, kept until the assertion
//!   expires): a replayed assertion is refused even inside a new Response.

use std::time::SystemTime;

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use futures_util::StreamExt;
use openidconnect::CsrfToken;
use saml_rs::{
    AcsEndpoint, AudienceValidationPolicy, BrowserInput, ClockSkew, EntityId, FormField, IdpDescriptor,
    MetadataTrustPolicy, NameIdFormat, PendingAuthnRequest, PendingSnapshot, RelayStateParam, ReplayPolicy, Saml,
    SamlError, SamlValidationContext, Sp, SpConfig, SpValidationPolicy, SsoResponse, StartSso, XmlSignatureProfile,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    arc,
    clients::{self, ClientRow},
    oauth::{self, Identity, Pending, StartBody},
    service::Origin,
};
use crate::core::{
    crypto::token_hash,
    db::{Db, schema::saml_assertions},
    error::{ApiError, ApiResult, ErrorBody, is_unique_violation},
    net,
    state::AppState,
    types::now,
};

/// The provider name of SAML state records, audit entries and linked identities.
const PROVIDER: &str = "saml";
/// The assertion consumer service named in AuthnRequests and the SP metadata (seed 003).
const ACS_PATH: &str = "/auth/saml-redirect";
/// Seed 003's other callback path; also an ACS.
const ACS_ALT_PATH: &str = "/auth/saml-auth-redirect";
/// The SP metadata of a client: `?client_id=`.
const METADATA_PATH: &str = "/auth/saml/metadata";
/// Allowed clock difference with the IdP on `NotBefore` and `NotOnOrAfter`.
pub const CLOCK_SKEW_MS: i64 = 60_000;
/// Largest IdP metadata document accepted (upload or fetch).
const MAX_METADATA_BYTES: usize = 1 << 20;
/// Largest inflated HTTP-Redirect `SAMLResponse`.
const MAX_INFLATED_BYTES: u64 = 1 << 20;
/// How long a consumed assertion ID is remembered when the assertion names no expiry.
const DEFAULT_ASSERTION_TTL_SECS: i64 = 3600;
/// Attributes read for the e-mail when the NameID is not one.
const EMAIL_ATTRIBUTES: [&str; 4] = [
    "email",
    "mail",
    "urn:oid:0.9.2342.19200300.100.1.3",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
];

/// An auth client's identity provider, as stored in `auth_clients.saml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    sp_entity_id: String,
    idp_entity_id: String,
    idp_metadata_xml: String,
    idp_metadata_url: Option<String>,
}

/// `saml` on `POST`/`PATCH /auth-clients`: the IdP's metadata, as XML or as a URL confab
/// fetches now (re-send the URL to fetch it again), and the SP entity id (the audience the IdP
/// must name; default `<public URL>/auth/saml/metadata?client_id=<clientId>`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SamlBody {
    pub idp_metadata_xml: Option<String>,
    /// An http(s) URL on the public internet (README "Security": at most 3 redirects, 1 MiB).
    pub idp_metadata_url: Option<String>,
    pub sp_entity_id: Option<String>,
}

/// What `/auth-clients` shows of a client's identity provider.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SamlView {
    pub sp_entity_id: String,
    pub idp_entity_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_metadata_url: Option<String>,
    /// Register this at the IdP as the assertion consumer service (HTTP-POST).
    pub acs_url: String,
    /// confab's SP metadata for this client.
    pub metadata_url: String,
}

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`) or a value.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

fn public_url(st: &AppState, path: &str) -> String {
    format!("{}{path}", st.config.public_url.trim_end_matches('/'))
}

fn metadata_url(st: &AppState, client_id: &str) -> String {
    let mut url = public_url(st, METADATA_PATH);
    url.push_str("?client_id=");
    url.extend(url::form_urlencoded::byte_serialize(client_id.as_bytes()));
    url
}

fn stored(row: &ClientRow) -> Option<Stored> {
    row.saml.as_deref().and_then(|s| serde_json::from_str(s).ok())
}

pub fn public_view(st: &AppState, row: &ClientRow) -> Option<SamlView> {
    stored(row).map(|s| SamlView {
        sp_entity_id: s.sp_entity_id,
        idp_entity_id: s.idp_entity_id,
        idp_metadata_url: s.idp_metadata_url,
        acs_url: public_url(st, ACS_PATH),
        metadata_url: metadata_url(st, &row.client_id),
    })
}

/// The validation confab asks of every Response: a signature over the Response or the
/// Assertion (RSA-SHA2, exclusive C14N), and an audience restriction naming the SP.
fn policy() -> SpValidationPolicy {
    SpValidationPolicy {
        xml_signatures: XmlSignatureProfile::StrictRsaSha2,
        audience: AudienceValidationPolicy::Validate,
        ..SpValidationPolicy::recommended()
    }
}

/// confab as the SP of one client. The metadata and AuthnRequests name one ACS,
/// `/auth/saml-redirect` (IdPs such as samlify pick the last of several); a Response sent to
/// the seed's other path is checked against that path instead ([`acs`]).
fn service_provider(st: &AppState, sp_entity_id: &str) -> Result<Saml<Sp>, SamlError> {
    let config = SpConfig::builder(EntityId::try_new(sp_entity_id)?)
        .acs_endpoint(AcsEndpoint::post(public_url(st, ACS_PATH))?.with_index(0).mark_default())
        .name_id_format(NameIdFormat::EmailAddress)
        .validation(policy())
        .build()?;
    Saml::sp(config)
}

/// The IdP of the metadata. Metadata comes from the company's admin (upload, or a URL they
/// chose), so it is trusted as given: its certificates are the ones signatures must verify with.
fn identity_provider(xml: &str) -> Result<IdpDescriptor, SamlError> {
    IdpDescriptor::from_metadata_xml(xml, MetadataTrustPolicy::UnsignedForCompatibility)
}

/// Applies `saml` from a create or update body: the metadata is read (fetched when a URL is
/// given), parsed, and must name an HTTP-Redirect SSO endpoint confab can start
/// a login at; `current` keeps its metadata when the body brings none.
pub async fn merge(
    st: &AppState,
    client_id: &str,
    current: Option<&str>,
    change: Option<SamlBody>,
) -> ApiResult<Option<String>> {
    let Some(body) = change else { return Ok(current.map(str::to_owned)) };
    let current: Option<Stored> = current.and_then(|s| serde_json::from_str(s).ok());
    let (xml, url) = match (body.idp_metadata_xml, body.idp_metadata_url) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field("saml.idpMetadataUrl", "send idpMetadataXml or idpMetadataUrl, not both"));
        }
        (Some(xml), None) => (xml, None),
        (None, Some(url)) => (fetch_metadata(st, &url).await?, Some(url)),
        (None, None) => match &current {
            Some(c) => (c.idp_metadata_xml.clone(), c.idp_metadata_url.clone()),
            None => return Err(ApiError::field("saml.idpMetadataXml", "idpMetadataXml or idpMetadataUrl is required")),
        },
    };
    if xml.len() > MAX_METADATA_BYTES {
        return Err(ApiError::field("saml.idpMetadataXml", "must be at most 1 MiB"));
    }
    let sp_entity_id = match body.sp_entity_id.map(|s| s.trim().to_owned()) {
        Some(s) if s.is_empty() || s.len() > 1024 => {
            return Err(ApiError::field("saml.spEntityId", "must be 1–1024 characters"));
        }
        Some(s) => s,
        None => current.map(|c| c.sp_entity_id).unwrap_or_else(|| metadata_url(st, client_id)),
    };
    let field = if url.is_some() { "saml.idpMetadataUrl" } else { "saml.idpMetadataXml" };
    let sp = service_provider(st, &sp_entity_id).map_err(|e| ApiError::field("saml.spEntityId", e.to_string()))?;
    let idp = identity_provider(&xml).map_err(|e| ApiError::field(field, format!("not usable IdP metadata: {e}")))?;
    // A login must be able to start: an SSO endpoint with the HTTP-Redirect binding.
    sp.start_sso(&idp, StartSso::redirect())
        .map_err(|e| ApiError::field(field, format!("no usable HTTP-Redirect SSO endpoint: {e}")))?;
    let stored = Stored {
        sp_entity_id,
        idp_entity_id: idp.entity_id().as_str().to_owned(),
        idp_metadata_xml: xml,
        idp_metadata_url: url,
    };
    serde_json::to_string(&stored).map(Some).map_err(|e| ApiError::Internal(e.into()))
}

/// `GET url` through the server's outbound client (public addresses only, at most 3
/// redirects, each hop http(s)), at most [`MAX_METADATA_BYTES`]. Every failure is a 400 on
/// `saml.idpMetadataUrl`.
async fn fetch_metadata(st: &AppState, url: &str) -> ApiResult<String> {
    let field = "saml.idpMetadataUrl";
    let parsed = url::Url::parse(url).map_err(|_| ApiError::field(field, "must be an absolute http(s) URL"))?;
    let allowed =
        |u: &url::Url| matches!(u.scheme(), "http" | "https") && u.username().is_empty() && u.password().is_none();
    if !allowed(&parsed) {
        return Err(ApiError::field(field, "must be an absolute http(s) URL without user-info"));
    }
    // The admin's URL did not answer metadata: their input to fix, so a 400 naming the field.
    let failed = |why: String| {
        tracing::info!(url, error = %why, "IdP metadata fetch failed");
        ApiError::field(field, format!("the metadata could not be fetched: {why}"))
    };
    let res = net::get_following(&st.http, url, 3, allowed, |r| r).await.map_err(|e| match e {
        net::FollowError::Transport(ref t) if net::is_refused(t) => {
            ApiError::field(field, "must lead to a public internet address")
        }
        net::FollowError::Refused(_) => ApiError::field(field, "redirects to a URL that is not http(s)"),
        other => failed(other.to_string()),
    })?;
    if !res.status().is_success() {
        return Err(failed(format!("HTTP {}", res.status())));
    }
    let mut body = Vec::new();
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(|e| failed(e.to_string()))?);
        if body.len() > MAX_METADATA_BYTES {
            return Err(ApiError::field(field, "the metadata is larger than 1 MiB"));
        }
    }
    String::from_utf8(body).map_err(|_| ApiError::field(field, "the metadata is not UTF-8"))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/saml").route(web::post().to(start)));
    for path in [ACS_PATH, ACS_ALT_PATH] {
        cfg.service(web::resource(path).route(web::post().to(acs)).route(web::get().to(acs)));
    }
    cfg.service(web::resource(METADATA_PATH).route(web::get().to(metadata)));
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(start, acs, metadata), components(schemas(SamlBody, SamlView, AcsForm)))]
pub struct Api;

/// Starts a SAML login (seed 003 `postLoginViaSaml`): ARC's `{client_id, client_secret}` (form
/// or JSON), plus `code_challenge` (S256, required for public clients) and `redirect_url` as
/// for the other providers. Answers 302 to the client's IdP with an AuthnRequest
/// (HTTP-Redirect binding) and a RelayState bound to a server-side request record.
#[utoipa::path(post, path = "/auth/saml", tag = "auth",
    request_body(content = StartBody, content_type = "application/x-www-form-urlencoded"),
    responses((status = 302, description = "to the IdP's SSO endpoint with `SAMLRequest` and `RelayState`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn start(st: web::Data<AppState>, req: HttpRequest, bytes: web::Bytes) -> ApiResult<HttpResponse> {
    let b: StartBody = oauth::read_params(&req, &bytes)?;
    let client = clients::authenticate(&st, &b.client_id, b.client_secret.as_deref()).await?;
    if !client.allows(clients::GRANT_CODE) {
        return Err(ApiError::Unauthorized("unauthorized_client"));
    }
    let challenge = arc::pkce_challenge(&client, b.code_challenge, b.code_challenge_method.as_deref())?;
    let target = oauth::redirect_target(&client, b.redirect_url.as_deref())?;
    let cfg = configured(&client)?;
    let relay_state = CsrfToken::new_random().secret().clone();
    let (location, request_id) = {
        let internal = |e: SamlError| ApiError::Internal(anyhow::Error::new(e).context("SAML AuthnRequest"));
        let sp = service_provider(&st, &cfg.sp_entity_id).map_err(internal)?;
        let idp = identity_provider(&cfg.idp_metadata_xml).map_err(internal)?;
        let relay = RelayStateParam::try_from_option(Some(relay_state.clone())).map_err(internal)?;
        let started = sp.start_sso(&idp, StartSso::redirect().relay_state(relay)).map_err(internal)?;
        (
            started.outbound.redirect_url().map_err(internal)?.to_owned(),
            started.pending.request_id().as_str().to_owned(),
        )
    };
    let pending = Pending {
        provider: PROVIDER,
        sealed_verifier: String::new(),
        nonce: Some(request_id),
        redirect: target,
        challenge,
    };
    oauth::record_state(&st, &relay_state, &client, pending).await?;
    Ok(oauth::redirect_to(&location))
}

fn configured(client: &ClientRow) -> ApiResult<Stored> {
    stored(client)
        .ok_or_else(|| ApiError::bad_request("provider_not_configured", "SAML is not configured for this client"))
}

/// The IdP's answer at the assertion consumer service.
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AcsForm {
    /// base64 of the `<Response>` (HTTP-POST); in a `GET`, deflated then base64 (HTTP-Redirect).
    #[serde(rename = "SAMLResponse")]
    pub saml_response: Option<String>,
    /// The RelayState `POST /auth/saml` sent.
    #[serde(rename = "RelayState")]
    pub relay_state: Option<String>,
}

/// The assertion consumer service (seed 003 `samlCallback`): `POST /auth/saml-redirect` (the
/// ACS the AuthnRequest names) or `POST /auth/saml-auth-redirect` with the HTTP-POST form
/// `SAMLResponse` + `RelayState`; `GET` on either path takes a Response in the query
/// (HTTP-Redirect encoding; it must still carry an XML signature, a detached query signature
/// alone is not accepted). Success: 302 to the auth client's redirect URL with `?code=` (and
/// `&mfa=true`), exchanged at `POST /auth/token`. Failures are 401: `invalid_state` (no,
/// unknown, used or expired RelayState), `invalid_saml_response` (signature, issuer, audience,
/// destination, recipient, `InResponseTo`, time window, status or format),
/// `assertion_replayed`, `no_account`, `identity_mismatch`.
#[utoipa::path(post, path = "/auth/saml-redirect", tag = "auth",
    request_body(content = AcsForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 302, description = "to the auth client's redirect URL with `?code=`"),
        (status = 401, body = ErrorBody)))]
async fn acs(st: web::Data<AppState>, origin: Origin, req: HttpRequest, bytes: web::Bytes) -> ApiResult<HttpResponse> {
    let form: AcsForm = oauth::read_params(&req, &bytes)?;
    let acs_url = public_url(&st, req.path());
    let (claimed, client) = oauth::claim(&st, PROVIDER, form.relay_state.clone()).await?;
    let is_get = req.method() == actix_web::http::Method::GET;
    let who = verify(&st, &client, claimed.nonce.clone(), acs_url, form, is_get).await;
    oauth::finish(&st, PROVIDER, &client, &claimed, &origin, who).await
}

/// Verifies the Response against the request record and the client's IdP, consumes the
/// assertion ID, and says who logged in.
async fn verify(
    st: &AppState,
    client: &ClientRow,
    request_id: Option<String>,
    acs_url: String,
    form: AcsForm,
    redirect_encoded: bool,
) -> ApiResult<Identity> {
    let refuse = |e: &dyn std::fmt::Display| {
        tracing::info!(client = client.client_id, error = %e, "SAML response refused");
        ApiError::Unauthorized("invalid_saml_response")
    };
    let cfg = configured(client)?;
    let response = form.saml_response.filter(|r| !r.is_empty()).ok_or_else(|| refuse(&"no SAMLResponse"))?;
    let response = if redirect_encoded { inflate(&response).map_err(|e| refuse(&e))? } else { response };
    let relay_state = form.relay_state.unwrap_or_default();
    let request_id = request_id.ok_or_else(|| refuse(&"request record without an AuthnRequest ID"))?;
    let sp = service_provider(st, &cfg.sp_entity_id).map_err(|e| refuse(&e))?;
    let idp = identity_provider(&cfg.idp_metadata_xml).map_err(|e| refuse(&e))?;
    let relay = RelayStateParam::try_from_option(Some(relay_state.clone())).map_err(|e| refuse(&e))?;
    let snapshot =
        PendingSnapshot::authn_request(request_id, relay, cfg.idp_entity_id.clone(), "post", acs_url, "post");
    let pending = PendingAuthnRequest::from_snapshot(snapshot).map_err(|e| refuse(&e))?;
    let input = BrowserInput::<SsoResponse>::post(vec![
        FormField::new("SAMLResponse", response),
        FormField::new("RelayState", relay_state),
    ]);
    // Signature checks are CPU work: off the async workers.
    let session = web::block(move || {
        let validation = SamlValidationContext::new(SystemTime::now(), ReplayPolicy::DisabledForCompatibility)
            .with_clock_skew(ClockSkew::from_millis(-CLOCK_SKEW_MS, CLOCK_SKEW_MS));
        sp.finish_sso(&idp, &pending, input, validation)
    })
    .await?
    .map_err(|e| refuse(&e))?;

    let issuer = session.issuer().as_str().to_owned();
    let assertion_key = token_hash(&format!("{issuer}\n{}", session.assertion_id().as_str()));
    let expires = session
        .not_on_or_after()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.as_str()).ok())
        .map(|t| t.naive_utc())
        .unwrap_or_else(|| now() + chrono::Duration::seconds(DEFAULT_ASSERTION_TTL_SECS))
        .max(now())
        + chrono::Duration::milliseconds(CLOCK_SKEW_MS);
    let fresh = st.db.write(move |c| consume_assertion(c, &assertion_key, expires)).await?;
    if !fresh {
        tracing::info!(client = client.client_id, "SAML assertion replayed");
        return Err(ApiError::Unauthorized("assertion_replayed"));
    }

    let name_id = session.name_id().value().to_owned();
    let email = if crate::core::types::Email::try_from(name_id.clone()).is_ok() {
        Some(name_id.clone())
    } else {
        EMAIL_ATTRIBUTES.iter().find_map(|name| {
            session.attributes().get(name).and_then(|a| a.values().first()).map(|v| v.as_str().to_owned())
        })
    };
    // The IdP asserts the address (it is the company's own directory).
    Ok(Identity { subject: format!("{issuer}\n{name_id}"), email, email_verified: true })
}

/// Deletes the expired consumed assertions and records `assertion_key` (the SHA-256 of the
/// issuer and the assertion ID) until `expires`; `false` when it was already consumed (a replay).
fn consume_assertion(c: &mut Db, assertion_key: &str, expires: NaiveDateTime) -> ApiResult<bool> {
    let t = now();
    diesel::delete(saml_assertions::table.filter(saml_assertions::expires_at.lt(t))).execute(c)?;
    let inserted = diesel::insert_into(saml_assertions::table)
        .values((
            saml_assertions::assertion_key.eq(assertion_key),
            saml_assertions::expires_at.eq(expires),
            saml_assertions::created_at.eq(t),
        ))
        .execute(c);
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An HTTP-Redirect `SAMLResponse`: base64 of raw DEFLATE; answers base64 of the XML (the
/// HTTP-POST form), bounded.
fn inflate(value: &str) -> Result<String, String> {
    use std::io::Read;
    let deflated = STANDARD.decode(value.trim()).map_err(|e| e.to_string())?;
    let mut xml = Vec::new();
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut xml)
        .map_err(|e| e.to_string())?;
    if xml.len() as u64 > MAX_INFLATED_BYTES {
        return Err("SAMLResponse too large".into());
    }
    Ok(STANDARD.encode(xml))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetadataQuery {
    pub client_id: String,
}

/// confab's SP metadata for a client with SAML (entity id, the ACS endpoints, NameID format
/// e-mail), for registering confab at the IdP. 404 for a client without SAML.
#[utoipa::path(get, path = "/auth/saml/metadata", tag = "auth", params(MetadataQuery),
    responses((status = 200, description = "SAML metadata (XML)", content_type = "application/samlmetadata+xml"),
        (status = 404, body = ErrorBody)))]
async fn metadata(st: web::Data<AppState>, q: web::Query<MetadataQuery>) -> ApiResult<HttpResponse> {
    let id = q.into_inner().client_id;
    let client = st.db.run(move |c| clients::by_client_id(c, &id)).await?.ok_or(ApiError::NotFound)?;
    let cfg = stored(&client).ok_or(ApiError::NotFound)?;
    let sp = service_provider(&st, &cfg.sp_entity_id)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("SAML SP metadata")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/samlmetadata+xml"))
        .body(sp.metadata_xml().to_owned()))
}
