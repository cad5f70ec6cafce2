//! The [`TemplateStore`] conformance cases, part of
//! [`run_store_conformance`](super::stores::run_store_conformance): versions
//! numbered per name from 1, every version readable, the latest listed, and
//! concurrent saves of one name given distinct versions.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use crate::domain::spec::{CommandType, JobSpec};
use crate::domain::template::{JobTemplate, ParameterType, TemplateParameter};
use crate::store::TemplateStore;

#[track_caller]
fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("store conformance: {what}: unexpected error {e:?}"),
    }
}

fn template(name: &str, echo: &str) -> JobTemplate {
    JobTemplate::new(
        name,
        JobSpec::new(
            format!("{name} {{{{who}}}}"),
            CommandType::shell("echo", [echo, "{{who}}"]),
        )
        .with_env("N", "{{n}}"),
        vec![
            TemplateParameter::string("who")
                .with_default("world")
                .with_description("whom to greet"),
            TemplateParameter::new("n", ParameterType::Integer),
            TemplateParameter::new("mode", ParameterType::Enum).with_values(["a", "b"]),
        ],
    )
    .with_description(format!("{name} template"))
}

/// Every [`TemplateStore`] case. `make` returns a fresh, empty store.
pub async fn template_store_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn TemplateStore>>,
{
    versions_per_name(make().await).await;
    list_latest(make().await).await;
    concurrent_saves(make().await).await;
}

async fn versions_per_name(store: Arc<dyn TemplateStore>) {
    let c = "templates/versions";
    assert_eq!(
        ok(store.get("greet", None).await, c),
        None,
        "{c}: unknown name"
    );
    assert!(
        ok(store.versions("greet").await, c).is_empty(),
        "{c}: no versions yet"
    );
    // The version a caller sets is not the store's business.
    let v1 = ok(
        store.save(&template("greet", "one").with_version(7)).await,
        c,
    );
    assert_eq!(v1.version(), 1, "{c}: first save is version 1");
    let v2 = ok(store.save(&template("greet", "two")).await, c);
    assert_eq!(v2.version(), 2, "{c}: second save is version 2");
    let other = ok(store.save(&template("other", "x")).await, c);
    assert_eq!(other.version(), 1, "{c}: versions are per name");

    let latest = ok(store.get("greet", None).await, c);
    assert_eq!(
        latest.as_ref(),
        Some(&v2),
        "{c}: latest is version 2, whole"
    );
    let first = ok(store.get("greet", Some(1)).await, c);
    assert_eq!(first.as_ref(), Some(&v1), "{c}: version 1 kept, whole");
    let first = first.unwrap_or_else(|| panic!("{c}: version 1"));
    assert_eq!(
        first.spec().command,
        CommandType::shell("echo", ["one", "{{who}}"]),
        "{c}: version 1's spec"
    );
    assert_eq!(first.parameters().len(), 3, "{c}: parameters stored");
    assert_eq!(first.parameters()[2].values, ["a", "b"], "{c}: enum values");
    assert_eq!(
        first.description(),
        Some("greet template"),
        "{c}: description"
    );
    assert_eq!(
        ok(store.get("greet", Some(3)).await, c),
        None,
        "{c}: no version 3"
    );
    assert_eq!(
        ok(store.get("greet", Some(0)).await, c),
        None,
        "{c}: no version 0"
    );
    assert_eq!(
        ok(store.versions("greet").await, c),
        [1, 2],
        "{c}: versions"
    );
}

async fn list_latest(store: Arc<dyn TemplateStore>) {
    let c = "templates/list";
    assert!(ok(store.list().await, c).is_empty(), "{c}: empty store");
    for (name, echo) in [("b", "1"), ("a", "1"), ("b", "2"), ("c", "1"), ("b", "3")] {
        ok(store.save(&template(name, echo)).await, c);
    }
    let listed: Vec<(String, u32)> = ok(store.list().await, c)
        .iter()
        .map(|t| (t.name().to_owned(), t.version()))
        .collect();
    assert_eq!(
        listed,
        [("a".into(), 1), ("b".into(), 3), ("c".into(), 1)],
        "{c}: the latest version of each, by name"
    );
}

async fn concurrent_saves(store: Arc<dyn TemplateStore>) {
    let c = "templates/concurrent-saves";
    let saves = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.save(&template("race", &i.to_string())).await })
    });
    let mut versions = BTreeSet::new();
    for s in saves {
        let saved = ok(ok(s.await, c), c);
        assert!(
            versions.insert(saved.version()),
            "{c}: version {} given twice",
            saved.version()
        );
    }
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>(),
        "{c}: eight saves are versions 1..=8"
    );
    assert_eq!(
        ok(store.versions("race").await, c),
        (1..=8).collect::<Vec<_>>(),
        "{c}"
    );
}
