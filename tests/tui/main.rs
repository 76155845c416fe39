//! Tests of the terminal UI: snapshots of every screen (ratatui's TestBackend), key
//! sequences on the pure state, and one end-to-end run of the real binary in tmux.

mod cli;
mod escaping;
mod harness;
mod keys;
mod snapshots;
mod terminal;
#[path = "../writer/mod.rs"]
mod writer;
