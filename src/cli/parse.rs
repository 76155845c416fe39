//! Parsing the command line, with a precise message for a mistyped subcommand.
//!
//! A bare `bnaudit A [B]` opens the UI, so `bnaudit chek A` would read `chek` as a
//! checkpoint and fail on a missing file; a first word that is no path and is close to a
//! subcommand's name is reported as the typo it is.

use std::ffi::OsString;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};

use super::{Cli, Format};

/// How close a word must be to a subcommand's name to be taken for a typo of it (Jaro
/// similarity; clap's own suggestions use 0.7, we ask for more since the word may be a file).
const TYPO_SIMILARITY: f64 = 0.8;

/// Parses `args` (program name first); on failure, the error clap would give, or the
/// "unknown command" error of a mistyped subcommand.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    if cli.command.is_none()
        && let Some(first) = cli.checkpoints.first().and_then(|p| p.to_str())
        && let Some(name) = mistyped_subcommand(&cmd, first)
    {
        return Err(cmd.error(
            ErrorKind::InvalidSubcommand,
            format!("unknown command '{first}'; did you mean '{name}'?"),
        ));
    }
    Ok(cli)
}

/// The subcommand `word` is a typo of: `word` is a plain word (no path separator or
/// extension), names no existing file, and is close to exactly one subcommand's name.
fn mistyped_subcommand(cmd: &clap::Command, word: &str) -> Option<String> {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !plain || std::fs::symlink_metadata(word).is_ok() {
        return None;
    }
    cmd.get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| (strsim::jaro(word, c.get_name()), c.get_name()))
        .filter(|(score, _)| *score >= TYPO_SIMILARITY)
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(_, name)| name.to_owned())
}

/// The command line as clap derives it, with `--format` offering only text and json outside
/// `check` (so help and errors list what each subcommand accepts).
pub fn command() -> clap::Command {
    let text_or_json = || {
        PossibleValuesParser::new([
            PossibleValue::new("text").help("For people"),
            PossibleValue::new("json").help("The JSON contract (schema_version 1)"),
        ])
        .map(|s| {
            if s == "json" {
                Format::Json
            } else {
                Format::Text
            }
        })
    };
    let mut cmd = Cli::command().mut_arg("format", |a| a.value_parser(text_or_json()));
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|n| n != "check" && n != "help")
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |c| {
            c.mut_arg("format", |a| a.value_parser(text_or_json()))
        });
    }
    cmd
}

/// Parses the process's arguments, exiting as clap does (status 2) on a usage error.
pub fn parse() -> Cli {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    #[test]
    fn list_options_take_one_value_per_occurrence_split_on_commas() {
        let cli = parse_from(["bnaudit", "explain", "--layer", "a.bn,b.bn", "A", "B"]);
        let Some(Command::Explain(args)) = cli.expect("parses").command else {
            panic!("explain");
        };
        assert_eq!(args.layers, ["a.bn", "b.bn"]);
        assert_eq!((args.a.to_str(), args.b.to_str()), (Some("A"), Some("B")));
        let cli = parse_from([
            "bnaudit", "check", "--frozen", "x", "A", "--frozen", "y", "B",
        ]);
        let Some(Command::Check(args)) = cli.expect("parses").command else {
            panic!("check");
        };
        // Patterns split on commas when compiled (`[1,2]` keeps its comma).
        assert_eq!(args.frozen, ["x", "y"]);
    }

    #[test]
    fn typos_of_subcommands_only() {
        let cmd = command();
        assert_eq!(mistyped_subcommand(&cmd, "chek").as_deref(), Some("check"));
        assert_eq!(mistyped_subcommand(&cmd, "difff").as_deref(), Some("diff"));
        assert_eq!(
            mistyped_subcommand(&cmd, "restor").as_deref(),
            Some("restore")
        );
        assert_eq!(
            mistyped_subcommand(&cmd, "explian").as_deref(),
            Some("explain")
        );
        // Paths, and words far from every name, are checkpoints.
        for word in ["chek.safetensors", "runs/chek", "pretrained", "", "src"] {
            assert_eq!(mistyped_subcommand(&cmd, word), None, "{word}");
        }
    }
}
