//! CertificateManager against real certificates generated with rcgen.
#![allow(clippy::unwrap_used)] // test helpers

use std::path::Path;
use std::time::Duration;

use chrono::{Datelike, Utc};
use hodei_agent::tls::{CertificateManager, CertificatePaths, TlsError, TlsSettings};
use rcgen::{CertificateParams, KeyPair, date_time_ymd};

/// A self-signed certificate valid for `days` more days, as (cert PEM, key PEM).
fn cert_valid_for(days: i64, cn: &str) -> (String, String) {
    let end = Utc::now() + chrono::Duration::days(days) + chrono::Duration::hours(12);
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(
        end.year(),
        u8::try_from(end.month()).unwrap(),
        u8::try_from(end.day()).unwrap(),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write_set(dir: &Path, days: i64, cn: &str) -> CertificatePaths {
    let (cert, key) = cert_valid_for(days, cn);
    let (ca, _) = cert_valid_for(3650, "test-ca");
    let paths = CertificatePaths {
        client_cert_path: dir.join("client.crt"),
        client_key_path: dir.join("client.key"),
        ca_cert_path: dir.join("ca.crt"),
    };
    std::fs::write(&paths.client_cert_path, cert).unwrap();
    std::fs::write(&paths.client_key_path, key).unwrap();
    std::fs::write(&paths.ca_cert_path, ca).unwrap();
    paths
}

#[test]
fn expiry_is_computed_from_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 40, "worker-a");
    let m = CertificateManager::load(paths, TlsSettings::default()).unwrap();
    // The end date is rounded to midnight, so allow a day either way.
    let days = m.days_to_expiry();
    assert!((39..=41).contains(&days), "days_to_expiry = {days}");
    assert_eq!(m.expiry_warning(), None);
    assert!(m.certificate_info().subject.contains("worker-a"));

    let paths = write_set(dir.path(), 20, "worker-b");
    let m = CertificateManager::load(paths, TlsSettings::default()).unwrap();
    assert_eq!(m.expiry_warning(), Some(30));

    let paths = write_set(dir.path(), 3, "worker-c");
    let m = CertificateManager::load(paths, TlsSettings::default()).unwrap();
    assert_eq!(m.expiry_warning(), Some(7));
}

#[tokio::test]
async fn watcher_reloads_a_rotated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 40, "before-rotation");
    let mut settings = TlsSettings::default();
    settings.poll_interval = Duration::from_millis(50);
    let m = CertificateManager::load(paths.clone(), settings).unwrap();
    assert!(m.certificate_info().subject.contains("before-rotation"));
    // Unchanged files: no reload.
    assert!(!m.reload_if_changed().unwrap());

    let cancel = tokio_util::sync::CancellationToken::new();
    let watcher = m.spawn_watcher(cancel.clone());
    // Make sure the modification time moves even on coarse-grained filesystems.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (cert, key) = cert_valid_for(200, "after-rotation");
    std::fs::write(&paths.client_key_path, key).unwrap();
    std::fs::write(&paths.client_cert_path, cert).unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(&paths.client_cert_path)
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !m.certificate_info().subject.contains("after-rotation") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watcher did not reload the rotated certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(m.days_to_expiry() >= 199);
    cancel.cancel();
    watcher.await.unwrap();
}

#[test]
fn bad_pem_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 40, "x");
    std::fs::write(&paths.client_cert_path, "this is not a certificate").unwrap();
    let err = CertificateManager::load(paths.clone(), TlsSettings::default()).unwrap_err();
    assert!(matches!(err, TlsError::InvalidPem { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("client.crt") && msg.contains("not valid PEM"),
        "{msg}"
    );

    // A key file where the certificate should be.
    let key = std::fs::read_to_string(&paths.client_key_path).unwrap();
    std::fs::write(&paths.client_cert_path, &key).unwrap();
    let err = CertificateManager::load(paths.clone(), TlsSettings::default()).unwrap_err();
    assert!(err.to_string().contains("expected CERTIFICATE"), "{err}");

    // A missing file names the path.
    std::fs::remove_file(&paths.ca_cert_path).unwrap();
    let err = CertificateManager::load(paths, TlsSettings::default()).unwrap_err();
    assert!(matches!(err, TlsError::Io { .. }));
    assert!(err.to_string().contains("ca.crt"), "{err}");
}

#[test]
fn a_failed_reload_keeps_the_previous_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 40, "good");
    let m = CertificateManager::load(paths.clone(), TlsSettings::default()).unwrap();
    std::fs::write(&paths.client_cert_path, "garbage").unwrap();
    assert!(m.reload().is_err());
    assert!(m.certificate_info().subject.contains("good"));
}
