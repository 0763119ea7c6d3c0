//! Bounded text: every message that is stored (DynamoDB items), sent (SQS bodies, webhook
//! payloads) or returned (status API, output CSV) is cut to a fixed number of UTF-8 bytes, so
//! no input — a 500 KB header cell, a redirect's `Location`, a library's error chain — can push
//! an item past DynamoDB's 400 KB limit or a message past SQS's 1 MiB.

/// Longest stored or returned message, in UTF-8 bytes (ellipsis included).
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Longest `S. No.` cell, in UTF-8 bytes. Serials are identifiers; real catalogues use a few
/// dozen characters at most.
pub const MAX_SERIAL_BYTES: usize = 256;

/// Longest `Product Name` cell, in UTF-8 bytes.
pub const MAX_PRODUCT_NAME_BYTES: usize = 1024;

const ELLIPSIS: &str = "…";

/// `text` cut to at most `max_bytes` UTF-8 bytes at a character boundary, with `…` appended
/// when anything was cut (the ellipsis counts toward the bound). Never splits a character.
#[must_use]
pub fn bounded(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let room = max_bytes.saturating_sub(ELLIPSIS.len());
    let mut end = room.min(text.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = String::with_capacity(end + ELLIPSIS.len());
    cut.push_str(&text[..end]);
    if max_bytes >= ELLIPSIS.len() {
        cut.push_str(ELLIPSIS);
    }
    cut
}

/// [`bounded`] at [`MAX_MESSAGE_BYTES`]: the bound of every stored or returned message.
#[must_use]
pub fn message(text: &str) -> String {
    bounded(text, MAX_MESSAGE_BYTES)
}

/// `true` for characters SQS refuses in a message body and that have no place in CSV text:
/// C0 controls other than tab (U+0000–U+0008, U+000B–U+001F, and CR/LF inside a cell), the
/// surrogate range, and the non-characters U+FFFE and U+FFFF. SQS accepts only `#x9 | #xA |
/// #xD | #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF` (Amazon SQS Developer Guide, "Amazon
/// SQS message quotas").
#[must_use]
pub fn is_refused_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{A}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

/// `error` and its causes as one line, `outer: inner: root`, for logs and problem details
/// that must name the cause without exposing a `Debug` dump.
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged_and_long_text_is_cut_with_an_ellipsis() {
        assert_eq!(bounded("abc", 10), "abc");
        let cut = bounded(&"x".repeat(600), MAX_MESSAGE_BYTES);
        assert_eq!(cut.len(), MAX_MESSAGE_BYTES);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn cuts_never_split_a_character() {
        // "é" is 2 bytes, "€" 3, "😀" 4: every bound from 0 to 40 yields valid UTF-8 within it.
        let text = "é€😀".repeat(10);
        for max in 0..40 {
            let cut = bounded(&text, max);
            assert!(cut.len() <= max.max(ELLIPSIS.len()), "{max}: {}", cut.len());
            assert!(cut.len() <= max || max < ELLIPSIS.len());
        }
    }

    #[test]
    fn sqs_refused_characters_are_recognised() {
        for c in [
            '\u{0}', '\u{7}', '\u{B}', '\u{1B}', '\u{FFFE}', '\u{FFFF}', '\n',
        ] {
            assert!(is_refused_char(c), "{:?}", c);
        }
        for c in ['\t', ' ', 'é', '\u{FFFD}', '😀'] {
            assert!(!is_refused_char(c), "{:?}", c);
        }
    }
}
