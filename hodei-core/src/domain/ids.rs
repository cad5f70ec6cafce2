//! Identifiers: UUID newtypes, so a job id can never be passed where a worker id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Error returned when a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {value:?} is not a UUID")]
pub struct InvalidId {
    /// Which kind of id was expected (`job id`, `worker id`, …).
    pub kind: &'static str,
    /// The rejected input.
    pub value: String,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random (v4) id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an existing UUID.
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// Parses an id, naming the kind of id in the error.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                s.parse()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| InvalidId {
                    kind: $kind,
                    value: s.to_owned(),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

uuid_id!(
    /// Identifies a job.
    JobId,
    "job id"
);
uuid_id!(
    /// Identifies a worker (one agent instance).
    WorkerId,
    "worker id"
);
uuid_id!(
    /// Identifies a registered provider.
    ProviderId,
    "provider id"
);
uuid_id!(
    /// Ties together everything that happened because of one request, across server and agent.
    CorrelationId,
    "correlation id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = JobId::new();
        let parsed: JobId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
    }

    #[test]
    fn bad_id_names_its_kind() {
        let err = WorkerId::parse("nope").unwrap_err();
        assert_eq!(err.kind, "worker id");
        assert!(err.to_string().contains("worker id"));
    }

    #[test]
    fn serde_is_a_plain_string() {
        let id = ProviderId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: ProviderId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
