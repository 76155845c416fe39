//! The `bnaudit` binary: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bnaudit::cli::Cli::parse();
    match bnaudit::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("bnaudit: error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
