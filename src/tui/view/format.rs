//! Text helpers shared by the views: fitting names into cells, wrapping sentences, marking
//! search matches. Fitting and wrapping make their text [`printable`] first (ratatui drops
//! control characters only, and widths are those of what is shown): a name from a checkpoint
//! may hold escapes, bidirectional overrides or zero-width characters.

use ratatui::style::Style;
use ratatui::text::{Line, Span};

use crate::fmt::printable;

/// Display width of `s` in terminal columns.
pub fn width(s: &str) -> usize {
    textwrap::core::display_width(s)
}

/// Fits `s`, made printable, into `max` columns by cutting its middle: module paths keep
/// their sub-model (start) and their layer (end).
pub fn fit_middle(s: &str, max: usize) -> String {
    let s = printable(s);
    if width(&s) <= max {
        return s.into_owned();
    }
    if max <= 1 {
        return "…".chars().take(max).collect();
    }
    let chars: Vec<char> = s.chars().collect();
    let keep = max - 1;
    let head = keep / 3;
    let tail = keep - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// Fits `s`, made printable, into `max` columns by cutting its end (sentences).
pub fn fit_end(s: &str, max: usize) -> String {
    let s = printable(s);
    if width(&s) <= max {
        return s.into_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Wraps `text`, made printable, to `width` columns, indenting continuation lines by `indent`
/// spaces.
pub fn wrap(text: &str, width: usize, indent: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    let options = textwrap::Options::new(width.max(indent + 8)).subsequent_indent(&pad);
    textwrap::wrap(&printable(text), options)
        .into_iter()
        .map(|l| l.into_owned())
        .collect()
}

/// `text` wrapped to `width` columns (continuations indented by `indent`), as styled lines.
pub fn wrapped(text: &str, width: usize, indent: usize, style: Style) -> Vec<Line<'static>> {
    wrap(text, width, indent)
        .into_iter()
        .map(|l| Line::from(Span::styled(l, style)))
        .collect()
}

/// `name` as spans, the characters at `positions` in `matched` style.
pub fn highlighted(name: &str, positions: &[usize], base: Style, matched: Style) -> Line<'static> {
    if positions.is_empty() {
        return Line::from(Span::styled(name.to_owned(), base));
    }
    let mut spans = Vec::new();
    let mut run = String::new();
    let mut run_matched = false;
    for (i, c) in name.chars().enumerate() {
        let m = positions.binary_search(&i).is_ok();
        if m != run_matched && !run.is_empty() {
            let style = if run_matched { matched } else { base };
            spans.push(Span::styled(std::mem::take(&mut run), style));
        }
        run_matched = m;
        run.push(c);
    }
    let style = if run_matched { matched } else { base };
    spans.push(Span::styled(run, style));
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn middle_cut_keeps_both_ends() {
        assert_eq!(
            fit_middle("backbone.layer1.0.bn1", 30),
            "backbone.layer1.0.bn1"
        );
        let cut = fit_middle("backbone.layer1.0.bn1", 12);
        assert_eq!(width(&cut), 12);
        assert!(cut.starts_with("bac") && cut.ends_with(".bn1") && cut.contains('…'));
    }

    #[test]
    fn highlight_splits_runs() {
        let line = highlighted("abcd", &[1, 2], Style::new(), Style::new().bold());
        let parts: Vec<&str> = line.spans.iter().map(|s| s.content.as_ref()).collect();
        assert_eq!(parts, vec!["a", "bc", "d"]);
    }
}
