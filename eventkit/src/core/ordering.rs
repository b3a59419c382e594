//! [`Ordering`]: which records of a consumer group may be handled at the same time.

use std::str::FromStr;

use crate::core::error::{Error, Result};

/// How a consumer group orders the records it handles concurrently.
///
/// Set it per handler (`#[handler(ordering = "partition")]`), per group
/// (`EVENTKIT_GROUP_ORDERING=billing=partition`, [`crate::AppBuilder::group_ordering`]) or for
/// the app (`EVENTKIT_ORDERING`, [`crate::AppBuilder::ordering`]). A group runs with the
/// strictest ordering any of its handlers asks for.
///
/// ```
/// use eventkit::Ordering;
/// assert_eq!("key".parse::<Ordering>().unwrap(), Ordering::Key);
/// assert!(Ordering::Partition.stricter_than(Ordering::Key));
/// assert_eq!(Ordering::None.to_string(), "none");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Records with the same Kafka key are handled one at a time, in offset order; records
    /// with different keys run concurrently. Records without a key are ordered with the
    /// other keyless records of their partition. The default.
    #[default]
    Key,
    /// One record at a time per partition; partitions run concurrently.
    Partition,
    /// Any order: every record may run as soon as a slot is free (idempotent handlers).
    None,
}

impl Ordering {
    /// The mode's name: `key`, `partition` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::Key => "key",
            Ordering::Partition => "partition",
            Ordering::None => "none",
        }
    }

    /// Whether `self` orders more records than `other` (partition > key > none).
    pub fn stricter_than(self, other: Ordering) -> bool {
        self.rank() > other.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Ordering::None => 0,
            Ordering::Key => 1,
            Ordering::Partition => 2,
        }
    }
}

impl std::fmt::Display for Ordering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ordering {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "key" => Ok(Ordering::Key),
            "partition" => Ok(Ordering::Partition),
            "none" | "unordered" => Ok(Ordering::None),
            other => Err(Error::Config(format!("unknown ordering {other:?}: expected key, partition or none"))),
        }
    }
}
