//! Job secrets are stored only sealed: a dump of the store never shows them.

use hodei_core::control::{ControlPlane, SecretSealer};
use hodei_core::store::JobFilter;
use hodei_core::{CommandType, JobSpec};

#[tokio::test]
async fn the_store_never_holds_a_secret_in_plaintext() {
    const CANARY: &str = "canary-0b5e-plaintext";
    let cp = ControlPlane::builder()
        .secrets(SecretSealer::new([42; 32]))
        .build();
    let spec = JobSpec::new("s", CommandType::shell("true", Vec::<String>::new()))
        .with_secret("TOKEN", CANARY);
    let job = cp.create_job(spec, None).await.unwrap();
    let stored = cp.stores().jobs.list(&JobFilter::default()).await.unwrap();
    let dump = serde_json::to_string(&stored).unwrap();
    assert!(dump.contains("TOKEN"), "the name is kept");
    assert!(!dump.contains(CANARY), "the value is sealed: {dump}");
    assert!(SecretSealer::is_sealed(&stored[0].spec().secrets["TOKEN"]));
    // And the key opens it again (what the worker gets).
    let opened = SecretSealer::new([42; 32])
        .open(&cp.get_job(job.id()).await.unwrap().spec().secrets)
        .unwrap();
    assert_eq!(opened["TOKEN"], CANARY);
    assert!(!format!("{job:?}").contains(CANARY));
}
