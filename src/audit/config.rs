//! `check`'s configuration file: `bnaudit.toml`, or `[tool.bnaudit]` in `pyproject.toml`.
//!
//! Both hold the lists `frozen`, `trainable` and `allow_stats`. Command-line patterns win
//! key by key, so a CI job can reuse a project's scope and override one list.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::checkpoint::Problem;
use crate::checkpoint::input::{self, MAX_CONFIG_LEN};

/// The file names looked for in the working directory, in order of preference.
pub const CONFIG_FILE: &str = "bnaudit.toml";
/// The Python project file whose `[tool.bnaudit]` table is read.
pub const PYPROJECT_FILE: &str = "pyproject.toml";

/// Pattern lists, each `None` when not given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopePatterns {
    /// Tensors that must not change.
    pub frozen: Option<Vec<String>>,
    /// Carved out of `frozen`.
    pub trainable: Option<Vec<String>>,
    /// BatchNorm statistics allowed to move.
    #[serde(alias = "allow-stats")]
    pub allow_stats: Option<Vec<String>>,
}

impl ScopePatterns {
    /// `self` (the command line) where it gives a list, `config` for the other keys.
    pub fn over(self, config: ScopePatterns) -> ScopePatterns {
        ScopePatterns {
            frozen: self.frozen.or(config.frozen),
            trainable: self.trainable.or(config.trainable),
            allow_stats: self.allow_stats.or(config.allow_stats),
        }
    }
}

/// A configuration file that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where it came from.
    pub path: PathBuf,
    /// Its patterns.
    pub patterns: ScopePatterns,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read: missing, not a regular file, or over
    /// [`MAX_CONFIG_LEN`] bytes.
    #[error("{}: cannot read configuration: {problem}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, not as a `source`: printing the chain would repeat it;
        /// boxed, as in `CheckpointError`).
        problem: Box<Problem>,
    },
    /// The file is not valid TOML or holds keys or values we do not know.
    #[error("{}{location}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `:line:column` of the offending text, when known.
        location: String,
        /// The parser's explanation, naming the key.
        message: String,
    },
    /// A `pyproject.toml` named by `--config` without a `[tool.bnaudit]` table.
    #[error("{}: no [tool.bnaudit] table", path.display())]
    NoTable {
        /// The file.
        path: PathBuf,
    },
}

fn is_pyproject(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == PYPROJECT_FILE)
}

/// Reads `path` whole, refusing pipes, devices and files over [`MAX_CONFIG_LEN`] bytes.
fn read(path: &Path) -> Result<String, ConfigError> {
    let bytes =
        input::read_small(path, "configuration file", MAX_CONFIG_LEN).map_err(|problem| {
            ConfigError::Read {
                path: path.to_owned(),
                problem: Box::new(problem),
            }
        })?;
    String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        location: String::new(),
        message: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// Parses `text`, read from `path`, reporting errors as one line with the position.
fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let location = e.span().map_or_else(String::new, |span| {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(":{line}:{column}")
        });
        ConfigError::Invalid {
            path: path.to_owned(),
            location,
            message: e.message().trim_end().to_owned(),
        }
    })
}

/// The part of pyproject.toml we read; other tables and keys belong to other tools.
#[derive(Deserialize)]
struct Pyproject {
    tool: Option<Tools>,
}

#[derive(Deserialize)]
struct Tools {
    bnaudit: Option<ScopePatterns>,
}

/// Reads the `[tool.bnaudit]` table of a pyproject.toml, `None` when it has none.
///
/// The file belongs to many tools: one that never mentions `bnaudit` is not ours to
/// validate, so a syntax error elsewhere in it (another tool's broken table) does not stop a
/// `check` that gets its scope from the command line.
fn pyproject(path: &Path) -> Result<Option<Config>, ConfigError> {
    let text = read(path)?;
    if !text.contains("bnaudit") {
        return Ok(None);
    }
    let doc: Pyproject = parse(path, &text)?;
    Ok(doc.tool.and_then(|t| t.bnaudit).map(|patterns| Config {
        path: path.to_owned(),
        patterns,
    }))
}

/// Reads the file `--config` names: a pyproject.toml's `[tool.bnaudit]` table, or any other
/// file's top level.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    if is_pyproject(path) {
        return pyproject(path)?.ok_or_else(|| ConfigError::NoTable {
            path: path.to_owned(),
        });
    }
    Ok(Config {
        path: path.to_owned(),
        patterns: parse(path, &read(path)?)?,
    })
}

/// Finds the configuration in `dir`: `bnaudit.toml`, else a `pyproject.toml` with a
/// `[tool.bnaudit]` table; `None` when there is neither.
pub fn discover(dir: &Path) -> Result<Option<Config>, ConfigError> {
    let own = dir.join(CONFIG_FILE);
    if own.exists() {
        return load(&own).map(Some);
    }
    let py = dir.join(PYPROJECT_FILE);
    if py.exists() {
        return pyproject(&py);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn bnaudit_toml_wins_over_pyproject() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(PYPROJECT_FILE),
            "[tool.bnaudit]\nfrozen = [\"encoder\"]\n",
        )
        .unwrap();
        let found = discover(dir.path()).unwrap().unwrap();
        assert_eq!(found.patterns.frozen, list(&["encoder"]));
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "frozen = [\"backbone\"]\nallow_stats = [\"**.bn1\"]\n",
        )
        .unwrap();
        let found = discover(dir.path()).unwrap().unwrap();
        assert_eq!(found.path, dir.path().join(CONFIG_FILE));
        assert_eq!(found.patterns.frozen, list(&["backbone"]));
        assert_eq!(found.patterns.allow_stats, list(&["**.bn1"]));
        assert_eq!(found.patterns.trainable, None);
    }

    #[test]
    fn pyproject_without_table_is_no_config() {
        let dir = tempfile::tempdir().unwrap();
        let py = dir.path().join(PYPROJECT_FILE);
        std::fs::write(&py, "[project]\nname = \"x\"\n").unwrap();
        assert_eq!(discover(dir.path()).unwrap(), None);
        assert!(matches!(load(&py), Err(ConfigError::NoTable { .. })));
        assert_eq!(discover(tempfile::tempdir().unwrap().path()).unwrap(), None);
    }

    #[test]
    fn unknown_keys_are_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join(CONFIG_FILE);
        std::fs::write(&own, "frozen = [\"backbone\"]\nfrozn = [\"head\"]\n").unwrap();
        let msg = load(&own).unwrap_err().to_string();
        assert!(
            msg.contains("bnaudit.toml:2:1: unknown field `frozn`"),
            "{msg}"
        );
        let py = dir.path().join(PYPROJECT_FILE);
        std::fs::write(&py, "[tool.bnaudit]\ntrainabel = []\n").unwrap();
        let msg = load(&py).unwrap_err().to_string();
        assert!(
            msg.contains("pyproject.toml:2:1: unknown field `trainabel`"),
            "{msg}"
        );
        std::fs::write(&own, "frozen = \"backbone\"\n").unwrap();
        let msg = load(&own).unwrap_err().to_string();
        assert!(
            msg.contains("bnaudit.toml:1:10: ") && msg.contains("sequence"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn command_line_wins_key_by_key() {
        let config = ScopePatterns {
            frozen: list(&["backbone"]),
            trainable: list(&["backbone.layer4"]),
            allow_stats: None,
        };
        let cli = ScopePatterns {
            frozen: list(&["encoder"]),
            ..ScopePatterns::default()
        };
        assert_eq!(
            cli.over(config),
            ScopePatterns {
                frozen: list(&["encoder"]),
                trainable: list(&["backbone.layer4"]),
                allow_stats: None,
            }
        );
    }
}
