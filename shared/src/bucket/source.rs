//! The sources a snapshot reads: [`SourceSpec`] is parsed in [`crate::core::source`], the one
//! parser of `SOURCE_BUCKETS` every program shares; re-exported here for the bucket domain.

pub use crate::core::source::{BadSource, SourceSpec};
