//! Tests of the log as a whole, through its own modules: retention, damage.

mod compaction;
mod damage;
