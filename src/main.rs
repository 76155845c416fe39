//! The `bnaudit` binary: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = bnaudit::cli::parse();
    match bnaudit::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("bnaudit: error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
