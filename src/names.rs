//! The one rule for names a peer gives us (accounts and resources), the checks on
//! free text (topic names, bulletins), and how errors quote what a peer sent.
//!
//! **Names** — `appAccount`, `toAccount(s)`, `fromAccount`, `ownerAccount`, the
//! `accounts` of topic calls, the `appAccount` header, and a device's `resource` —
//! go through [`name`] everywhere they enter (REST and the wire protocol):
//! 1. surrounding white space (Unicode `White_Space`) is removed;
//! 2. the rest must be 1 to [`MAX_NAME_BYTES`] bytes of UTF-8;
//! 3. it must not contain a control character (Unicode `Cc`: U+0000–U+001F,
//!    U+007F–U+009F) nor a bidirectional formatting character (U+061C, U+200E,
//!    U+200F, U+202A–U+202E, U+2066–U+2069), which would let one name look like
//!    another. Anything else, any script, is kept as it is (no case folding).
//!
//! Invalid names are refused (`400`, or `Error 400` on the wire), never altered.
//!
//! **Text** — topic names and bulletins — is checked by [`text`]: a length limit in
//! bytes and no control characters other than tab and line breaks (bulletin only).
//!
//! Error messages show at most [`QUOTE_CHARS`] characters of what was sent
//! ([`quote`]), so an error never echoes a large input.

/// Longest account name or resource, in bytes (after trimming).
pub const MAX_NAME_BYTES: usize = 128;

/// Characters of a peer's input shown in an error message.
pub const QUOTE_CHARS: usize = 32;

/// Why a name or text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} {shown} is {len} bytes, over the limit of {max}")]
    TooLong {
        what: &'static str,
        shown: String,
        len: usize,
        max: usize,
    },
    #[error("{what} {shown} contains the forbidden character U+{code:04X} (control or bidirectional formatting)")]
    Forbidden {
        what: &'static str,
        shown: String,
        code: u32,
    },
}

/// The first `max_chars` characters of `text`, and whether anything was cut.
fn head(text: &str, max_chars: usize) -> (&str, bool) {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => (&text[..end], true),
        None => (text, false),
    }
}

/// `input` for an error message: Rust-escaped, at most [`QUOTE_CHARS`] characters,
/// with the full length when it was cut.
pub fn quote(input: &str) -> String {
    match head(input, QUOTE_CHARS) {
        (all, false) => format!("{all:?}"),
        (start, true) => format!("{start:?}… ({} bytes)", input.len()),
    }
}

/// At most `max_chars` characters of a message built from peer input (a parser's
/// or the HTTP framework's), with `…` when it was cut.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match head(text, max_chars) {
        (all, false) => all.to_owned(),
        (start, true) => format!("{start}…"),
    }
}

fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks and trims a name (see the module docs); `what` names the field in errors.
pub fn name<'a>(what: &'static str, raw: &'a str) -> Result<&'a str, NameError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong {
            what,
            shown: quote(name),
            len: name.len(),
            max: MAX_NAME_BYTES,
        });
    }
    if let Some(c) = name.chars().find(|&c| c.is_control() || is_bidi_format(c)) {
        return Err(NameError::Forbidden {
            what,
            shown: quote(name),
            code: c as u32,
        });
    }
    Ok(name)
}

/// Checks free text: at most `max` bytes, no control characters but tab (and line
/// breaks when `multiline`). Not trimmed; may be empty.
pub fn text(what: &'static str, value: &str, max: usize, multiline: bool) -> Result<(), NameError> {
    if value.len() > max {
        return Err(NameError::TooLong {
            what,
            shown: quote(value),
            len: value.len(),
            max,
        });
    }
    let allowed = |c: char| c == '\t' || (multiline && (c == '\n' || c == '\r'));
    if let Some(c) = value.chars().find(|&c| c.is_control() && !allowed(c)) {
        return Err(NameError::Forbidden {
            what,
            shown: quote(value),
            code: c as u32,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(name("account", "  言士文学 "), Ok("言士文学"));
        assert_eq!(name("account", "a b"), Ok("a b"));
        assert!(matches!(
            name("account", " \t"),
            Err(NameError::Empty { .. })
        ));
        assert!(matches!(
            name("account", "a\0b"),
            Err(NameError::Forbidden { code: 0, .. })
        ));
        assert!(matches!(
            name("account", "a\u{202E}b"),
            Err(NameError::Forbidden { code: 0x202E, .. })
        ));
        assert!(matches!(
            name("account", "a\u{85}b"),
            Err(NameError::Forbidden { .. })
        ));
        assert_eq!(name("account", &"x".repeat(128)).map(str::len), Ok(128));
        assert!(matches!(
            name("account", &"x".repeat(129)),
            Err(NameError::TooLong { len: 129, .. })
        ));
    }

    #[test]
    fn errors_quote_a_short_prefix() {
        let long = "y".repeat(2_000_000);
        let msg = name("account", &long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains("2000000 bytes"));
        assert_eq!(quote("ab\"c"), r#""ab\"c""#);
    }

    #[test]
    fn text_allows_line_breaks_only_where_asked() {
        assert!(text("bulletin", "a\nb\tc", 10, true).is_ok());
        assert!(text("topicName", "a\nb", 10, false).is_err());
        assert!(text("topicName", "abc", 2, false).is_err());
        assert!(text("topicName", "", 2, false).is_ok());
    }
}
