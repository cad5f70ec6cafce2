//! What an operator pays a provider for resources: the price the
//! `cost_aware` strategy ranks providers by, for each job's own resources.

use serde::{Deserialize, Serialize};

use crate::domain::spec::JobResources;

/// A linear price per resource-hour. Set per provider
/// (`price_per_cpu_hour`, `price_per_gib_hour` in its configuration); a
/// provider without one is priced by its own estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ResourcePricing {
    /// Price of one CPU core for one hour.
    #[serde(default)]
    pub price_per_cpu_hour: f64,
    /// Price of one GiB of memory for one hour.
    #[serde(default)]
    pub price_per_gib_hour: f64,
}

/// A price that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: must be a finite number >= 0")]
pub struct InvalidPrice {
    /// `price_per_cpu_hour` or `price_per_gib_hour`.
    pub field: &'static str,
}

impl ResourcePricing {
    /// A price per CPU-hour and per GiB-hour.
    ///
    /// # Errors
    /// [`InvalidPrice`] naming the field for a negative, NaN or infinite price.
    pub fn new(price_per_cpu_hour: f64, price_per_gib_hour: f64) -> Result<Self, InvalidPrice> {
        let p = Self {
            price_per_cpu_hour,
            price_per_gib_hour,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks both prices are finite and not negative.
    ///
    /// # Errors
    /// [`InvalidPrice`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidPrice> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.price_per_cpu_hour) {
            return Err(InvalidPrice {
                field: "price_per_cpu_hour",
            });
        }
        if !ok(self.price_per_gib_hour) {
            return Err(InvalidPrice {
                field: "price_per_gib_hour",
            });
        }
        Ok(())
    }

    /// The hourly price of running a job with these resources.
    #[must_use]
    pub fn cost_per_hour(&self, r: &JobResources) -> f64 {
        r.cpu_cores * self.price_per_cpu_hour
            + r.memory_mb as f64 / 1024.0 * self.price_per_gib_hour
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_the_job_resources() {
        let p = ResourcePricing::new(0.04, 0.005).unwrap();
        let r = JobResources {
            cpu_cores: 2.0,
            memory_mb: 4096,
            ..JobResources::default()
        };
        assert!((p.cost_per_hour(&r) - (0.08 + 0.02)).abs() < 1e-12);
        assert_eq!(
            ResourcePricing::new(-1.0, 0.0).unwrap_err().field,
            "price_per_cpu_hour"
        );
        assert_eq!(
            ResourcePricing::new(0.0, f64::NAN).unwrap_err().field,
            "price_per_gib_hour"
        );
    }
}
