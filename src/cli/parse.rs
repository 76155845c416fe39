//! Parsing the command line, with a precise message for `check --frozen PATTERN... A B`.
//!
//! `--frozen`, `--trainable` and `--allow-stats` take several patterns each (DESIGN), so
//! clap gives them every following word, checkpoints included, and then reports A and B as
//! missing. That message hides the cause; this one names the swallowed words and prints the
//! corrected command line.

use std::ffi::OsString;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::{Cli, Format};

/// The pattern-list options of `check`, as clap ids and flags.
const PATTERN_LISTS: [(&str, &str); 3] = [
    ("frozen", "--frozen"),
    ("trainable", "--trainable"),
    ("allow_stats", "--allow-stats"),
];

/// Parses `args` (program name first); on failure, the error clap would give, or the
/// explanation of a pattern list that swallowed A and B.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = command();
    match cmd.try_get_matches_from_mut(&args) {
        Ok(matches) => Cli::from_arg_matches(&matches),
        Err(e) if e.kind() == ErrorKind::MissingRequiredArgument => {
            let explained = ["check", "restore"]
                .into_iter()
                .find_map(|sub| swallowed_checkpoints(&mut cmd, &args, sub));
            Err(explained.unwrap_or(e))
        }
        Err(e) => Err(e),
    }
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
    let mut cmd = Cli::command()
        .mut_arg("format", |a| a.value_parser(text_or_json()))
        .mut_subcommand("restore", |c| {
            c.mut_arg("output", |a| {
                a.required(true)
                    .help("The restored checkpoint to write (a safetensors file, atomically)")
            })
        });
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

/// When the A or B of `sub` (`check` or `restore`) are missing because a pattern list took
/// them, the error that says so (with `cmd`'s usage of `sub`); `None` for any other cause.
fn swallowed_checkpoints(
    cmd: &mut clap::Command,
    args: &[OsString],
    sub: &str,
) -> Option<clap::Error> {
    // The same command with A and B optional shows what each list received.
    let mut relaxed = command().mut_subcommand(sub, |c| {
        c.mut_arg("a", |a| a.required(false))
            .mut_arg("b", |a| a.required(false))
    });
    let matches = relaxed.try_get_matches_from_mut(args).ok()?;
    let check = matches.subcommand_matches(sub)?;
    let missing = usize::from(!check.contains_id("a")) + usize::from(!check.contains_id("b"));
    // Values in command-line order, each with its flag and whether it opened its list
    // (that one is a pattern for sure: every list needs one).
    let mut values: Vec<(usize, &str, bool, String)> = PATTERN_LISTS
        .iter()
        .filter(|(id, _)| check.try_contains_id(id).is_ok())
        .flat_map(|&(id, flag)| list_values(check, id, flag))
        .collect();
    values.sort_by_key(|v| v.0);
    let taken = values.get(values.len().checked_sub(missing)?..)?;
    if missing == 0 || taken.iter().any(|v| v.2) {
        return None;
    }
    let mut flags: Vec<&str> = taken.iter().map(|v| v.1).collect();
    flags.dedup();
    let names: Vec<String> = taken.iter().map(|v| format!("'{}'", v.3)).collect();
    let mut msg = format!(
        "{} missing: {} every following word as a pattern, so it took {}",
        if missing == 2 {
            "<A> and <B> are"
        } else {
            "<B> is"
        },
        match flags.as_slice() {
            [one] => format!("`{one}` takes"),
            _ => format!("`{}` take", flags.join("` and `")),
        },
        names.join(" and "),
    );
    let a = check
        .get_one::<std::path::PathBuf>("a")
        .and_then(|p| p.to_str());
    if let Some((first, end)) = corrected(args, sub, a, taken.iter().map(|v| v.3.as_str())) {
        msg.push_str(&format!(
            "\n\n  tip: give the checkpoints first: bnaudit {sub} {first}\
             \n  tip: or end the pattern list with `--`: bnaudit {sub} {end}"
        ));
    }
    let check_cmd = cmd.find_subcommand_mut(sub)?;
    Some(check_cmd.error(ErrorKind::MissingRequiredArgument, msg))
}

/// The values of one pattern list: (index, flag, first of its occurrence, value).
fn list_values<'m>(
    m: &'m ArgMatches,
    id: &str,
    flag: &'m str,
) -> impl Iterator<Item = (usize, &'m str, bool, String)> + 'm {
    let indices: Vec<usize> = m.indices_of(id).into_iter().flatten().collect();
    let firsts: Vec<bool> = m
        .get_occurrences::<String>(id)
        .into_iter()
        .flatten()
        .flat_map(|occ| occ.enumerate().map(|(i, _)| i == 0).collect::<Vec<_>>())
        .collect();
    let values: Vec<String> = m
        .get_many::<String>(id)
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    indices
        .into_iter()
        .zip(firsts)
        .zip(values)
        .map(move |((i, first), v)| (i, flag, first, v))
}

/// The two corrected argument lists of `sub`, as the user typed them: the checkpoints
/// first, and the patterns ended by `--`. `a` is the A given as a positional, if any;
/// `None` when the arguments are not plain UTF-8 words.
fn corrected<'a>(
    args: &[OsString],
    sub: &str,
    a: Option<&str>,
    taken: impl Iterator<Item = &'a str>,
) -> Option<(String, String)> {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    let start = words.iter().position(|w| w == sub)? + 1;
    let mut rest: Vec<String> = words[start..].to_vec();
    let mut swallowed = Vec::new();
    // Remove each swallowed word at its last occurrence, the one clap gave the list.
    for t in taken.collect::<Vec<_>>().into_iter().rev() {
        let at = rest.iter().rposition(|w| w == t)?;
        swallowed.push(rest.remove(at));
    }
    swallowed.reverse();
    let join = |words: &[String]| {
        words
            .iter()
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let end = format!("{} -- {}", join(&rest), join(&swallowed));
    let mut first: Vec<String> = Vec::new();
    if let Some(a) = a {
        let at = rest.iter().position(|w| w == a)?;
        first.push(rest.remove(at));
    }
    first.extend(swallowed);
    first.extend(rest);
    Some((join(&first), end))
}

/// `w` quoted for a POSIX shell when it holds anything but safe characters.
fn shell_word(w: &str) -> String {
    let safe = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if safe {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}
