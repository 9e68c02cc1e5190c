//! Media domain rules without I/O (CONTRACT §7): the four attachment kinds, the MIME types
//! WhatsApp accepts with their size limits, sniffing the type from the first bytes, and
//! filename sanitising.

use std::sync::LazyLock;

use serde::Serialize;
use utoipa::ToSchema;

/// How many leading bytes are read before the type is decided. infer's own file helper reads
/// 8 KiB; office documents (zip / OLE2 containers) need their first entries to be inside it.
pub const SNIFF_LEN: usize = 8 * 1024;

/// Longest stored filename, in bytes (common filesystem limit; the name is only metadata).
pub const MAX_FILENAME_BYTES: usize = 200;

const MB: u64 = 1024 * 1024;

/// The attachment kinds of CONTRACT §3 (`type` of an attachment, `documentType` of an upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum MediaKind {
    Image,
    Audio,
    Video,
    Document,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "IMAGE",
            Self::Audio => "AUDIO",
            Self::Video => "VIDEO",
            Self::Document => "DOCUMENT",
        }
    }

    /// A stored kind, a seed's `documentType` or a provider's media type, in any case
    /// (WhatsApp's `sticker` is an image, `voice` audio, Twilio's `file` a document).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "IMAGE" | "STICKER" => Some(Self::Image),
            "AUDIO" | "VOICE" => Some(Self::Audio),
            "VIDEO" => Some(Self::Video),
            "DOCUMENT" | "FILE" => Some(Self::Document),
            _ => None,
        }
    }

    /// WhatsApp Cloud API media limits (CONTRACT §7): image 5 MB, audio and video 16 MB,
    /// document 100 MB.
    pub fn max_bytes(self) -> u64 {
        match self {
            Self::Image => 5 * MB,
            Self::Audio | Self::Video => 16 * MB,
            Self::Document => 100 * MB,
        }
    }

    /// Media a browser may show in place; documents are always downloaded (a PDF or office
    /// file opened inline runs in the viewer with our origin).
    pub fn inline(self) -> bool {
        !matches!(self, Self::Document)
    }
}

/// One MIME type WhatsApp accepts, with the filename extensions that may carry it.
#[derive(Debug, PartialEq, Eq)]
pub struct AllowedType {
    pub mime: &'static str,
    pub kind: MediaKind,
    /// The first is the canonical one, appended to names that have none.
    pub extensions: &'static [&'static str],
}

/// The MIME types of the WhatsApp Cloud API "supported media types" table.
pub static ALLOWED: &[AllowedType] = &[
    AllowedType { mime: "image/jpeg", kind: MediaKind::Image, extensions: &["jpg", "jpeg", "jpe", "jfif"] },
    AllowedType { mime: "image/png", kind: MediaKind::Image, extensions: &["png"] },
    AllowedType { mime: "image/webp", kind: MediaKind::Image, extensions: &["webp"] },
    AllowedType { mime: "audio/aac", kind: MediaKind::Audio, extensions: &["aac"] },
    AllowedType { mime: "audio/mp4", kind: MediaKind::Audio, extensions: &["m4a", "mp4a"] },
    AllowedType { mime: "audio/mpeg", kind: MediaKind::Audio, extensions: &["mp3", "mpga"] },
    AllowedType { mime: "audio/amr", kind: MediaKind::Audio, extensions: &["amr"] },
    AllowedType { mime: "audio/ogg", kind: MediaKind::Audio, extensions: &["ogg", "oga", "opus"] },
    AllowedType { mime: "video/mp4", kind: MediaKind::Video, extensions: &["mp4", "m4v"] },
    AllowedType { mime: "video/3gpp", kind: MediaKind::Video, extensions: &["3gp", "3gpp"] },
    AllowedType { mime: "application/pdf", kind: MediaKind::Document, extensions: &["pdf"] },
    AllowedType { mime: "application/msword", kind: MediaKind::Document, extensions: &["doc", "dot"] },
    AllowedType {
        mime: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        kind: MediaKind::Document,
        extensions: &["docx"],
    },
    AllowedType { mime: "application/vnd.ms-excel", kind: MediaKind::Document, extensions: &["xls", "xlt"] },
    AllowedType {
        mime: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        kind: MediaKind::Document,
        extensions: &["xlsx"],
    },
    AllowedType { mime: "application/vnd.ms-powerpoint", kind: MediaKind::Document, extensions: &["ppt", "pot"] },
    AllowedType {
        mime: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        kind: MediaKind::Document,
        extensions: &["pptx"],
    },
    AllowedType { mime: "text/plain", kind: MediaKind::Document, extensions: &["txt", "text", "log"] },
];

pub fn allowed(mime: &str) -> Option<&'static AllowedType> {
    ALLOWED.iter().find(|t| t.mime == mime)
}

/// Why an upload's bytes are refused (both answer 415).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the file type {0} is not accepted")]
    NotAllowed(String),
    #[error("the file type could not be recognised")]
    Unknown,
    #[error("the file name ends in .{ext} but the content is {mime}")]
    Mismatch { ext: String, mime: &'static str },
}

/// infer with one extra matcher: 3GPP (WhatsApp's `video/3gpp`) is an ISO-BMFF container whose
/// `ftyp` major brand starts with `3gp`/`3g2`; infer has no matcher for it. Custom matchers
/// run before the built-in ones.
static SNIFFER: LazyLock<infer::Infer> = LazyLock::new(|| {
    let mut i = infer::Infer::new();
    i.add("video/3gpp", "3gp", |buf| buf.len() > 11 && &buf[4..8] == b"ftyp" && &buf[8..11] == b"3gp");
    i.add("video/3gpp", "3g2", |buf| buf.len() > 11 && &buf[4..8] == b"ftyp" && &buf[8..11] == b"3g2");
    i
});

/// Decides the type of an upload from its first bytes (at least [`SNIFF_LEN`] of them unless
/// the file is shorter) and checks it against the filename: the bytes decide, the name may
/// only agree. A name whose extension is a known type other than the sniffed one is a
/// mismatch (a text file named `.png`); an unknown or missing extension is fine.
pub fn sniff(head: &[u8], filename: &str) -> Result<&'static AllowedType, Rejection> {
    let ext = extension(filename);
    let detected = match SNIFFER.get(head) {
        Some(t) => Some(t.mime_type()),
        None if looks_like_text(head) => Some("text/plain"),
        None => None,
    };
    let Some(detected) = detected else { return Err(Rejection::Unknown) };
    let mime = match detected {
        // Aliases infer reports for types WhatsApp names differently.
        "audio/m4a" | "audio/x-m4a" => "audio/mp4",
        "audio/opus" => "audio/ogg",
        "video/x-m4v" => "video/mp4",
        // ISO-BMFF files with a generic brand are video/mp4 to infer; an audio-only `.m4a`
        // often carries one, so the extension picks audio there.
        "video/mp4" if ext.as_deref().is_some_and(|e| e == "m4a" || e == "mp4a") => "audio/mp4",
        other => other,
    };
    let Some(t) = allowed(mime) else { return Err(Rejection::NotAllowed(mime.to_owned())) };
    if let Some(ext) = ext
        && !t.extensions.contains(&ext.as_str())
        && (ALLOWED.iter().any(|a| a.extensions.contains(&ext.as_str()))
            || mime_guess::from_ext(&ext).first().is_some())
    {
        return Err(Rejection::Mismatch { ext, mime: t.mime });
    }
    Ok(t)
}

/// Plain text: valid UTF-8 (a multi-byte character cut at the end of the sniffed prefix is
/// fine) without control characters other than tab, line feed, form feed and carriage return.
fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
        Err(_) => return false,
    };
    let valid = valid.strip_prefix('\u{feff}').unwrap_or(valid);
    valid.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

/// The lower-cased extension of a name, if it has one.
fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// A filename safe to store and to send back in `Content-Disposition`: the last path
/// component only (both `/` and `\`), no control characters, no leading dots (no hidden or
/// `..` names), at most [`MAX_FILENAME_BYTES`] bytes with the extension kept; a missing name
/// becomes `file`, and a name without extension gets the type's canonical one.
pub fn sanitize_filename(raw: Option<&str>, t: &AllowedType) -> String {
    let base = raw.unwrap_or_default().rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim_end_matches(['.', ' ']);
    let mut name = if cleaned.is_empty() { "file".to_owned() } else { cleaned.to_owned() };
    if extension(&name).is_none() {
        name = format!("{name}.{}", t.extensions[0]);
    }
    if name.len() > MAX_FILENAME_BYTES {
        let ext = extension(&name).filter(|e| e.len() <= 16).map(|e| format!(".{e}")).unwrap_or_default();
        let mut cut = MAX_FILENAME_BYTES - ext.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}{ext}", &name[..cut]);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    fn mp4(brand: &[u8; 4]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 0x18];
        v.extend_from_slice(b"ftyp");
        v.extend_from_slice(brand);
        v.extend_from_slice(&[0; 12]);
        v
    }

    #[test]
    fn bytes_decide_the_type() {
        assert_eq!(sniff(PNG, "x.png").unwrap().mime, "image/png");
        assert_eq!(sniff(PNG, "no-extension").unwrap().mime, "image/png");
        assert_eq!(sniff(PNG, "weird.bin9").unwrap().mime, "image/png");
        assert_eq!(sniff(b"%PDF-1.7\n", "a.pdf").unwrap().kind, MediaKind::Document);
        assert_eq!(sniff(&mp4(b"isom"), "clip.mp4").unwrap().mime, "video/mp4");
        assert_eq!(sniff(&mp4(b"isom"), "voice.m4a").unwrap().mime, "audio/mp4");
        assert_eq!(sniff(&mp4(b"M4A "), "voice.m4a").unwrap().mime, "audio/mp4");
        assert_eq!(sniff(&mp4(b"3gp5"), "clip.3gp").unwrap().mime, "video/3gpp");
        assert_eq!(sniff("héllo\r\nworld\t!".as_bytes(), "notes.txt").unwrap().mime, "text/plain");
    }

    #[test]
    fn mismatched_or_disallowed_types_are_refused() {
        assert!(matches!(sniff(b"just text", "photo.png"), Err(Rejection::Mismatch { .. })));
        assert!(matches!(sniff(PNG, "report.pdf"), Err(Rejection::Mismatch { .. })));
        assert!(matches!(sniff(PNG, "x.gif"), Err(Rejection::Mismatch { .. })));
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0", "x.gif"), Err(Rejection::NotAllowed("image/gif".into())));
        assert_eq!(sniff(b"\0\x01\x02binary\xff\xfe", "x"), Err(Rejection::Unknown));
        assert_eq!(sniff(b"", "x.txt"), Err(Rejection::Unknown));
    }

    #[test]
    fn a_utf8_character_cut_at_the_sniff_boundary_is_still_text() {
        let mut head = "a".repeat(10).into_bytes();
        head.extend_from_slice(&"é".as_bytes()[..1]);
        assert_eq!(sniff(&head, "a.txt").unwrap().mime, "text/plain");
    }

    #[test]
    fn filenames_are_sanitised() {
        let png = allowed("image/png").unwrap();
        assert_eq!(sanitize_filename(Some("../../etc/passwd.png"), png), "passwd.png");
        assert_eq!(sanitize_filename(Some("C:\\Users\\x\\ice.png"), png), "ice.png");
        assert_eq!(sanitize_filename(Some("a\u{0}b\nc\u{7f}.png"), png), "abc.png");
        assert_eq!(sanitize_filename(Some(".."), png), "file.png");
        assert_eq!(sanitize_filename(None, png), "file.png");
        assert_eq!(sanitize_filename(Some("holiday"), png), "holiday.png");
        let long = format!("{}.png", "é".repeat(300));
        let s = sanitize_filename(Some(&long), png);
        assert!(s.len() <= MAX_FILENAME_BYTES && s.ends_with(".png"), "{s}");
    }
}
