//! The terminal UI (ratatui over crossterm): browse one checkpoint or the difference of two.
//!
//! Built like trippy and gitui. What decides sits here: the state ([`state`]) is plain data
//! changed only by [`state::Action`]s, so tests drive it without a terminal; [`events`] turns
//! keys and mouse into actions; [`model`] joins the reports of `audit` into rows; [`runner`]
//! owns the terminal and [`jobs`] runs the comparison off the UI thread. What draws sits in
//! [`view`]: one pure render function per screen and panel ([`view::overview`],
//! [`view::layers`], [`view::detail`], [`view::tensors`], [`view::help`]) over those reports,
//! which the UI presents without computing numbers of its own.

pub mod events;
mod fault;
pub mod jobs;
pub mod layout;
pub mod model;
pub mod restore;
pub mod runner;
pub mod search;
pub mod session;
pub mod state;
pub mod theme;
pub mod view;

pub use runner::run;
pub use session::Session;
pub use state::{Action, App, Screen};
pub use theme::Theme;
