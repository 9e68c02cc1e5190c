//! Media: CONTRACT §7 upload and download, signed links, housekeeping, readiness. The store
//! scenarios run on the default local store with both databases, and against a real
//! S3-compatible server when `CONFAB_TEST_S3_URL` is set (`.ci/run` starts moto for it).

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{both_backends, helpers::*};

// ---- real small files, generated -------------------------------------------------------

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid `w`×`h` RGB PNG (zlib with stored blocks), plus `pad` bytes of a private ancillary
/// chunk to make it as large as a test needs.
pub(crate) fn png(w: u32, h: u32, pad: usize) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    if pad > 0 {
        png_chunk(&mut out, b"prVt", &vec![0x5a; pad]);
    }
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0);
        for x in 0..w {
            raw.extend_from_slice(&[(x * 40) as u8, (y * 40) as u8, 200]);
        }
    }
    let mut z = vec![0x78, 0x01];
    for (i, block) in raw.chunks(65535).enumerate() {
        let last = (i + 1) * 65535 >= raw.len();
        z.push(u8::from(last));
        z.extend_from_slice(&(block.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(block.len() as u16)).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    png_chunk(&mut out, b"IDAT", &z);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// JFIF header, a comment segment and EOI.
fn jpeg() -> Vec<u8> {
    let mut v = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10];
    v.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    v.extend_from_slice(&[0xff, 0xfe, 0x00, 0x0c]);
    v.extend_from_slice(b"confab-test");
    v.extend_from_slice(&[0xff, 0xd9]);
    v
}

/// The first Ogg page of an Opus stream (`OpusHead`) followed by a comment page's worth.
fn ogg_opus() -> Vec<u8> {
    let mut v = b"OggS\0\x02".to_vec();
    v.extend_from_slice(&[0; 8]); // granule position
    v.extend_from_slice(&7u32.to_le_bytes()); // serial
    v.extend_from_slice(&0u32.to_le_bytes()); // page sequence
    v.extend_from_slice(&0u32.to_le_bytes()); // CRC (not checked by sniffers)
    v.extend_from_slice(&[1, 19]); // one segment of 19 bytes
    v.extend_from_slice(b"OpusHead\x01\x01");
    v.extend_from_slice(&312u16.to_le_bytes());
    v.extend_from_slice(&48000u32.to_le_bytes());
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(b"OggS\0\0OpusTags-rest-of-stream");
    v
}

/// An ISO-BMFF `ftyp` box (`isom`) followed by an empty `mdat`.
fn mp4() -> Vec<u8> {
    let mut v = 32u32.to_be_bytes().to_vec();
    v.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2avc1mp41");
    v.extend_from_slice(&16u32.to_be_bytes());
    v.extend_from_slice(b"mdat01234567");
    v
}

pub(crate) fn pdf(pad: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n".to_vec();
    v.extend_from_slice(b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n%");
    v.extend(std::iter::repeat_n(b'x', pad));
    v.extend_from_slice(b"\ntrailer << /Root 1 0 R >>\n%%EOF\n");
    v
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---- helpers ------------------------------------------------------------------------------

const BOUNDARY: &str = "confab-test-boundary-7d93";

/// A form with a small `caption` field, then the file part; `disposition` is the part's
/// `Content-Disposition` parameters after `form-data; `.
fn multipart_body(disposition: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\nignored\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload_field(app: &TestApp, token: Option<&str>, field: &str, filename: &str, bytes: &[u8]) -> (u16, Value) {
    upload_raw(app, token, &format!("name=\"{field}\"; filename=\"{filename}\""), bytes).await
}

async fn upload_raw(app: &TestApp, token: Option<&str>, disposition: &str, bytes: &[u8]) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url("/media/save"))
        .header("Content-Type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(multipart_body(disposition, bytes));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    into_json(req.send().await.expect("the server answers (also when it refuses early)")).await
}

pub async fn upload(app: &TestApp, token: &str, filename: &str, bytes: &[u8]) -> (u16, Value) {
    upload_field(app, Some(token), "file", filename, bytes).await
}

async fn download(app: &TestApp, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.client.get(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// The default company's admin token and company id.
async fn agent(app: &TestApp) -> (String, i64) {
    let login = app.login(&app.admin_email.clone(), ADMIN_PASSWORD).await;
    (login["accessToken"].as_str().unwrap().to_owned(), login["user"]["companyId"].as_i64().unwrap())
}

async fn attachment_rows(app: &TestApp, company: i64) -> i64 {
    use confab::core::db::schema::attachments;
    app.state
        .db
        .run(move |c| {
            Ok(attachments::table.filter(attachments::company_id.eq(company)).count().get_result::<i64>(c)?)
        })
        .await
        .unwrap()
}

// ---- scenarios (run on every store) -------------------------------------------------------

async fn round_trips_for_each_type(app: &TestApp) {
    let (token, _) = agent(app).await;
    let files: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("ice.png", png(3, 2, 0), "image/png", "IMAGE"),
        ("ice.jpg", jpeg(), "image/jpeg", "IMAGE"),
        ("voice.ogg", ogg_opus(), "audio/ogg", "AUDIO"),
        ("clip.mp4", mp4(), "video/mp4", "VIDEO"),
        ("report.pdf", pdf(100), "application/pdf", "DOCUMENT"),
        ("notes.txt", "plain words\nand more\n".as_bytes().to_vec(), "text/plain; charset=utf-8", "DOCUMENT"),
    ];
    for (name, bytes, content_type, kind) in files {
        let (status, saved) = upload(app, &token, name, &bytes).await;
        assert_eq!(status, 201, "{name}: {saved}");
        assert_eq!(saved["name"], name);
        assert_eq!(saved["size"], bytes.len());
        assert_eq!(saved["documentType"], kind, "{name}");
        assert_eq!(saved.as_object().unwrap().len(), 4, "the seed's fields: {saved}");
        let id = saved["attachmentId"].as_i64().unwrap();

        let res = download(app, &format!("/media/{id}"), Some(&token), &[]).await;
        assert_eq!(res.status(), 200, "{name}");
        let h = res.headers().clone();
        assert_eq!(h["content-type"], content_type, "{name}");
        assert_eq!(h["content-length"], bytes.len().to_string().as_str());
        assert_eq!(h["etag"], format!("\"{}\"", sha256_hex(&bytes)).as_str());
        assert_eq!(h["cache-control"], "private");
        assert_eq!(h["accept-ranges"], "bytes");
        let disposition = h["content-disposition"].to_str().unwrap();
        let expected_type = if kind == "DOCUMENT" { "attachment" } else { "inline" };
        assert!(disposition.starts_with(expected_type), "{disposition}");
        assert!(disposition.contains(&format!("filename=\"{name}\"")), "{disposition}");
        assert_eq!(res.bytes().await.unwrap().as_ref(), bytes.as_slice(), "{name} bytes");
    }
}

async fn names_are_sanitised_and_types_come_from_the_bytes(app: &TestApp) {
    let (token, _) = agent(app).await;
    let (status, saved) = upload(app, &token, "../../etc/ice.png", &png(1, 1, 0)).await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["name"], "ice.png");
    let disposition = "name=\"file\"; filename*=UTF-8''..%5C..%5Cx%07y%C3%A9.png";
    let (status, saved) = upload_raw(app, Some(&token), disposition, &png(1, 1, 0)).await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["name"], "xyé.png");
    let id = saved["attachmentId"].as_i64().unwrap();
    let res = download(app, &format!("/media/{id}"), Some(&token), &[]).await;
    let cd = res.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(cd.contains("filename=\"xy_.png\"") && cd.contains("filename*=UTF-8''xy%C3%A9.png"), "{cd}");
    let long = format!("{}.png", "a".repeat(500));
    let (status, saved) = upload(app, &token, &long, &png(1, 1, 0)).await;
    assert_eq!(status, 201, "{saved}");
    let name = saved["name"].as_str().unwrap();
    assert!(name.len() <= 200 && name.ends_with(".png"), "{name}");
    let (status, saved) = upload(app, &token, "snapshot", &jpeg()).await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["name"], "snapshot.jpg", "the sniffed type's extension is added");
    let id = saved["attachmentId"].as_i64().unwrap();
    let res = download(app, &format!("/media/{id}"), Some(&token), &[]).await;
    assert_eq!(res.headers()["content-type"], "image/jpeg");

    let (status, body) = upload(app, &token, "photo.png", b"I am only text, not a picture\n").await;
    assert_error(status, &body, 415, "unsupported_media_type");
    let (status, body) = upload(app, &token, "report.pdf", &png(1, 1, 0)).await;
    assert_error(status, &body, 415, "unsupported_media_type");
    let (status, body) = upload(app, &token, "anim.gif", b"GIF89a\x01\0\x01\0\0\0\0;").await;
    assert_error(status, &body, 415, "unsupported_media_type");
    let (status, body) = upload(app, &token, "blob.bin", &[0u8, 1, 2, 3, 0xff, 0xfe, 0, 0]).await;
    assert_error(status, &body, 415, "unsupported_media_type");
    let (status, body) = upload(app, &token, "empty.png", b"").await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = upload_field(app, Some(&token), "attachment", "ice.png", &png(1, 1, 0)).await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["file"].is_string(), "{body}");
    let (status, body) = into_json(
        app.client
            .post(app.url("/media/save"))
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 400, "invalid_multipart");
}

async fn oversized_image_is_413_and_leaves_nothing(app: &TestApp) {
    let (token, company) = agent(app).await;
    let before = app.state.media.list_company(company).await.unwrap();
    let rows_before = attachment_rows(app, company).await;
    let big = png(2, 2, 6 * 1024 * 1024);
    let (status, body) = upload(app, &token, "huge.png", &big).await;
    assert_error(status, &body, 413, "payload_too_large");
    assert_eq!(app.state.media.list_company(company).await.unwrap(), before, "no object left in the store");
    assert_eq!(attachment_rows(app, company).await, rows_before, "no attachment row");

    // The same size is fine for a document (100 MB limit), and goes up in several parts.
    let doc = pdf(6 * 1024 * 1024);
    let (status, saved) = upload(app, &token, "big.pdf", &doc).await;
    assert_eq!(status, 201, "{saved}");
    let id = saved["attachmentId"].as_i64().unwrap();
    let res = download(app, &format!("/media/{id}"), Some(&token), &[]).await;
    assert_eq!(res.headers()["etag"], format!("\"{}\"", sha256_hex(&doc)).as_str());
    assert_eq!(res.bytes().await.unwrap().as_ref(), doc.as_slice());
    assert_eq!(app.state.media.list_company(company).await.unwrap().len(), before.len() + 1);
}

async fn ranges_and_etags(app: &TestApp) {
    let (token, _) = agent(app).await;
    let bytes = pdf(1000);
    let len = bytes.len();
    let (_, saved) = upload(app, &token, "r.pdf", &bytes).await;
    let path = format!("/media/{}", saved["attachmentId"]);
    let etag = format!("\"{}\"", sha256_hex(&bytes));

    let res = download(app, &path, Some(&token), &[("Range", "bytes=0-9")]).await;
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], format!("bytes 0-9/{len}").as_str());
    assert_eq!(res.headers()["content-length"], "10");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[..10]);

    let res = download(app, &path, Some(&token), &[("Range", "bytes=-6")]).await;
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], format!("bytes {}-{}/{len}", len - 6, len - 1).as_str());
    assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[len - 6..]);

    let res = download(app, &path, Some(&token), &[("Range", "bytes=100-")]).await;
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[100..]);

    let res = download(app, &path, Some(&token), &[("Range", &format!("bytes={len}-"))]).await;
    assert_eq!(res.status(), 416);
    assert_eq!(res.headers()["content-range"], format!("bytes */{len}").as_str());
    let (status, body) = into_json(res).await;
    assert_error(status, &body, 416, "range_not_satisfiable");

    // If-Range with another version: the whole file.
    let res = download(app, &path, Some(&token), &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), len);

    let res = app.client.head(app.url(&path)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], len.to_string().as_str());
    assert_eq!(res.headers()["etag"], etag.as_str());

    let res = download(app, &path, Some(&token), &[("If-None-Match", &etag)]).await;
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], etag.as_str());
    assert!(res.bytes().await.unwrap().is_empty());
    let res = download(app, &path, Some(&token), &[("If-None-Match", &format!("\"nope\", W/{etag}"))]).await;
    assert_eq!(res.status(), 304, "weak comparison for If-None-Match");
    let res = download(app, &path, Some(&token), &[("If-None-Match", "\"nope\"")]).await;
    assert_eq!(res.status(), 200);
}

async fn access_rules(app: &TestApp) {
    let (token, _) = agent(app).await;
    let (_, saved) = upload(app, &token, "private.png", &png(2, 2, 0)).await;
    let id = saved["attachmentId"].as_i64().unwrap();
    let path = format!("/media/{id}");

    let (status, body) = app.get(&path, None).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = upload_field(app, None, "file", "x.png", &png(1, 1, 0)).await;
    assert_error(status, &body, 401, "unauthorized");

    let (other, _) = app.new_company("Globex").await;
    let (status, body) = app.get(&path, Some(&other)).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.get("/media/999999999", Some(&token)).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.get("/media/not-a-number", Some(&token)).await;
    assert_error(status, &body, 400, "invalid_path");

    // Signed links: no authentication needed while valid.
    let base = app.config.public_url.trim_end_matches('/').to_owned();
    let signed = confab::media::signed_url(&app.state, id, Duration::from_secs(120));
    let link = signed.strip_prefix(&base).expect("signed links use CONFAB_PUBLIC_URL").to_owned();
    assert!(link.starts_with(&format!("{path}?exp=")), "{link}");
    let res = download(app, &link, None, &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), png(2, 2, 0).as_slice());

    let tampered_sig = {
        let (head, sig) = link.rsplit_once("sig=").unwrap();
        let flipped = match sig.strip_prefix('0') {
            Some(rest) => format!("1{rest}"),
            None => format!("0{}", &sig[1..]),
        };
        format!("{head}sig={flipped}")
    };
    let (status, body) = app.get(&tampered_sig, None).await;
    assert_error(status, &body, 403, "forbidden");
    let exp: i64 = link.split("exp=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
    let later = link.replace(&format!("exp={exp}"), &format!("exp={}", exp + 3600));
    let (status, body) = app.get(&later, None).await;
    assert_error(status, &body, 403, "forbidden");
    let (_, other_saved) = upload(app, &token, "other.png", &png(1, 1, 0)).await;
    let other_id = other_saved["attachmentId"].as_i64().unwrap();
    let moved = link.replacen(&path, &format!("/media/{other_id}"), 1);
    let (status, body) = app.get(&moved, None).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = app.get(&format!("{path}?exp={exp}"), None).await;
    assert_error(status, &body, 403, "forbidden");

    let expired = confab::media::signed_url(&app.state, id, Duration::ZERO);
    let (status, body) = app.get(expired.strip_prefix(&base).unwrap(), None).await;
    assert_error(status, &body, 403, "forbidden");
}

// ---- local store, both databases ----------------------------------------------------------

both_backends!(upload_and_download_round_trip_for_each_type, |app: TestApp| async move {
    round_trips_for_each_type(&app).await;
});

both_backends!(names_are_sanitised_and_mismatched_types_are_415, |app: TestApp| async move {
    names_are_sanitised_and_types_come_from_the_bytes(&app).await;
});

both_backends!(image_over_5_mb_is_413_with_nothing_left_in_the_store, |app: TestApp| async move {
    oversized_image_is_413_and_leaves_nothing(&app).await;
    let files = walk(&app.data_dir().join("media"));
    assert!(files.iter().all(|f| !f.contains('#')), "no staged upload files left: {files:?}");
});

both_backends!(range_etag_and_not_modified, |app: TestApp| async move {
    ranges_and_etags(&app).await;
});

both_backends!(tenancy_auth_and_signed_links, |app: TestApp| async move {
    access_rules(&app).await;
});

both_backends!(unattached_uploads_are_swept_after_24_hours, |app: TestApp| async move {
    use confab::{core::db::schema::attachments, media::service};
    let (token, company) = agent(&app).await;
    let (_, old) = upload(&app, &token, "old.png", &png(1, 1, 0)).await;
    let (_, fresh) = upload(&app, &token, "fresh.png", &png(1, 1, 0)).await;
    let old_id = old["attachmentId"].as_i64().unwrap();
    let day_ago = confab::core::types::now() - chrono::Duration::hours(25);
    app.state
        .db
        .write(move |c| {
            diesel::update(attachments::table.find(old_id)).set(attachments::created_at.eq(day_ago)).execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(app.state.media.list_company(company).await.unwrap().len(), 2);

    assert_eq!(service::sweep_unattached(&app.state, service::UNATTACHED_TTL).await.unwrap(), 1);
    let (status, body) = app.get(&format!("/media/{old_id}"), Some(&token)).await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(app.get(&format!("/media/{}", fresh["attachmentId"]), Some(&token)).await.0, 200);
    assert_eq!(app.state.media.list_company(company).await.unwrap().len(), 1, "the old object is deleted too");
    assert_eq!(service::sweep_unattached(&app.state, service::UNATTACHED_TTL).await.unwrap(), 0);
});

both_backends!(readyz_names_the_media_store_when_it_is_gone, |app: TestApp| async move {
    assert_eq!(app.get("/readyz", None).await.0, 200);
    std::fs::remove_dir_all(app.data_dir().join("media")).unwrap();
    let (status, body) = app.get("/readyz", None).await;
    assert_error(status, &body, 503, "not_ready");
    assert!(body["message"].as_str().unwrap().contains("media store"), "{body}");
});

#[actix_web::test]
async fn openapi_lists_the_media_routes() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let (_, doc) = app.get("/openapi.json", None).await;
    assert!(doc["paths"]["/media/save"]["post"].is_object(), "{}", doc["paths"]);
    assert!(doc["paths"]["/media/{attachmentId}"]["get"].is_object());
}

#[actix_web::test]
async fn memory_store_works_too() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.media_url = Some("memory://".into())).await.unwrap();
    round_trips_for_each_type(&app).await;
    oversized_image_is_413_and_leaves_nothing(&app).await;
    assert_eq!(app.get("/readyz", None).await.0, 200);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

// ---- S3-compatible store (moto in CI) -----------------------------------------------------

/// `CONFAB_TEST_S3_URL` (`s3://bucket?aws_endpoint=…&aws_allow_http=true&…`) with a fresh
/// prefix per test, after creating the bucket; `None` (test skipped) when unset.
async fn spawn_s3() -> Option<(TestApp, url::Url)> {
    let Some(base) = std::env::var("CONFAB_TEST_S3_URL").ok().filter(|s| !s.is_empty()) else {
        eprintln!("skipped: CONFAB_TEST_S3_URL is not set (.ci/run starts moto and sets it)");
        return None;
    };
    let mut url = url::Url::parse(&base).expect("CONFAB_TEST_S3_URL is a URL");
    let bucket = url.host_str().expect("s3://bucket").to_owned();
    let endpoint = url
        .query_pairs()
        .find(|(k, _)| k == "aws_endpoint")
        .map(|(_, v)| v.into_owned())
        .or_else(|| std::env::var("AWS_ENDPOINT").ok())
        .expect("an endpoint for the S3-compatible server");
    // moto accepts unsigned requests; an existing bucket answers 409, which is fine.
    let res = reqwest::Client::new().put(format!("{}/{bucket}", endpoint.trim_end_matches('/'))).send().await;
    assert!(res.is_ok(), "S3 endpoint {endpoint} reachable: {res:?}");
    url.set_path(&format!("/t-{}", confab::core::crypto::random_hex_id()));
    let media_url = url.to_string();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.media_url = Some(media_url)).await?;
    Some((app, url))
}

/// Multipart uploads still open under the test's prefix (an aborted one must not be).
async fn open_multipart_uploads(url: &url::Url) -> usize {
    let endpoint = url.query_pairs().find(|(k, _)| k == "aws_endpoint").map(|(_, v)| v.into_owned());
    let Some(endpoint) = endpoint.or_else(|| std::env::var("AWS_ENDPOINT").ok()) else { return 0 };
    let bucket = url.host_str().unwrap();
    let prefix = url.path().trim_start_matches('/');
    let text = reqwest::get(format!("{}/{bucket}?uploads&prefix={prefix}", endpoint.trim_end_matches('/')))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ListMultipartUploadsResult"), "{text}");
    text.matches("<Upload>").count()
}

#[actix_web::test]
async fn s3_upload_and_download_round_trip_for_each_type() {
    let Some((app, _)) = spawn_s3().await else { return };
    assert_eq!(app.get("/readyz", None).await, (200, json!({"status": "ready"})));
    round_trips_for_each_type(&app).await;
    names_are_sanitised_and_types_come_from_the_bytes(&app).await;
}

#[actix_web::test]
async fn s3_image_over_5_mb_is_413_with_nothing_left_in_the_store() {
    let Some((app, url)) = spawn_s3().await else { return };
    oversized_image_is_413_and_leaves_nothing(&app).await;
    assert_eq!(open_multipart_uploads(&url).await, 0, "the refused upload was aborted");
}

#[actix_web::test]
async fn s3_range_etag_tenancy_and_signed_links() {
    let Some((app, _)) = spawn_s3().await else { return };
    ranges_and_etags(&app).await;
    access_rules(&app).await;
}

#[actix_web::test]
async fn s3_readyz_fails_for_a_missing_bucket() {
    let Some((_, url)) = spawn_s3().await else { return };
    let mut missing = url.clone();
    missing.set_host(Some(&format!("missing-{}", confab::core::crypto::random_hex_id()))).unwrap();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.media_url = Some(missing.to_string())).await.unwrap();
    let (status, body) = app.get("/readyz", None).await;
    assert_error(status, &body, 503, "not_ready");
}
