//! The frozen scope of `check`: which tensors must not change.
//!
//! A pattern is a dot-separated module path: `*` matches within one segment, `**` any number
//! of segments (zero included), `[12]` a character class. A tensor is in a pattern's scope
//! when the pattern matches its name or any module prefix of it, so `backbone` covers every
//! `backbone.…` tensor but not `backbone2.…`. Keras and Flax names separate segments with
//! `/`; both `.` and `/` count as separators, in names and in patterns alike.

use std::sync::Mutex;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Serialize, Serializer};

/// A pattern that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {key} pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// Which list it came from: `frozen`, `trainable` or `allow_stats`.
    pub key: &'static str,
    /// The pattern as written.
    pub pattern: String,
    /// Why it is invalid.
    pub reason: String,
}

/// The separator globset treats literally; every `.` of names and patterns maps to it.
const SEP: char = '/';

fn is_separator(c: char) -> bool {
    c == '.' || c == '/'
}

/// `name` with every separator replaced by [`SEP`].
fn normalise(name: &str) -> String {
    name.chars()
        .map(|c| if is_separator(c) { SEP } else { c })
        .collect()
}

/// A list of patterns compiled into one matcher.
#[derive(Debug, Clone)]
pub struct Patterns {
    written: Vec<String>,
    set: GlobSet,
    last: LastModule,
}

/// The module path last asked about (normalised) and whether a pattern covers it: names
/// come sorted, so a module's tensors ask in a row and its prefixes are matched once, not
/// once per tensor (millions of glob matches in a large `check`).
#[derive(Debug, Default)]
struct LastModule(Mutex<Option<(String, bool)>>);

impl Clone for LastModule {
    fn clone(&self) -> Self {
        LastModule::default()
    }
}

impl Patterns {
    /// Compiles `patterns`, each a comma-separated list (`backbone,neck`, as `--frozen` and
    /// the configuration's lists take them); `key` names the list in errors.
    pub fn new(key: &'static str, patterns: &[String]) -> Result<Patterns, PatternError> {
        let patterns: Vec<String> = patterns
            .iter()
            .flat_map(|p| split_list(p))
            .map(str::to_owned)
            .collect();
        let mut builder = GlobSetBuilder::new();
        for p in &patterns {
            builder.add(compile(key, p)?);
        }
        let set = builder.build().map_err(|e| PatternError {
            key,
            pattern: patterns.join(", "),
            reason: e.to_string(),
        })?;
        Ok(Patterns {
            written: patterns,
            set,
            last: LastModule::default(),
        })
    }

    /// The patterns as written.
    pub fn as_slice(&self) -> &[String] {
        &self.written
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    /// Whether some pattern matches `name` or one of its module prefixes.
    pub fn covers(&self, name: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let name = normalise(name);
        let Some((module, _)) = name.rsplit_once(SEP) else {
            return self.set.is_match(&name);
        };
        self.set.is_match(&name) || self.covers_module(module)
    }

    /// Whether a pattern matches `module` (normalised) or one of its prefixes, remembered
    /// for the next call. A caller on another thread holding the memory just matches.
    fn covers_module(&self, module: &str) -> bool {
        let matches = || prefixes(module).any(|p| self.set.is_match(p));
        let Ok(mut last) = self.last.0.try_lock() else {
            return matches();
        };
        match &mut *last {
            Some((m, hit)) if m == module => *hit,
            Some((m, hit)) => {
                *hit = matches();
                m.clear();
                m.push_str(module);
                *hit
            }
            none => {
                let hit = matches();
                *none = Some((module.to_owned(), hit));
                hit
            }
        }
    }

    /// The patterns that cover none of `names`: a typo in a CI gate's scope must not pass
    /// silently.
    pub fn unmatched<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> Vec<&str> {
        let mut hit = vec![false; self.written.len()];
        let mut found = Vec::new();
        for name in names {
            if hit.iter().all(|&h| h) {
                break;
            }
            for prefix in prefixes(&normalise(name)) {
                self.set.matches_into(prefix, &mut found);
                for &i in &found {
                    hit[i] = true;
                }
            }
        }
        self.written
            .iter()
            .zip(hit)
            .filter(|(_, h)| !h)
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

impl Serialize for Patterns {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.written.serialize(s)
    }
}

/// Each module prefix of a normalised name, ending before a separator, then the name.
fn prefixes(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices(SEP)
        .map(|(i, _)| &name[..i])
        .chain(std::iter::once(name))
}

/// The patterns of a comma-separated list, blanks around them trimmed; a comma inside a
/// character class (`[1,2]`) or an alternation (`{a,b}`) belongs to its pattern.
fn split_list(list: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0usize;
    list.split(move |c| {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        c == ',' && depth == 0
    })
    .map(str::trim)
}

fn compile(key: &'static str, pattern: &str) -> Result<Glob, PatternError> {
    let invalid = |reason: String| PatternError {
        key,
        pattern: pattern.to_owned(),
        reason,
    };
    if pattern.is_empty() {
        return Err(invalid("the pattern is empty".into()));
    }
    if pattern.split(is_separator).any(str::is_empty) {
        return Err(invalid(
            "empty segment (a leading, trailing or doubled separator)".into(),
        ));
    }
    // globset reads `a**` as `a*`; DESIGN's `**` means whole segments only, so say so.
    if pattern
        .split(is_separator)
        .any(|seg| seg.contains("**") && seg != "**")
    {
        return Err(invalid(
            "`**` must be a whole segment (like `**.bn1` or `backbone.**`)".into(),
        ));
    }
    GlobBuilder::new(&normalise(pattern))
        .literal_separator(true)
        .build()
        .map_err(|e| invalid(e.kind().to_string()))
}

/// What `check` holds frozen.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    /// Tensors that must not change.
    pub frozen: Patterns,
    /// Carved out of `frozen`: allowed to change.
    pub trainable: Patterns,
    /// BatchNorm running statistics and counters allowed to move (their weights stay frozen).
    pub allow_stats: Patterns,
}

impl Scope {
    /// Compiles the three pattern lists.
    pub fn new(
        frozen: &[String],
        trainable: &[String],
        allow_stats: &[String],
    ) -> Result<Scope, PatternError> {
        Ok(Scope {
            frozen: Patterns::new("frozen", frozen)?,
            trainable: Patterns::new("trainable", trainable)?,
            allow_stats: Patterns::new("allow_stats", allow_stats)?,
        })
    }

    /// Whether the tensor `name` must stay unchanged: frozen and not carved out as trainable.
    pub fn is_frozen(&self, name: &str) -> bool {
        self.frozen.covers(name) && !self.trainable.covers(name)
    }

    /// Whether `name`, a BatchNorm running statistic or counter, may move.
    pub fn allows_stats(&self, name: &str) -> bool {
        self.allow_stats.covers(name)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn patterns(list: &[&str]) -> Patterns {
        let owned: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        Patterns::new("frozen", &owned).unwrap()
    }

    #[test]
    fn values_are_comma_separated_lists() {
        let p = patterns(&["backbone, neck", "teacher", "layer[1,2]", "{a,b}.bn"]);
        assert_eq!(
            p.as_slice(),
            ["backbone", "neck", "teacher", "layer[1,2]", "{a,b}.bn"]
        );
        assert!(p.covers("neck.bn.running_mean") && p.covers("layer2.weight"));
        // An empty item is a typo, not "no pattern".
        let err = Patterns::new("frozen", &["backbone,".to_owned()]).unwrap_err();
        assert_eq!(err.reason, "the pattern is empty");
    }

    #[test]
    fn literal_covers_the_module_and_its_descendants() {
        let p = patterns(&["backbone"]);
        assert!(p.covers("backbone"));
        assert!(p.covers("backbone.layer1.0.bn1.running_mean"));
        assert!(!p.covers("backbone2.layer1.weight"));
        assert!(!p.covers("head.backbone.weight"));
        let nested = patterns(&["backbone.layer1"]);
        assert!(nested.covers("backbone.layer1.0.conv1.weight"));
        assert!(!nested.covers("backbone.layer10.0.conv1.weight"));
        assert!(!nested.covers("backbone.stem.weight"));
    }

    #[test]
    fn star_stays_within_one_segment() {
        let p = patterns(&["backbone.*.bn1"]);
        assert!(p.covers("backbone.layer1.bn1.weight"));
        assert!(!p.covers("backbone.layer1.0.bn1.weight"));
        let partial = patterns(&["backbone.layer*"]);
        assert!(partial.covers("backbone.layer4.1.bn2.running_var"));
        assert!(!partial.covers("backbone.stem.bn.running_var"));
    }

    #[test]
    fn double_star_spans_any_number_of_segments() {
        let p = patterns(&["**.bn1"]);
        assert!(p.covers("bn1.weight"));
        assert!(p.covers("backbone.bn1.running_mean"));
        assert!(p.covers("backbone.layer1.0.bn1.num_batches_tracked"));
        assert!(!p.covers("backbone.layer1.0.bn2.weight"));
        assert!(!p.covers("backbone.layer1.0.bn10.weight"));
        let middle = patterns(&["backbone.**.bn2"]);
        assert!(middle.covers("backbone.bn2.weight"));
        assert!(middle.covers("backbone.layer3.1.bn2.weight"));
        assert!(!middle.covers("head.layer3.1.bn2.weight"));
        let tail = patterns(&["backbone.**"]);
        assert!(tail.covers("backbone.layer1.0.conv1.weight"));
        assert!(!tail.covers("backbone2.weight"));
    }

    #[test]
    fn character_class_matches_one_of_its_characters() {
        let p = patterns(&["backbone.layer[12]"]);
        assert!(p.covers("backbone.layer1.0.bn1.running_mean"));
        assert!(p.covers("backbone.layer2.1.conv2.weight"));
        assert!(!p.covers("backbone.layer3.0.bn1.running_mean"));
        assert!(!p.covers("backbone.layer12.0.bn1.running_mean"));
    }

    #[test]
    fn slash_and_dot_separators_are_interchangeable() {
        let p = patterns(&["backbone.block_1"]);
        assert!(p.covers("backbone/block_1/batch_normalization/moving_mean:0"));
        let flax = patterns(&["**/BatchNorm_0"]);
        assert!(flax.covers("batch_stats/backbone/BatchNorm_0/mean"));
        assert!(flax.covers("params.backbone.BatchNorm_0.scale"));
        let keras = patterns(&["*/block_1"]);
        assert!(!keras.covers("backbone/block_10/gamma:0"));
    }

    #[test]
    fn trainable_carves_out_of_frozen() {
        let scope = Scope::new(
            &["backbone".into()],
            &["backbone.layer4".into()],
            &["**.bn1".into()],
        )
        .unwrap();
        assert!(scope.is_frozen("backbone.layer3.0.conv1.weight"));
        assert!(!scope.is_frozen("backbone.layer4.0.conv1.weight"));
        assert!(!scope.is_frozen("head.fc.weight"));
        assert!(scope.allows_stats("backbone.layer1.0.bn1.running_var"));
        assert!(!scope.allows_stats("backbone.layer1.0.bn2.running_var"));
    }

    #[test]
    fn unmatched_patterns_are_listed() {
        let p = patterns(&["backbone", "backbon", "**.bn9", "head.*"]);
        let names = ["backbone.bn1.weight", "head.fc.bias"];
        assert_eq!(p.unmatched(names), vec!["backbon", "**.bn9"]);
        assert_eq!(p.unmatched([]).len(), 4);
    }

    #[test]
    fn invalid_patterns_are_named() {
        for bad in ["", "backbone.", ".backbone", "a..b", "layer[12", "a**.b"] {
            let err = Scope::new(&[], &[bad.to_owned()], &[]).unwrap_err();
            assert_eq!(err.key, "trainable");
            assert_eq!(err.pattern, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn scope_serialises_as_the_patterns_written() {
        let scope = Scope::new(&["backbone".into()], &[], &["**.bn1".into()]).unwrap();
        assert_eq!(
            serde_json::to_value(&scope).unwrap(),
            serde_json::json!({"frozen": ["backbone"], "trainable": [], "allow_stats": ["**.bn1"]})
        );
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_]{0,6}"
    }

    fn path() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(segment(), 1..5)
    }

    proptest! {
        #[test]
        fn a_literal_path_covers_itself_and_descendants(
            module in path(),
            rest in prop::collection::vec(segment(), 0..4),
        ) {
            let name = module.join(".");
            let p = patterns(&[&name]);
            prop_assert!(p.covers(&name));
            let mut child = module.clone();
            child.extend(rest);
            prop_assert!(p.covers(&child.join(".")));
            prop_assert!(p.covers(&child.join("/")));
        }

        #[test]
        fn a_literal_path_never_covers_a_sibling_with_a_shared_prefix(
            module in path(),
            suffix in "[a-z0-9_]{1,3}",
            leaf in segment(),
        ) {
            let p = patterns(&[&module.join(".")]);
            let mut sibling = module.clone();
            let last = sibling.len() - 1;
            sibling[last].push_str(&suffix);
            sibling.push(leaf);
            prop_assert!(!p.covers(&sibling.join(".")));
        }

        #[test]
        fn a_module_does_not_cover_its_parent(module in path(), leaf in segment()) {
            let mut child = module.clone();
            child.push(leaf);
            let p = patterns(&[&child.join(".")]);
            prop_assert!(!p.covers(&module.join(".")));
        }

        #[test]
        fn star_stands_for_any_one_segment(
            module in path(),
            at in any::<prop::sample::Index>(),
            other in segment(),
        ) {
            let i = at.index(module.len());
            let mut glob = module.clone();
            glob[i] = "*".into();
            let p = patterns(&[&glob.join(".")]);
            let mut name = module.clone();
            name[i] = other;
            prop_assert!(p.covers(&name.join(".")));
            // `*` alone never spans two segments: the module's parent is not covered.
            prop_assert!(!p.covers(&module[..module.len() - 1].join(".")) || module.len() == 1);
        }

        #[test]
        fn double_star_prefix_finds_a_module_at_any_depth(
            parents in prop::collection::vec(segment(), 0..4),
            module in segment(),
            leaf in segment(),
        ) {
            let p = patterns(&[&format!("**.{module}")]);
            let mut name = parents.clone();
            name.push(module.clone());
            name.push(leaf);
            prop_assert!(p.covers(&name.join(".")));
        }
    }
}
