//! CONTRACT §3 application routes (messaging family, camelCase): a company admin lists, creates
//! and rotates the tokens of the company's Fynd applications. A token is shown only in the
//! answer that created it; at rest it is its SHA-256.

use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::service::Origin,
    core::{
        auth::guard::Admin,
        crypto::{random_token, token_hash},
        error::{ApiError, ApiResult, ErrorBody},
        extract::Json,
        state::AppState,
    },
    users::{application, store},
};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationView {
    pub application_id: i64,
    pub name: String,
    pub domain: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationTokenView {
    pub application_id: i64,
    /// Shown once: storefronts send `Bearer base64(applicationId:token)`.
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationBody {
    pub name: String,
    pub domain: String,
}

/// The company's Fynd applications.
#[utoipa::path(tag = "applications", responses((status = 200, body = [ApplicationView]), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody)), security(("bearer" = [])))]
#[get("/application")]
async fn list_applications(st: web::Data<AppState>, admin: Admin) -> ApiResult<HttpResponse> {
    let company_id = admin.company_id;
    let apps = st.db.run(move |c| application::list(c, company_id)).await?;
    Ok(HttpResponse::Ok().json(
        apps.into_iter()
            .map(|a| ApplicationView { application_id: a.id, name: a.name, domain: a.domain })
            .collect::<Vec<_>>(),
    ))
}

/// Creates an application; the answer carries its token, which is never shown again.
#[utoipa::path(tag = "applications", request_body = ApplicationBody, responses((status = 201, body = ApplicationTokenView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/application")]
async fn create_application(
    st: web::Data<AppState>,
    admin: Admin,
    origin: Origin,
    Json(b): Json<ApplicationBody>,
) -> ApiResult<HttpResponse> {
    let name = b.name.trim().to_owned();
    let domain = b.domain.trim().to_ascii_lowercase();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::field("name", "must be 1 to 200 characters"));
    }
    if domain.is_empty() || domain.len() > 253 || domain.contains(char::is_whitespace) {
        return Err(ApiError::field("domain", "must be a host name"));
    }
    let token = random_token();
    let hash = token_hash(&token);
    let (company_id, user_id) = (admin.company_id, admin.user_id);
    let app = st
        .db
        .write(move |c| {
            let app = application::insert(c, company_id, &name, &domain, &hash)?;
            store::audit(
                c,
                Some(company_id),
                Some(user_id),
                "application_created",
                &origin.ip,
                serde_json::json!({"applicationId": app.id}),
            )?;
            Ok(app)
        })
        .await?;
    Ok(HttpResponse::Created().json(ApplicationTokenView { application_id: app.id, token }))
}

/// Issues a new token; the old one stops working at once.
#[utoipa::path(tag = "applications", params(("id" = i64, Path)), responses((status = 200, body = ApplicationTokenView),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/application/{id}/token")]
async fn rotate_token(
    st: web::Data<AppState>,
    admin: Admin,
    origin: Origin,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id: i64 =
        path.trim().parse().map_err(|_| ApiError::bad_request("invalid_path", "application id must be a number"))?;
    let token = random_token();
    let hash = token_hash(&token);
    let (company_id, user_id) = (admin.company_id, admin.user_id);
    st.db
        .write(move |c| {
            application::set_token_hash(c, company_id, id, &hash)?;
            store::audit(
                c,
                Some(company_id),
                Some(user_id),
                "application_token_rotated",
                &origin.ip,
                serde_json::json!({"applicationId": id}),
            )
        })
        .await?;
    Ok(HttpResponse::Ok().json(ApplicationTokenView { application_id: id, token }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_applications).service(create_application).service(rotate_token);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_applications, create_application, rotate_token),
    components(schemas(ApplicationView, ApplicationTokenView, ApplicationBody))
)]
pub struct Api;
