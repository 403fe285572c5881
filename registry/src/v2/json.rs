//! JSON output byte-compatible with Go's encoding/json (as used by etcd 3.4,
//! built with Go 1.19): compact, `<`, `>`, `&`, U+2028 and U+2029 escaped as
//! `\u00xx`/`\u20xx`, and control characters other than `\n`, `\r`, `\t`
//! written as `\u00xx` (Go 1.19 has no `\b` / `\f` short forms).

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};
use std::io;

/// serde_json formatter reproducing Go's string escaping.
#[derive(Default, Clone, Copy, Debug)]
pub struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let esc: Option<&[u8]> = match ch {
                '<' => Some(b"\\u003c"),
                '>' => Some(b"\\u003e"),
                '&' => Some(b"\\u0026"),
                '\u{2028}' => Some(b"\\u2028"),
                '\u{2029}' => Some(b"\\u2029"),
                // Go prints each invalid UTF-8 byte as \ufffd; request parsing
                // turned such bytes into U+FFFD, so print U+FFFD that way.
                '\u{fffd}' => Some(b"\\ufffd"),
                _ => None,
            };
            if let Some(esc) = esc {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                writer.write_all(esc)?;
                start = i + ch.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W>(&mut self, writer: &mut W, char_escape: CharEscape) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let s: &[u8] = match char_escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(b) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let buf = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ];
                return writer.write_all(&buf);
            }
        };
        writer.write_all(s)
    }
}

/// Serializes `value` exactly as Go's `json.Marshal` would (no trailing newline).
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value
        .serialize(&mut ser)
        .expect("serializing plain data to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go_1_19() {
        let s = "<a&b>\u{2028}\u{2029}\u{1}\u{8}\u{c}\u{7f}\"\\/\t\n\r";
        let out = String::from_utf8(to_go_json(s)).unwrap();
        // verified against etcd 3.4.23 output
        assert_eq!(
            out,
            "\"\\u003ca\\u0026b\\u003e\\u2028\\u2029\\u0001\\u0008\\u000c\u{7f}\\\"\\\\/\\t\\n\\r\""
        );
    }

    #[test]
    fn plain_unicode_untouched() {
        assert_eq!(to_go_json("héllo ☃"), "\"héllo ☃\"".as_bytes());
        assert_eq!(to_go_json("\u{fffd}x"), b"\"\\ufffdx\"");
    }
}
