//! The scheduling strategies by name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the scheduler orders the queue and places a job.
///
/// Every strategy first filters (preferred provider, eligibility, provider
/// status, capacity) and prefers an existing worker with a free slot over
/// provisioning a new one; the strategy only ranks what is left.
///
/// | strategy | queue order | worker chosen | provider chosen |
/// |---|---|---|---|
/// | `fifo` | oldest first | first idle (`Ready`) one, else first with a free slot | first in snapshot order |
/// | `priority` | priority with aging | first idle (`Ready`) one, else first with a free slot | first in snapshot order |
/// | `least_loaded` | priority with aging | most free slots, then most free cpu | largest share of free worker slots |
/// | `bin_packing` | priority with aging | tightest cpu/memory fit | tightest cpu/memory fit |
/// | `cost_aware` | priority with aging | cheapest provider's | cheapest per hour |
/// | `fastest_startup` | priority with aging | first idle one (an existing worker starts in zero time) | shortest estimated startup |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// First come, first served.
    Fifo,
    /// Highest effective priority first (priority plus aging).
    #[default]
    Priority,
    /// Spread work: the least loaded worker or provider.
    LeastLoaded,
    /// Pack work: the tightest fit on cpu and memory.
    BinPacking,
    /// The cheapest provider.
    CostAware,
    /// The shortest time to a running job.
    FastestStartup,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 6] = [
        Strategy::Fifo,
        Strategy::Priority,
        Strategy::LeastLoaded,
        Strategy::BinPacking,
        Strategy::CostAware,
        Strategy::FastestStartup,
    ];

    /// The snake_case name, as in configuration and JSON.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::Fifo => "fifo",
            Strategy::Priority => "priority",
            Strategy::LeastLoaded => "least_loaded",
            Strategy::BinPacking => "bin_packing",
            Strategy::CostAware => "cost_aware",
            Strategy::FastestStartup => "fastest_startup",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scheduling strategy {name:?} (expected one of fifo, priority, least_loaded, bin_packing, cost_aware, fastest_startup)"
)]
pub struct UnknownStrategy {
    /// The rejected name.
    pub name: String,
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    /// Case-insensitive; `-` and `_` are interchangeable (`least-loaded`, `LEAST_LOADED`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Strategy::ALL
            .into_iter()
            .find(|st| st.as_str() == norm)
            .ok_or_else(|| UnknownStrategy { name: s.to_owned() })
    }
}
