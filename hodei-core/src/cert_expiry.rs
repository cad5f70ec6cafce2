//! Certificate expiry, shared by the server ([`crate::tls`]) and the agent
//! (`hodei_agent::tls`): reading a certificate's end of validity, whole days
//! left, threshold warnings, and the `hodei_tls_certificate_days_to_expiry`
//! gauge.
//!
//! [`check`] is what both sides run at load and on every watcher tick: it
//! records the gauge and logs a warning each time a smaller threshold is
//! crossed (an error once expired), and returns the threshold now crossed so
//! the caller can pass it back next time.
//!
//! Agents report their own client certificate's days in every heartbeat; the
//! server records them with [`record_worker_days_to_expiry`], so one scrape of
//! the server's `/metrics` shows every certificate.
//!
//! ```
//! use hodei_core::cert_expiry::{CertificateExpiry, crossed_threshold};
//!
//! let key = rcgen::KeyPair::generate()?;
//! let pem = rcgen::CertificateParams::new(vec!["localhost".into()])?
//!     .self_signed(&key)?
//!     .pem();
//! let cert = CertificateExpiry::from_pem(pem.as_bytes())?;
//! assert!(cert.days_to_expiry() > 365);
//! assert_eq!(crossed_threshold(5, &[30, 7]), Some(7));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use x509_parser::pem::Pem;

/// Why a certificate's validity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertExpiryError {
    /// Not PEM, no PEM block, or a block that is not a `CERTIFICATE`.
    #[error("{0}")]
    Pem(String),
    /// A `CERTIFICATE` block that is not a valid X.509 certificate.
    #[error("{0}")]
    X509(String),
}

/// Who a certificate is, and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateExpiry {
    /// Subject distinguished name.
    pub subject: String,
    /// Serial, lowercase hex without leading zeros (`"0"` for zero).
    pub serial: String,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

impl CertificateExpiry {
    /// Reads a DER-encoded X.509 certificate.
    ///
    /// # Errors
    /// [`CertExpiryError::X509`] when it does not parse or its `notAfter` is
    /// out of range.
    pub fn from_der(der: &[u8]) -> Result<Self, CertExpiryError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertExpiryError::X509(format!("not an X.509 certificate: {e}")))?;
        let ts = cert.validity().not_after.timestamp();
        let not_after = DateTime::<Utc>::from_timestamp(ts, 0)
            .ok_or_else(|| CertExpiryError::X509(format!("notAfter {ts} is out of range")))?;
        Ok(Self {
            subject: cert.subject().to_string(),
            serial: serial_hex(cert.raw_serial()),
            not_after,
        })
    }

    /// Reads the first certificate (the leaf) of a PEM chain. Every block must
    /// be a `CERTIFICATE` that parses, so a truncated or mixed-up file is
    /// refused rather than half used.
    ///
    /// # Errors
    /// [`CertExpiryError::Pem`] for malformed PEM, no block, or a block of
    /// another kind; [`CertExpiryError::X509`] for a block that does not parse.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertExpiryError> {
        let mut first = None;
        for block in Pem::iter_from_buffer(pem) {
            let block = block.map_err(|e| CertExpiryError::Pem(e.to_string()))?;
            if block.label != "CERTIFICATE" {
                return Err(CertExpiryError::Pem(format!(
                    "expected CERTIFICATE blocks, found {:?}",
                    block.label
                )));
            }
            let parsed = Self::from_der(&block.contents)?;
            if first.is_none() {
                first = Some(parsed);
            }
        }
        first.ok_or_else(|| CertExpiryError::Pem("no PEM block found".to_owned()))
    }

    /// Whole days until the certificate expires, from now (negative once expired).
    #[must_use]
    pub fn days_to_expiry(&self) -> i64 {
        days_until(self.not_after, Utc::now())
    }

    /// Whether the certificate has expired.
    #[must_use]
    pub fn is_expired(&self) -> bool {
        self.not_after <= Utc::now()
    }
}

/// A raw big-endian serial as lowercase hex without leading zeros (`"0"` for zero).
#[must_use]
pub fn serial_hex(raw: &[u8]) -> String {
    let hex = hex::encode(raw);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Whole days from `now` until `not_after` (negative once past).
#[must_use]
pub fn days_until(not_after: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (not_after - now).num_days()
}

/// The smallest threshold (in days) that `days` is within, if any.
#[must_use]
pub fn crossed_threshold(days: i64, thresholds: &[u32]) -> Option<u32> {
    thresholds
        .iter()
        .copied()
        .filter(|t| days <= i64::from(*t))
        .min()
}

/// Records the gauge for `role` (the `certificate` label: `server`, `client`)
/// and logs a warning when a threshold smaller than `already` is crossed, or an
/// error when the certificate has expired (once per crossing). Returns the
/// threshold crossed now: pass it as `already` next time.
pub fn check(
    role: &str,
    cert: &CertificateExpiry,
    thresholds: &[u32],
    already: Option<u32>,
) -> Option<u32> {
    let days = cert.days_to_expiry();
    record_days_to_expiry(role, days);
    let crossed = crossed_threshold(days, thresholds);
    if cert.is_expired() {
        if already.is_none() || already != crossed {
            tracing::error!(
                certificate = role,
                subject = %cert.subject,
                not_after = %cert.not_after,
                "the {role} TLS certificate has expired"
            );
        }
    } else if let Some(t) = crossed
        && already.is_none_or(|a| t < a)
    {
        tracing::warn!(
            certificate = role,
            subject = %cert.subject,
            not_after = %cert.not_after,
            days_to_expiry = days,
            threshold_days = t,
            "the {role} TLS certificate expires soon: rotate it"
        );
    }
    crossed
}

/// One certificate's warning state across periodic checks and reloads: warns
/// once per newly crossed threshold, again after a reload brings a new
/// certificate.
#[derive(Debug)]
pub struct ExpiryTracker {
    role: String,
    thresholds: Vec<u32>,
    warned: Mutex<Option<u32>>,
}

impl ExpiryTracker {
    /// A tracker for the `role` certificate (`server`, `client`) warning at
    /// these thresholds (days).
    #[must_use]
    pub fn new(role: impl Into<String>, thresholds: Vec<u32>) -> Self {
        Self {
            role: role.into(),
            thresholds,
            warned: Mutex::new(None),
        }
    }

    /// Checks a newly loaded certificate: earlier warnings are forgotten.
    pub fn loaded(&self, cert: &CertificateExpiry) {
        let now = check(&self.role, cert, &self.thresholds, None);
        *self.lock() = now;
    }

    /// Checks the same certificate again (time passed): warns only when a
    /// smaller threshold was crossed since the last check.
    pub fn recheck(&self, cert: &CertificateExpiry) {
        let mut warned = self.lock();
        *warned = check(&self.role, cert, &self.thresholds, *warned);
    }

    /// The smallest threshold `days` is within, if any.
    #[must_use]
    pub fn crossed(&self, days: i64) -> Option<u32> {
        crossed_threshold(days, &self.thresholds)
    }

    fn lock(&self) -> MutexGuard<'_, Option<u32>> {
        self.warned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct Gauges {
    /// By `certificate` label (this process's own certificates).
    own: BTreeMap<String, i64>,
    /// By worker id (reported by agents in their heartbeats).
    workers: BTreeMap<String, i64>,
}

static GAUGES: Mutex<Gauges> = Mutex::new(Gauges {
    own: BTreeMap::new(),
    workers: BTreeMap::new(),
});

fn gauges() -> MutexGuard<'static, Gauges> {
    GAUGES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records the days to expiry of one of this process's certificates for
/// [`write_prometheus`] (`name` is the `certificate` label, e.g. `server`).
pub fn record_days_to_expiry(name: &str, days: i64) {
    gauges().own.insert(name.to_owned(), days);
}

/// Records the days to expiry of a worker's client certificate, as its agent
/// reported it.
pub fn record_worker_days_to_expiry(worker_id: &str, days: i64) {
    gauges().workers.insert(worker_id.to_owned(), days);
}

/// Forgets the workers for which `keep` is false (gone workers), so the gauge
/// does not grow with every worker that ever connected.
pub fn retain_workers(keep: impl Fn(&str) -> bool) {
    gauges().workers.retain(|id, _| keep(id));
}

/// Forgets one worker's certificate (its stream closed): the gauge shows the
/// connected workers' certificates.
pub fn forget_worker(worker_id: &str) {
    gauges().workers.remove(worker_id);
}

/// This process's recorded certificates and their days to expiry.
#[must_use]
pub fn recorded() -> BTreeMap<String, i64> {
    gauges().own.clone()
}

/// The workers' recorded days to expiry, by worker id.
#[must_use]
pub fn recorded_workers() -> BTreeMap<String, i64> {
    gauges().workers.clone()
}

/// Appends the gauge `hodei_tls_certificate_days_to_expiry` in Prometheus text
/// format: `{certificate="server"}` for this process's certificates and
/// `{certificate="worker",worker_id="..."}` for the workers' (nothing when none
/// is recorded).
pub fn write_prometheus(out: &mut String) {
    let (own, workers) = {
        let g = gauges();
        (g.own.clone(), g.workers.clone())
    };
    if own.is_empty() && workers.is_empty() {
        return;
    }
    out.push_str("# HELP hodei_tls_certificate_days_to_expiry Whole days until the certificate expires (negative once expired).\n");
    out.push_str("# TYPE hodei_tls_certificate_days_to_expiry gauge\n");
    for (name, days) in own {
        let _ = writeln!(
            out,
            "hodei_tls_certificate_days_to_expiry{{certificate=\"{}\"}} {days}",
            escape_label(&name)
        );
    }
    for (worker, days) in workers {
        let _ = writeln!(
            out,
            "hodei_tls_certificate_days_to_expiry{{certificate=\"worker\",worker_id=\"{}\"}} {days}",
            escape_label(&worker)
        );
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cert_valid_for(days: i64) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["t".into()]).unwrap();
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        params.not_before = (now - day).into();
        let ahead = day * u32::try_from(days).unwrap() + std::time::Duration::from_secs(3_600);
        params.not_after = (now + ahead).into();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0, 0, 0x3f, 0x9a]));
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn thresholds_pick_the_smallest_crossed() {
        assert_eq!(crossed_threshold(40, &[30, 7]), None);
        assert_eq!(crossed_threshold(30, &[30, 7]), Some(30));
        assert_eq!(crossed_threshold(10, &[30, 7]), Some(30));
        assert_eq!(crossed_threshold(3, &[30, 7]), Some(7));
        assert_eq!(crossed_threshold(-1, &[30, 7]), Some(7));
        assert_eq!(serial_hex(&[0, 0, 0x0a, 0xbc]), "abc");
        assert_eq!(serial_hex(&[0]), "0");
    }

    #[test]
    fn pem_parsing_and_days() {
        let pem = cert_valid_for(20);
        let c = CertificateExpiry::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(c.days_to_expiry(), 20);
        assert_eq!(c.serial, "3f9a");
        assert!(!c.is_expired());
        // A chain: the first is the leaf.
        let chain = format!("{pem}{}", cert_valid_for(400));
        assert_eq!(
            CertificateExpiry::from_pem(chain.as_bytes())
                .unwrap()
                .days_to_expiry(),
            20
        );
        assert!(matches!(
            CertificateExpiry::from_pem(b"not pem"),
            Err(CertExpiryError::Pem(_))
        ));
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(matches!(
            CertificateExpiry::from_pem(key.as_bytes()),
            Err(CertExpiryError::Pem(_))
        ));
        let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            CertificateExpiry::from_pem(bogus.as_bytes()),
            Err(CertExpiryError::X509(_))
        ));
    }

    #[test]
    fn check_records_the_gauge_and_returns_the_crossed_threshold() {
        let c = CertificateExpiry::from_pem(cert_valid_for(5).as_bytes()).unwrap();
        assert_eq!(check("unit-test", &c, &[30, 7], None), Some(7));
        assert_eq!(recorded().get("unit-test"), Some(&5));
        record_worker_days_to_expiry("w-gone", 3);
        record_worker_days_to_expiry("w-live", 40);
        retain_workers(|id| id != "w-gone");
        let mut out = String::new();
        write_prometheus(&mut out);
        assert!(
            out.contains("hodei_tls_certificate_days_to_expiry{certificate=\"unit-test\"} 5"),
            "{out}"
        );
        assert!(
            out.contains(
                "hodei_tls_certificate_days_to_expiry{certificate=\"worker\",worker_id=\"w-live\"} 40"
            ),
            "{out}"
        );
        assert!(!out.contains("w-gone"), "{out}");
    }
}
