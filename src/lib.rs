//! Herald, a self-hosted webhook delivery engine.
//!
//! Module map:
//! - [`model`]: identifiers and the domain's nouns.
//! - [`log`]: the append-only sled log, its projection, group commit, compaction, recovery.

pub mod log;
pub mod model;
