//! Renderers of audit reports: text for people, JSON for scripts (and, for `check`, CI
//! formats). One module per format; none computes anything the report does not hold.

pub mod github;
pub mod json;
pub mod junit;
pub mod markdown;
mod style;
pub mod text;

pub use style::Style;
