//! The `bnaudit` binary: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any file is mapped: a checkpoint that shrinks under its map is an input error.
    bnaudit::checkpoint::fault::exit_on_fault("bnaudit: error: ");
    let cli = bnaudit::cli::parse();
    match bnaudit::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            // One line, whatever names the message quotes from the checkpoint.
            let message = format!("{:#}", failure.error);
            eprintln!("bnaudit: error: {}", bnaudit::fmt::printable(&message));
            ExitCode::from(failure.code)
        }
    }
}

/// mimalloc rather than the system allocator: opening a big checkpoint allocates tens of
/// thousands of small names and shapes, and listing it thousands of small value vectors on
/// two threads; mimalloc takes about a sixth less CPU time for `ls` on a 20,000-tensor
/// checkpoint (benches/ls_bench.sh), mostly in allocation, freeing and page faults.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
