//! Fuzzy matching of names against the `/` query (nucleo's matcher, fzf-like syntax: words
//! separated by spaces must all match, `^`/`$` anchor, `'` for an exact substring).

use nucleo_matcher::pattern::{CaseMatching, Normalization, Pattern};
use nucleo_matcher::{Config, Matcher, Utf32Str};

/// A parsed query and the matcher's scratch space.
pub struct Fuzzy {
    matcher: Matcher,
    pattern: Pattern,
    buf: Vec<char>,
}

impl Fuzzy {
    /// Parses `query`; an empty query matches everything.
    pub fn new(query: &str) -> Fuzzy {
        Fuzzy {
            matcher: Matcher::new(Config::DEFAULT),
            pattern: Pattern::parse(query, CaseMatching::Smart, Normalization::Smart),
            buf: Vec::new(),
        }
    }

    /// Whether `name` matches.
    pub fn matches(&mut self, name: &str) -> bool {
        self.pattern
            .score(Utf32Str::new(name, &mut self.buf), &mut self.matcher)
            .is_some()
    }

    /// Character positions of `name` that the query matched, sorted, for highlighting.
    pub fn positions(&mut self, name: &str) -> Vec<usize> {
        let mut indices = Vec::new();
        self.pattern.indices(
            Utf32Str::new(name, &mut self.buf),
            &mut self.matcher,
            &mut indices,
        );
        indices.sort_unstable();
        indices.dedup();
        indices.into_iter().map(|i| i as usize).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzzy_subsequence_and_positions() {
        let mut f = Fuzzy::new("bb1bn");
        assert!(f.matches("backbone.layer1.0.bn1"));
        assert!(!f.matches("head.fc"));
        let mut f = Fuzzy::new("head");
        assert_eq!(f.positions("x.head"), vec![2, 3, 4, 5]);
        assert!(Fuzzy::new("").matches("anything"));
    }
}
