//! Media routes (CONTRACT §7, seed 004 `MediaController_saveAttachment`): upload and download
//! of attachments.

use actix_multipart::{Multipart, MultipartError};
use actix_web::{
    FromRequest, HttpMessage, HttpRequest, HttpResponse,
    body::SizedStream,
    error::PayloadError,
    http::header::{
        self, CACHE_CONTROL, CONTENT_LENGTH, Charset, ContentDisposition, ContentRange, ContentRangeSpec,
        DispositionParam, DispositionType, ETAG, EntityTag, ExtendedValue, IfNoneMatch, IfRange,
    },
    web,
};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    db::{self, AttachmentRow},
    service,
};
use crate::core::{
    auth::guard::Agent,
    error::{ApiError, ApiResult, ErrorBody},
    media::model::MediaKind,
    state::AppState,
};

/// The largest `POST /media/save` request: the largest file (a 100 MB document) plus room
/// for the multipart framing and a few small fields. The JSON limit (1 MiB) does not apply to
/// this route: the body is streamed, never buffered, and each file is held to its type's limit
/// while it streams.
pub const UPLOAD_BODY_LIMIT: u64 = 100 * 1024 * 1024 + 64 * 1024;

/// Bytes accepted in all form fields other than `file` together (they are read and ignored).
const OTHER_FIELDS_LIMIT: usize = 16 * 1024;

/// How much of a refused upload's remaining body is read and dropped before answering.
const DISCARD_LIMIT: usize = 32 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/media/save").route(web::post().to(save)))
        .service(web::resource("/media/{attachmentId}").route(web::get().to(download)).route(web::head().to(download)));
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(save, download), components(schemas(UploadBody, SavedView, MediaKind)))]
pub struct Api;

/// The multipart form of `POST /media/save`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadBody {
    /// The file; its type is sniffed from the bytes, the name only has to agree.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavedView {
    /// The sanitised filename.
    #[schema(example = "ice.jpg")]
    pub name: String,
    #[schema(example = 289516)]
    pub size: i64,
    pub document_type: MediaKind,
    /// Pass as `attachmentId` to `POST /message`.
    #[schema(example = 100)]
    pub attachment_id: i64,
}

impl SavedView {
    fn from_row(row: AttachmentRow) -> ApiResult<Self> {
        let kind =
            MediaKind::parse(&row.kind).ok_or_else(|| anyhow::anyhow!("attachment {} kind {}", row.id, row.kind))?;
        Ok(Self { name: row.filename, size: row.filesize, document_type: kind, attachment_id: row.id })
    }
}

/// CONTRACT §7: stores the multipart field `file` as a new attachment of the agent's company,
/// not yet attached to a message (unattached uploads are deleted after 24 hours). The body is
/// streamed to the media store; the type comes from the bytes and must be one WhatsApp
/// accepts (JPEG, PNG, WebP images up to 5 MB; AAC, MP4, MP3, AMR, OGG audio and MP4, 3GPP
/// video up to 16 MB; PDF, Word, Excel, PowerPoint and plain-text documents up to 100 MB).
/// A file name whose extension names another type is refused (415).
#[utoipa::path(post, path = "/media/save", tag = "media", security(("bearer" = [])),
    request_body(content = UploadBody, content_type = "multipart/form-data"),
    responses((status = 201, body = SavedView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn save(a: Agent, req: HttpRequest, st: web::Data<AppState>, mut form: Multipart) -> ApiResult<HttpResponse> {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let row = read_upload_form(declared, &mut form, &AgentUpload { st: &st, agent: &a }).await?;
    Ok(HttpResponse::Created().json(SavedView::from_row(row)?))
}

/// Where [`read_upload_form`] puts the `file` field's bytes: the agent's company's attachment
/// (the route), or an in-memory store (the fuzz target, [`crate::fuzzing`]).
pub(crate) trait UploadSink {
    type Saved;

    async fn save<S>(&self, filename: Option<&str>, body: S) -> ApiResult<Self::Saved>
    where
        S: futures_util::Stream<Item = ApiResult<web::Bytes>> + Unpin;
}

struct AgentUpload<'a> {
    st: &'a AppState,
    agent: &'a Agent,
}

impl UploadSink for AgentUpload<'_> {
    type Saved = AttachmentRow;

    async fn save<S>(&self, filename: Option<&str>, body: S) -> ApiResult<AttachmentRow>
    where
        S: futures_util::Stream<Item = ApiResult<web::Bytes>> + Unpin,
    {
        service::save_upload(self.st, self.agent, filename, body).await
    }
}

/// The form of `POST /media/save`: fields other than `file` are read (bounded) and ignored,
/// `file` is streamed into `sink` with its filename; a refused file's remaining body is drained
/// (bounded) before the error is returned.
pub(crate) async fn read_upload_form<K: UploadSink>(
    declared: Option<u64>,
    form: &mut Multipart,
    sink: &K,
) -> ApiResult<K::Saved> {
    if declared.is_some_and(|n| n > UPLOAD_BODY_LIMIT) {
        return Err(ApiError::PayloadTooLarge);
    }
    // Other fields are read and ignored, but not without bound (a chunked body has no length).
    let mut other_bytes = 0;
    while let Some(mut field) = form.try_next().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            while let Some(chunk) = field.try_next().await.map_err(multipart_error)? {
                other_bytes += chunk.len();
                if other_bytes > OTHER_FIELDS_LIMIT {
                    return Err(ApiError::PayloadTooLarge);
                }
            }
            continue;
        }
        let filename = field.content_disposition().and_then(filename_of);
        let mut field = field.fuse();
        let saved = sink.save(filename.as_deref(), (&mut field).map_err(multipart_error)).await;
        // Anything after the file is not read: the answer does not depend on it.
        if saved.is_err() {
            discard_rest(field, form).await;
        }
        return saved;
    }
    Err(ApiError::field("file", "a multipart field named `file` is required"))
}

/// The part's filename: `filename*` (RFC 5987, UTF-8) when sent, else `filename`.
fn filename_of(cd: &ContentDisposition) -> Option<String> {
    match cd.get_filename_ext() {
        Some(ext) => Some(String::from_utf8_lossy(&ext.value).into_owned()),
        None => cd.get_filename().map(str::to_owned),
    }
}

/// A refused upload has already been aborted in the store; the rest of the body is read and
/// dropped (up to [`DISCARD_LIMIT`]) before answering, because many HTTP clients (hyper,
/// browsers' fetch) report a broken pipe instead of the 413/415 when the server closes the
/// connection while they are still sending. Beyond the limit the connection is simply closed.
async fn discard_rest<F>(mut field: F, form: &mut Multipart)
where
    F: futures_util::Stream<Item = Result<web::Bytes, MultipartError>> + Unpin,
{
    let mut seen = 0usize;
    while let Ok(Some(chunk)) = field.try_next().await {
        seen += chunk.len();
        if seen > DISCARD_LIMIT {
            return;
        }
    }
    // The form can move on only once no handle on the previous field is alive.
    drop(field);
    while let Ok(Some(mut next)) = form.try_next().await {
        while let Ok(Some(chunk)) = next.try_next().await {
            seen += chunk.len();
            if seen > DISCARD_LIMIT {
                return;
            }
        }
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    match e {
        MultipartError::Payload(PayloadError::Overflow) => ApiError::PayloadTooLarge,
        other => ApiError::bad_request("invalid_multipart", format!("malformed multipart/form-data body: {other}")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path)]
pub struct AttachmentPath {
    attachment_id: i64,
}

/// A signed link's parameters (see [`service::signed_url`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// Expiry, Unix seconds.
    exp: Option<i64>,
    /// Hex HMAC-SHA256 of the attachment id and `exp` with the server's data key.
    sig: Option<String>,
}

/// CONTRACT §7: the attachment's bytes, for agents of the owning company (another company's
/// attachment is 404), or for anyone holding a signed link (`?exp=&sig=`, 403 when expired or
/// tampered; this is what providers fetching outbound media get). `ETag` is the SHA-256 of the
/// bytes (`If-None-Match` → 304); one `Range` of bytes is served as 206 (several are answered
/// with the whole file; unsatisfiable → 416). Images, audio and video are sent `inline`,
/// documents as `attachment`. Inbound media still downloading is 409 `media_pending`; media
/// whose download failed is 409 `media_failed`.
#[utoipa::path(get, path = "/media/{attachmentId}", tag = "media", security((), ("bearer" = [])),
    params(AttachmentPath, LinkQuery),
    responses((status = 200, description = "the bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "the requested range"), (status = 304, description = "not modified"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 416, body = ErrorBody)))]
async fn download(
    req: HttpRequest,
    st: web::Data<AppState>,
    path: web::Path<AttachmentPath>,
    link: web::Query<LinkQuery>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner().attachment_id;
    let LinkQuery { exp, sig } = link.into_inner();
    let row = if exp.is_some() || sig.is_some() {
        service::verify_link(&st, id, exp, sig.as_deref())?;
        st.db.run(move |c| db::get_for_signed_link(c, id)).await?
    } else {
        let agent = Agent::extract(&req).await?;
        let company_id = agent.company_id;
        st.db.run(move |c| db::get(c, company_id, id)).await?
    };
    match row.state.as_str() {
        db::READY => {}
        db::PENDING => return Err(ApiError::conflict("media_pending", "the media is still being downloaded")),
        _ => return Err(ApiError::conflict("media_failed", "the media could not be downloaded from the provider")),
    }
    // Metadata without bytes (imported history, `confab demo`): nothing to serve.
    let (Some(key), Some(sha256)) = (row.storage_key.as_deref(), row.sha256.as_deref()) else {
        return Err(ApiError::NotFound);
    };
    let size = u64::try_from(row.filesize).map_err(anyhow::Error::new)?;
    let etag = EntityTag::new_strong(sha256.to_owned());

    let not_modified = match req.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&etag)),
        None => false,
    };
    if not_modified {
        return Ok(HttpResponse::NotModified()
            .insert_header((ETAG, etag.to_string()))
            .insert_header((CACHE_CONTROL, "private"))
            .finish());
    }

    // RFC 9110 §13.1.5: a Range applies only if If-Range (when sent) names this version; we
    // send no Last-Modified, so a date never matches.
    let range_applies = match req.get_header::<IfRange>() {
        Some(IfRange::EntityTag(tag)) => tag.strong_eq(&etag),
        Some(IfRange::Date(_)) => false,
        None => true,
    };
    let range = match req.get_header::<header::Range>() {
        Some(header::Range::Bytes(specs)) if range_applies && specs.len() == 1 => {
            match specs[0].to_satisfiable_range(size) {
                Some((first, last)) => Some(first..last + 1),
                None => return Ok(range_not_satisfiable(size)),
            }
        }
        _ => None,
    };

    let stream = st.media.get(key, range.clone()).await?;
    let mut res = match &range {
        Some(r) => {
            let mut res = HttpResponse::PartialContent();
            res.insert_header(ContentRange(ContentRangeSpec::Bytes {
                range: Some((r.start, r.end - 1)),
                instance_length: Some(size),
            }));
            res
        }
        None => HttpResponse::Ok(),
    };
    let content_type = if row.content_type == "text/plain" {
        "text/plain; charset=utf-8".to_owned()
    } else {
        row.content_type.clone()
    };
    let kind = MediaKind::parse(&row.kind).unwrap_or(MediaKind::Document);
    res.insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((ETAG, etag.to_string()))
        .insert_header((CACHE_CONTROL, "private"))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(content_disposition(kind, &row.filename));
    let len = range.map_or(size, |r| r.end - r.start);
    Ok(res.body(SizedStream::new(len, stream)))
}

/// `inline` or `attachment` with the name twice: an ASCII fallback (`filename`) and the
/// exact UTF-8 name (`filename*`, RFC 6266).
fn content_disposition(kind: MediaKind, filename: &str) -> ContentDisposition {
    let ascii: String = filename
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    ContentDisposition {
        disposition: if kind.inline() { DispositionType::Inline } else { DispositionType::Attachment },
        parameters: vec![
            DispositionParam::Filename(ascii),
            DispositionParam::FilenameExt(ExtendedValue {
                charset: Charset::Ext("UTF-8".to_owned()),
                language_tag: None,
                value: filename.as_bytes().to_vec(),
            }),
        ],
    }
}

/// 416 with `Content-Range: bytes */size` (RFC 9110 §15.5.17) and the unified error body.
fn range_not_satisfiable(size: u64) -> HttpResponse {
    let body = ErrorBody {
        status_code: 416,
        error: "Range Not Satisfiable".to_owned(),
        message: format!("the requested range is outside the {size} bytes of this file"),
        code: "range_not_satisfiable".to_owned(),
        fields: None,
    };
    HttpResponse::RangeNotSatisfiable()
        .insert_header(ContentRange(ContentRangeSpec::Bytes { range: None, instance_length: Some(size) }))
        .json(body)
}
