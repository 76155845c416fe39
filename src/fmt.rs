//! Formatting every layer may use: numbers, byte counts, value ranges, module paths, and
//! names made safe to print on a terminal.
//!
//! A leaf module (it imports nothing of the crate), so that `audit`, `report`, `tui` and `cli`
//! share one way of writing a number without depending on one another.

use std::borrow::Cow;

/// Formats a value compactly with about four significant digits, switching to scientific
/// notation for very small or large magnitudes.
pub fn num(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    } else {
        format!("{v:.3e}")
    }
}

/// Formats an optional value, `-` when absent.
pub fn opt_num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), num)
}

/// Formats a byte count with a binary unit.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `min..max` of optional bounds, `-` when there are none.
pub fn range(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (None, None) => "-".to_owned(),
        (min, max) => format!("{}..{}", opt_num(min), opt_num(max)),
    }
}

/// The top-level sub-model of a module path (`backbone` of `backbone.layer1.0.bn1`).
pub fn submodel(name: &str) -> &str {
    name.split(['.', '/']).next().unwrap_or(name)
}

/// `s` with every control and invisible formatting character written as a visible escape
/// (`\n`, `\e`, `\x07`, `\u{9b}`, `\u{202e}`, `\u{200b}`), for text meant for a terminal or
/// a Markdown page.
///
/// Names, paths and metadata come from the checkpoint's author: printed raw, an ANSI escape
/// in a tensor name retitles or clears the terminal, and a newline starts a line of its own
/// (in a CI log, one that GitHub Actions runs as a `::error` workflow command). Format
/// characters (Unicode category Cf: bidirectional overrides and isolates, zero-width spaces
/// and joiners, the byte-order mark, tags) and the line and paragraph separators are escaped
/// too: unseen, they make a name read as another, or two different names look the same.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unprintable) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Control characters (C0, DEL, C1), format characters (Cf) and the line and paragraph
/// separators (Zl, Zp).
fn unprintable(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    if c.is_ascii() {
        // Most names: no table look-up.
        return c.is_ascii_control();
    }
    matches!(
        c.general_category(),
        G::Control | G::Format | G::LineSeparator | G::ParagraphSeparator
    )
}

/// `n` and `noun`, with an `s` unless `n` is 1.
pub fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A tensor shape as `[5, 4]`, or `-` when absent.
pub fn shape(s: &Option<Vec<u64>>) -> String {
    s.as_ref().map_or_else(
        || "-".to_owned(),
        |s| {
            let dims: Vec<String> = s.iter().map(u64::to_string).collect();
            format!("[{}]", dims.join(", "))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(-0.012345), "-0.01235");
        assert_eq!(num(1234.5678), "1235");
        assert_eq!(num(1e-9), "1.000e-9");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(range(Some(-1.0), Some(2.5)), "-1..2.5");
        assert_eq!(range(None, None), "-");
        assert_eq!(submodel("backbone.layer1.0.bn1"), "backbone");
        assert_eq!(submodel("params/bn"), "params");
    }

    #[test]
    fn printable_escapes_every_control_character() {
        assert_eq!(printable("backbone.bn1"), "backbone.bn1");
        assert!(matches!(printable("bn.ü"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\u{1b}]0;pwned\u{7}\nb\r\t\u{7f}\u{9b}\u{202e}"),
            "a\\e]0;pwned\\x07\\nb\\r\\t\\x7f\\u{9b}\\u{202e}"
        );
        for c in (0..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let shown = printable(&c.to_string()).into_owned();
            assert!(!shown.chars().any(char::is_control), "{c:?} -> {shown:?}");
        }
    }

    /// Invisible characters that make a name read as another: bidirectional embeddings,
    /// overrides and isolates, zero-width characters, the byte-order mark, a soft hyphen, a
    /// language tag, the line separator. Visible non-ASCII letters stay as they are.
    #[test]
    fn printable_escapes_format_characters() {
        let invisible = [
            0x200b, 0x200c, 0x200d, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2060,
            0x2066, 0x2067, 0x2068, 0x2069, 0xfeff, 0xad, 0x61c, 0xe0041, 0x2028, 0x2029,
        ];
        for c in invisible.into_iter().filter_map(char::from_u32) {
            assert_eq!(
                printable(&format!("bn{c}1")),
                format!("bn\\u{{{:x}}}1", u32::from(c))
            );
        }
        assert_eq!(
            printable("backbone.\u{202e}1nb\u{202c}.weight"),
            "backbone.\\u{202e}1nb\\u{202c}.weight"
        );
        assert!(matches!(printable("ﾊﾞｯｸ.bn.Ω.層"), Cow::Borrowed(_)));
    }
}
