//! The terminal UI (ratatui over crossterm): browse one checkpoint or the difference of two.
//!
//! Built like trippy and gitui: the state ([`state`]) is plain data changed only by
//! [`state::Action`]s, so tests drive it without a terminal; [`events`] turns keys and
//! mouse into actions; each screen has one pure render function ([`overview`], [`layers`],
//! [`detail`], [`tensors`], [`help`]) over the reports of `audit`, which the UI presents
//! without computing numbers of its own; [`runner`] owns the terminal and [`jobs`] runs the
//! comparison off the UI thread.

pub mod detail;
pub mod events;
mod fault;
pub mod format;
pub mod help;
pub mod jobs;
pub mod layers;
pub mod layout;
pub mod model;
pub mod overview;
pub mod runner;
pub mod search;
pub mod session;
pub mod state;
pub mod tensors;
pub mod theme;
pub mod ui;

pub use runner::run;
pub use session::Session;
pub use state::{Action, App, Screen};
pub use theme::Theme;
