//! Fuzzing entry points (issue 24 item 3, README "Reliability"): each takes arbitrary bytes and
//! runs the code the server runs on that kind of untrusted input, up to the point where a
//! database would be needed. None may panic, whatever the bytes. They are driven by the
//! cargo-fuzz targets in `fuzz/` (libFuzzer, coverage-guided, for long runs) and, a fixed number
//! of mutated inputs each, by this module's tests in `cargo test` (CI).

use std::sync::OnceLock;

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame};
use actix_multipart::Multipart;
use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use bytes::{Bytes, BytesMut};

use crate::{
    core::{
        media::blobs::MediaStore,
        realtime::{conn, protocol},
    },
    media::routes::{UploadSink, read_upload_form},
    providers::{twilio, webhooks, whatsapp},
    realtime::session::{self, MAX_FRAME},
};

/// `POST /webhooks/whatsapp`: the signature check over the raw body, then the Cloud API
/// payload parser and the clean-up of what it found.
/// Each returns how many items it accepted (messages, statuses, frames, files), so the tests
/// can tell that the seeds reach the code past the first check.
pub fn whatsapp_webhook(data: &[u8]) -> usize {
    let header = std::str::from_utf8(&data[..data.len().min(71)]).ok();
    let _ = webhooks::verify_sha256_signature(header, b"app-secret", data);
    let Ok(changes) = whatsapp::parse(data) else { return 0 };
    changes
        .into_iter()
        .map(|change| webhooks::scrub(change.messages).len() + webhooks::scrub_statuses(change.statuses).len())
        .sum()
}

/// `POST /webhooks/twilio`: the form body, Twilio's signature over URL and parameters, our
/// number, and the message or status parser.
pub fn twilio_webhook(data: &[u8]) -> usize {
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(data).unwrap_or_default();
    let _ = twilio::verify(Some("c2lnbmF0dXJl"), "auth-token", "https://confab.test/webhooks/twilio", &params);
    let _ = twilio::our_number(&params);
    match twilio::parse(&params) {
        twilio::Parsed::Message(_) | twilio::Parsed::Status(_) => 1,
        twilio::Parsed::Ignored { .. } => 0,
    }
}

/// A WebSocket connection's client bytes after the upgrade: the frame decoder (RFC 6455, 64 KiB
/// limit) over the bytes as they arrive in pieces (the first byte sets the piece size), then
/// each frame as the session takes it (JSON client frames, pings answered).
pub fn ws_frames(data: &[u8]) -> usize {
    let Some((&piece, rest)) = data.split_first() else { return 0 };
    let piece = usize::from(piece).max(1);
    let mut codec = Codec::new().max_size(MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut accepted = 0;
    for chunk in rest.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => accepted += on_frame(frame),
                Ok(None) => break,
                // The session closes the connection (1009 or 1000): nothing more is read.
                Err(e) => {
                    let _ = session::close_code(&e);
                    return accepted;
                }
            }
        }
    }
    accepted
}

fn on_frame(frame: Frame) -> usize {
    match frame {
        Frame::Text(text) => match protocol::client_frame(&text) {
            Ok(_) => 1,
            Err(e) => {
                let _ = protocol::error(None, None, "invalid_frame", &e.to_string());
                0
            }
        },
        Frame::Ping(payload) => {
            let _ = conn::pong_frame(&payload);
            1
        }
        _ => 0,
    }
}

/// `POST /media/save`: the multipart form reader (fields, limits, the file's name), the type
/// sniffing and size limits of the media store, storing into an in-memory store. The first
/// line of the input is the `Content-Type` header (boundary included), the second byte of the
/// rest sets the size of the pieces the body arrives in.
pub fn multipart_upload(data: &[u8]) -> usize {
    let (content_type, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"multipart/form-data; boundary=X"[..], data),
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    let piece = body.first().map_or(1, |b| usize::from(*b).max(1));
    let chunks: Vec<Result<Bytes, actix_web::error::PayloadError>> =
        body.chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let mut form = Multipart::new(&headers, futures_util::stream::iter(chunks));
    let declared = Some(body.len() as u64);
    runtime().block_on(async { usize::from(read_upload_form(declared, &mut form, &MemorySink(store())).await.is_ok()) })
}

struct MemorySink(&'static MediaStore);

impl UploadSink for MemorySink {
    type Saved = ();

    async fn save<S>(&self, filename: Option<&str>, body: S) -> crate::core::error::ApiResult<()>
    where
        S: futures_util::Stream<Item = crate::core::error::ApiResult<Bytes>> + Unpin,
    {
        let stored = self.0.save_stream(1, filename, body).await?;
        let _ = self.0.delete(&stored.key).await;
        Ok(())
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"))
}

fn store() -> &'static MediaStore {
    static STORE: OnceLock<MediaStore> = OnceLock::new();
    STORE.get_or_init(|| MediaStore::open("memory://").expect("an in-memory store"))
}

/// A target: arbitrary bytes in, the number of items accepted out.
pub type Target = fn(&[u8]) -> usize;

/// The targets by name, as `fuzz/fuzz_targets/` names them.
pub const TARGETS: [(&str, Target); 4] = [
    ("whatsapp_webhook", whatsapp_webhook),
    ("twilio_webhook", twilio_webhook),
    ("ws_frames", ws_frames),
    ("multipart_upload", multipart_upload),
];

#[cfg(test)]
mod tests {
    //! A fixed number of inputs per target, every CI run: the seed corpus (`fuzz/corpus/NAME`)
    //! and random mutations of it (bit flips, byte changes, inserted tokens, cut, repeated and
    //! spliced ranges) from a fixed seed, so a failure reproduces. `CONFAB_FUZZ_ITERATIONS`
    //! sets the count, `CONFAB_FUZZ_SEED` the seed. Not coverage-guided: the cargo-fuzz
    //! targets are, for the long runs (README "Reliability").

    use std::path::PathBuf;

    use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

    use super::*;

    const TOKENS: &[&[u8]] = &[
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"null",
        b"-1",
        b"1e999",
        b"18446744073709551616",
        b"\\u0000",
        b"\\ud800",
        b"%",
        b"%00",
        b"&",
        b"=",
        b"+",
        b"\r\n",
        b"\r\n\r\n",
        b"--X",
        b"--X--",
        b"filename*=UTF-8''",
        b"Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n",
        b"\x89PNG\r\n\x1a\n",
        b"%PDF-1.4",
        b"\xff\xd8\xff",
        b"\x81\xfe\xff\xff",
        b"\x81\xff\x7f\xff\xff\xff\xff\xff\xff\xff",
        b"\x89\x80",
        b"\x88\x82",
        b"\x01\x00",
        b"\xc3\x28",
        b"\xf0\x9f\x98",
    ];

    /// The seeds of a target: (must be accepted, bytes). Seeds named `ok-*` are well-formed
    /// inputs that must get through (so the mutations start past the first check); others
    /// (`refused-*`, or what a libFuzzer run added) only must not crash.
    fn corpus(name: &str) -> Vec<(bool, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(name);
        let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let path = e.unwrap().path();
                (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        assert!(seeds.iter().any(|(n, _)| n.starts_with("ok-")), "no ok-* seeds in {}", dir.display());
        seeds.into_iter().map(|(n, bytes)| (n.starts_with("ok-"), bytes)).collect()
    }

    fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut v = seeds.choose(rng).unwrap().clone();
        for _ in 0..rng.gen_range(1..=8) {
            let len = v.len();
            let at = if len == 0 { 0 } else { rng.gen_range(0..=len) };
            match rng.gen_range(0..8) {
                0 if len > 0 => {
                    let i = rng.gen_range(0..len);
                    v[i] ^= 1 << rng.gen_range(0..8);
                }
                1 if len > 0 => {
                    let i = rng.gen_range(0..len);
                    v[i] = rng.r#gen();
                }
                2 => {
                    let t = TOKENS.choose(rng).unwrap();
                    v.splice(at..at, t.iter().copied());
                }
                3 if len > 0 => {
                    let end = rng.gen_range(at.min(len - 1)..len);
                    v.drain(at.min(len - 1)..=end);
                }
                4 if len > 0 => {
                    let from = rng.gen_range(0..len);
                    let to = rng.gen_range(from..=len.min(from + 64));
                    let copy = v[from..to].to_vec();
                    let times = rng.gen_range(1..=16);
                    for _ in 0..times {
                        v.splice(at..at, copy.iter().copied());
                    }
                }
                5 => {
                    let other = seeds.choose(rng).unwrap();
                    let from = rng.gen_range(0..=other.len());
                    v.truncate(at);
                    v.extend_from_slice(&other[from..]);
                }
                6 => {
                    let n = rng.gen_range(1..=32);
                    let bytes: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
                    v.splice(at..at, bytes);
                }
                _ => {
                    let digits = rng.gen_range(1..=20);
                    let number: String = (0..digits).map(|_| char::from(b'0' + rng.gen_range(0..10))).collect();
                    v.splice(at..at, number.into_bytes());
                }
            }
        }
        v
    }

    #[test]
    fn fuzz_targets_survive_mutated_inputs() {
        let iterations: usize =
            std::env::var("CONFAB_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let seed: u64 = std::env::var("CONFAB_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
        // A panic is caught, reported with its input, and fails the test at the end.
        let mut crashes = Vec::new();
        let mut figures = Vec::new();
        for (name, target) in TARGETS {
            let corpus = corpus(name);
            let seeds: Vec<Vec<u8>> = corpus.iter().map(|(_, bytes)| bytes.clone()).collect();
            let mut rng = StdRng::seed_from_u64(seed);
            let started = std::time::Instant::now();
            let inputs = seeds.iter().cloned().chain((0..iterations).map(|_| mutate(&mut rng, &seeds)));
            let (mut tried, mut accepting) = (0, 0);
            for (i, input) in inputs.enumerate() {
                tried += 1;
                match std::panic::catch_unwind(|| target(&input)) {
                    Err(_) => crashes.push(format!("{name}: input (hex) {}", hex::encode(&input))),
                    Ok(0) if corpus.get(i).is_some_and(|(ok, _)| *ok) => {
                        crashes.push(format!("{name}: seed {i} accepted nothing"))
                    }
                    Ok(0) => {}
                    Ok(_) => accepting += 1,
                }
            }
            figures.push(format!(
                "{name} {tried} inputs ({accepting} accepted something) in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
        }
        println!("fuzz (seed {seed}): {}; crashes {}", figures.join(", "), crashes.len());
        assert!(crashes.is_empty(), "{}", crashes.join("\n"));
    }
}
