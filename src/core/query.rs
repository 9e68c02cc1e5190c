//! Query inputs every family shares: paging bounds and user-typed search text. One rule each,
//! so no route can page past `i64` or hand a search term to SQL unchecked (issue 17, issue 25).

use crate::core::error::{ApiError, ApiResult};

/// Offset paging (CONTRACT §2): `page` is 1-based, `size` the items per page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: i64,
    pub size: i64,
    /// `(page - 1) × size`, computed with checked arithmetic.
    pub offset: i64,
}

impl Paging {
    /// The deepest page any route serves: at 100 items a page that is 10⁸ rows in, far past
    /// what offset paging is for (keyset paging serves deep lists). Also keeps `page × size`
    /// and the Fynd `has_next` computation far from `i64` overflow.
    pub const MAX_PAGE: i64 = 1_000_000;
    pub const MAX_SIZE: i64 = 100;

    /// Checks `page` (default 1) and `size` (default `default_size`) against the bounds;
    /// out of range is 400 `validation_failed` naming the field (`page_field`, `size_field`:
    /// each family's own parameter names).
    pub fn parse(
        page: Option<i64>,
        size: Option<i64>,
        default_size: i64,
        (page_field, size_field): (&str, &str),
    ) -> ApiResult<Self> {
        let page = page.unwrap_or(1);
        let size = size.unwrap_or(default_size);
        if !(1..=Self::MAX_PAGE).contains(&page) {
            return Err(ApiError::field(page_field, format!("must be between 1 and {}", Self::MAX_PAGE)));
        }
        if !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(ApiError::field(size_field, format!("must be between 1 and {}", Self::MAX_SIZE)));
        }
        let offset = (page - 1)
            .checked_mul(size)
            .ok_or_else(|| ApiError::field(page_field, format!("must be between 1 and {}", Self::MAX_PAGE)))?;
        Ok(Self { page, size, offset })
    }
}

/// The longest search text accepted, in characters.
pub const MAX_SEARCH_CHARS: usize = 256;

/// A search term or `q` filter as typed by a user: trimmed, `None` when blank. NUL (which
/// PostgreSQL refuses in text and which ends FTS5's query parser early) and more than
/// [`MAX_SEARCH_CHARS`] characters are 400 `validation_failed` on `field`. Everything else is
/// plain text: callers quote it for FTS and escape it for `LIKE` ([`like_contains`]).
pub fn search_text(field: &str, raw: &str) -> ApiResult<Option<String>> {
    if raw.contains('\0') {
        return Err(ApiError::field(field, "must not contain NUL characters"));
    }
    let text = raw.trim();
    if text.chars().count() > MAX_SEARCH_CHARS {
        return Err(ApiError::field(field, format!("must be at most {MAX_SEARCH_CHARS} characters")));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// The escape character of [`like_contains`] patterns; pass it to diesel's `.escape()` (or
/// `ESCAPE '\'` in raw SQL) so both backends read the pattern the same way (PostgreSQL's
/// default escape is `\`, SQLite has none).
pub const LIKE_ESCAPE: char = '\\';

/// A `LIKE` pattern matching values that contain `text` literally: `%`, `_` and the escape
/// character itself are escaped.
pub fn like_contains(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | LIKE_ESCAPE) {
            pattern.push(LIKE_ESCAPE);
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Invalid(fields) => fields.into_keys().next().unwrap_or_default(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn paging_defaults_and_offsets() {
        assert_eq!(Paging::parse(None, None, 20, ("page", "limit")).unwrap(), Paging { page: 1, size: 20, offset: 0 });
        assert_eq!(Paging::parse(Some(3), Some(7), 20, ("page", "limit")).unwrap().offset, 14);
        let deepest = Paging::parse(Some(Paging::MAX_PAGE), Some(100), 20, ("page", "limit")).unwrap();
        assert_eq!(deepest.offset, (Paging::MAX_PAGE - 1) * 100);
    }

    #[test]
    fn out_of_range_paging_names_the_field() {
        for (page, size, field) in [
            (Some(0), None, "page_no"),
            (Some(-1), None, "page_no"),
            (Some(1 << 62), None, "page_no"),
            (Some(i64::MAX), Some(100), "page_no"),
            (Some(i64::MIN), None, "page_no"),
            (None, Some(0), "page_size"),
            (None, Some(101), "page_size"),
            (None, Some(i64::MAX), "page_size"),
        ] {
            let err = Paging::parse(page, size, 10, ("page_no", "page_size")).unwrap_err();
            assert_eq!(field_of(err), field, "{page:?} {size:?}");
        }
    }

    #[test]
    fn search_text_refuses_nul_and_long_text() {
        assert_eq!(search_text("q", "  ada  ").unwrap().as_deref(), Some("ada"));
        assert_eq!(search_text("q", "   ").unwrap(), None);
        assert_eq!(field_of(search_text("term", "a\0b").unwrap_err()), "term");
        assert_eq!(field_of(search_text("q", &"x".repeat(MAX_SEARCH_CHARS + 1)).unwrap_err()), "q");
        assert!(search_text("q", &"é".repeat(MAX_SEARCH_CHARS)).unwrap().is_some(), "characters, not bytes");
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_contains("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(like_contains("ada"), "%ada%");
    }
}
