//! Unit tests of the factory's mapping from the domain configuration.

use std::collections::BTreeMap;

use hodei_core::control::{ControlError, PoolPolicy, ProviderFactory, ProviderRequest};
use hodei_core::domain::provider::ProviderConfig;
use hodei_core::store::Stores;

use super::*;

fn factory() -> BundledProviderFactory {
    BundledProviderFactory::new(
        PoolPolicy::default().max_workers(3),
        Stores::in_memory().workers,
    )
}

fn field_of(r: Result<TypedConfig, FactoryError>) -> String {
    match r {
        Err(FactoryError::InvalidField { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

fn custom(pairs: &[(&str, &str)]) -> ProviderConfig {
    ProviderConfig::Custom {
        settings: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn bare_metal_maps_to_a_process_provider_with_name_limit_and_agent() {
    let f = factory();
    let c = ProviderConfig::BareMetal {
        agent_binary: Some("/bin/sh".into()),
        hosts: vec![],
    };
    let TypedConfig::Process(p) = f.typed_config("local-2", &c, Some(5)).unwrap() else {
        panic!("not a process config");
    };
    assert_eq!(p.name, "local-2");
    assert_eq!(p.max_workers, 5);
    assert_eq!(
        p.agent_binary.as_deref(),
        Some(std::path::Path::new("/bin/sh"))
    );
    // Without a limit: the factory's pool default.
    let none = ProviderConfig::BareMetal {
        agent_binary: None,
        hosts: vec![],
    };
    assert_eq!(f.typed_config("p", &none, None).unwrap().max_workers(), 3);
}

#[test]
fn bare_metal_errors_name_their_field() {
    let f = factory();
    let remote = ProviderConfig::BareMetal {
        agent_binary: None,
        hosts: vec!["10.0.0.2".into()],
    };
    assert_eq!(field_of(f.typed_config("p", &remote, None)), "config.hosts");
    let missing = ProviderConfig::BareMetal {
        agent_binary: Some("/nonexistent/hodei-worker".into()),
        hosts: vec![],
    };
    assert_eq!(
        field_of(f.typed_config("p", &missing, None)),
        "config.agent_binary"
    );
    let none = ProviderConfig::BareMetal {
        agent_binary: None,
        hosts: vec![],
    };
    assert_eq!(field_of(f.typed_config("p", &none, Some(0))), "max_workers");
}

#[test]
fn docker_maps_image_host_and_network() {
    let f = factory();
    let c = ProviderConfig::Docker {
        image: " hodei-worker:1.2 ".into(),
        docker_host: Some("tcp://10.1.1.1:2375".into()),
        network: Some("host".into()),
    };
    let TypedConfig::Docker(d) = f.typed_config("gpu-box", &c, None).unwrap() else {
        panic!("not a docker config");
    };
    assert_eq!(d.name, "gpu-box");
    assert_eq!(d.image, "hodei-worker:1.2");
    assert_eq!(d.docker_host.as_deref(), Some("tcp://10.1.1.1:2375"));
    assert_eq!(d.network_mode, NetworkMode::Host);
    assert_eq!(d.max_workers, 3);
    // Back to the domain form and again: the same.
    let again = TypedConfig::Docker(d.clone()).to_provider_config();
    let TypedConfig::Docker(d2) = f.typed_config("gpu-box", &again, None).unwrap() else {
        panic!("not a docker config");
    };
    assert_eq!(d2.image, d.image);
    assert_eq!(d2.network_mode, d.network_mode);
}

#[test]
fn docker_errors_name_their_field() {
    let f = factory();
    let no_image = ProviderConfig::Docker {
        image: "  ".into(),
        docker_host: None,
        network: None,
    };
    assert_eq!(
        field_of(f.typed_config("d", &no_image, None)),
        "config.image"
    );
    let bad_host = ProviderConfig::Docker {
        image: "hodei-worker:latest".into(),
        docker_host: Some("ftp://x".into()),
        network: None,
    };
    assert_eq!(
        field_of(f.typed_config("d", &bad_host, None)),
        "config.docker_host"
    );
}

#[test]
fn kubernetes_applies_over_the_base_and_refuses_a_bad_toleration() {
    let f = factory();
    let c = ProviderConfig::Kubernetes {
        namespace: "ci".into(),
        kubeconfig: None,
        image: "registry/hodei-worker:2".into(),
        labels: BTreeMap::new(),
        node_selector: [("pool".to_owned(), "ci".to_owned())].into(),
        tolerations: vec!["gpu=yes:NoSchedule".into()],
    };
    let TypedConfig::Kubernetes(k) = f.typed_config("k8s-ci", &c, Some(7)).unwrap() else {
        panic!("not a kubernetes config");
    };
    assert_eq!(k.name, "k8s-ci");
    assert_eq!(k.namespace, "ci");
    assert_eq!(k.image, "registry/hodei-worker:2");
    assert_eq!(k.max_workers, 7);
    assert_eq!(k.node_selector.get("pool").map(String::as_str), Some("ci"));
    assert_eq!(k.tolerations.len(), 1);
    let bad = ProviderConfig::Kubernetes {
        namespace: "ci".into(),
        kubeconfig: None,
        image: "x".into(),
        labels: BTreeMap::new(),
        node_selector: BTreeMap::new(),
        tolerations: vec!["gpu=yes:Sometimes".into()],
    };
    assert_eq!(
        field_of(f.typed_config("k", &bad, None)),
        "config.tolerations"
    );
}

#[test]
fn custom_qemu_and_firecracker_map_their_paths() {
    let f = factory();
    let q = custom(&[
        ("kind", "qemu"),
        ("kernel", "/g/vmlinux"),
        ("initrd", "/g/initrd"),
        ("rootfs", "/g/rootfs.ext4"),
    ]);
    let TypedConfig::Qemu(c) = f.typed_config("vm-a", &q, None).unwrap() else {
        panic!("not a qemu config");
    };
    assert_eq!(c.name, "vm-a");
    assert_eq!(c.kernel, PathBuf::from("/g/vmlinux"));
    assert_eq!(c.initrd, PathBuf::from("/g/initrd"));
    assert_eq!(c.rootfs, PathBuf::from("/g/rootfs.ext4"));
    // Its own work directory, apart from the default provider's.
    assert!(c.work_dir.ends_with("vm-a"), "{}", c.work_dir.display());
    assert_eq!(
        TypedConfig::Qemu(c).to_provider_config(),
        q,
        "the stored form round-trips"
    );

    let fc = custom(&[
        ("kind", "firecracker"),
        ("kernel", "/g/k"),
        ("rootfs", "/g/r"),
    ]);
    let TypedConfig::Firecracker(c) = f.typed_config("fc-a", &fc, Some(2)).unwrap() else {
        panic!("not a firecracker config");
    };
    assert_eq!(c.kernel, PathBuf::from("/g/k"));
    assert_eq!(c.rootfs, PathBuf::from("/g/r"));
    assert_eq!(c.max_workers, 2);
}

#[test]
fn custom_errors_name_their_setting() {
    let f = factory();
    assert_eq!(
        field_of(f.typed_config("x", &custom(&[("kernel", "/k")]), None)),
        "config.settings.kind"
    );
    assert_eq!(
        field_of(f.typed_config("x", &custom(&[("kind", "vmware")]), None)),
        "config.settings.kind"
    );
    assert_eq!(
        field_of(f.typed_config("x", &custom(&[("kind", "qemu"), ("memory", "1G")]), None)),
        "config.settings.memory"
    );
    assert_eq!(
        field_of(f.typed_config(
            "x",
            &custom(&[("kind", "firecracker"), ("rootfs", " ")]),
            None
        )),
        "config.settings.rootfs"
    );
}

#[test]
fn cloud_kinds_are_refused_naming_the_type() {
    let f = factory();
    let lambda = ProviderConfig::Lambda {
        region: "eu-west-1".into(),
        function: "f".into(),
    };
    let e = f.typed_config("l", &lambda, None).unwrap_err();
    assert!(e.to_string().contains("lambda"), "{e}");
    assert_eq!(field_of(Err(e)), "config.type");
}

#[test]
fn field_errors_become_invalid_arguments_of_the_control_plane() {
    let e: ControlError = FactoryError::field("config.image", "must be set").into();
    assert!(
        matches!(&e, ControlError::InvalidArgument { field, .. } if field == "config.image"),
        "{e:?}"
    );
    let e: ControlError = FactoryError::Provider(ProviderError::InvalidConfig("tap".into())).into();
    assert!(matches!(&e, ControlError::InvalidArgument { field, .. } if field == "config"));
}

#[tokio::test]
async fn create_builds_a_process_provider_under_the_requested_id() {
    let f = factory();
    let id = ProviderId::new();
    let c = ProviderConfig::BareMetal {
        agent_binary: Some("/bin/sh".into()),
        hosts: vec![],
    };
    let built = f
        .create(ProviderRequest::new(id, "runtime-proc", &c).with_max_workers(Some(2)))
        .await
        .unwrap();
    assert_eq!(built.provider.id(), id);
    assert_eq!(built.provider.name(), "runtime-proc");
    assert_eq!(built.provider.capabilities().max_workers, 2);
    assert_eq!(built.policy.max_workers, 2);
    let e = f
        .create(ProviderRequest::new(
            id,
            "x",
            &ProviderConfig::Ec2 {
                region: "r".into(),
                instance_type: "t".into(),
                ami: "a".into(),
            },
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::InvalidArgument { ref field, .. } if field == "config.type"));
}

#[tokio::test]
async fn runtime_providers_are_stored_and_restored_with_their_id_and_state() {
    use hodei_core::control::ControlPlane;
    use hodei_core::domain::provider::{Provider, ProviderCapabilities, ProviderStatus};

    let stores = Stores::in_memory();
    let f = Arc::new(BundledProviderFactory::new(
        PoolPolicy::default().max_workers(2),
        stores.workers.clone(),
    ));
    let cp = ControlPlane::builder()
        .stores(stores.clone())
        .provider_factory(f.clone())
        .build();
    let c = ProviderConfig::BareMetal {
        agent_binary: Some("/bin/sh".into()),
        hosts: vec![],
    };
    let p = cp
        .register_provider_config("rt", c.clone(), Some(1))
        .await
        .unwrap();
    assert!(p.is_registered_at_runtime());
    assert_eq!(p.capabilities().max_workers, 1);
    let taken = cp.register_provider_config("rt", c.clone(), None).await;
    assert!(
        matches!(taken, Err(ControlError::FailedPrecondition(_))),
        "{taken:?}"
    );
    let bad = ProviderConfig::Docker {
        image: String::new(),
        docker_host: None,
        network: None,
    };
    let e = cp
        .register_provider_config("bad", bad, None)
        .await
        .unwrap_err();
    assert!(matches!(&e, ControlError::InvalidArgument { field, .. } if field == "config.image"));
    assert!(
        cp.get_provider("bad").await.is_err(),
        "nothing stored for bad input"
    );
    cp.set_provider_state("rt", ProviderStatus::Maintenance)
        .await
        .unwrap();
    let e = cp
        .set_provider_state("rt", ProviderStatus::Overloaded)
        .await
        .unwrap_err();
    assert!(matches!(&e, ControlError::InvalidArgument { field, .. } if field == "state"));
    // A stored runtime provider this server cannot build (a kind it lacks).
    let broken = Provider::new(
        ProviderId::new(),
        "broken",
        ProviderConfig::Lambda {
            region: "r".into(),
            function: "f".into(),
        },
        ProviderCapabilities::default(),
    )
    .registered_at_runtime(true);
    stores.providers.save(&broken).await.unwrap();
    cp.shutdown();

    // A new control plane on the same stores: a restart.
    let cp2 = ControlPlane::builder()
        .stores(stores.clone())
        .provider_factory(f)
        .build();
    let mut restored = cp2.restore_runtime_providers().await.unwrap();
    restored.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(restored.len(), 2, "{restored:?}");
    assert_eq!(restored[0].name, "broken");
    assert!(
        restored[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("lambda")
    );
    assert_eq!(
        (restored[1].name.as_str(), restored[1].error.as_deref()),
        ("rt", None)
    );
    let rt = cp2.get_provider("rt").await.unwrap();
    assert_eq!(rt.id(), p.id());
    assert_eq!(
        rt.status(),
        ProviderStatus::Maintenance,
        "the operator's state is kept"
    );
    assert_eq!(rt.capabilities().max_workers, 1);
    let broken = cp2.get_provider("broken").await.unwrap();
    assert_eq!(
        broken.status(),
        ProviderStatus::Unhealthy,
        "kept, marked unhealthy"
    );
    // Restored once: a second pass has nothing to do for rt.
    let again = cp2.restore_runtime_providers().await.unwrap();
    assert!(again.iter().all(|r| r.name != "rt"), "{again:?}");
    // Removal needs the disabled state.
    assert!(matches!(
        cp2.remove_provider("rt").await,
        Err(ControlError::FailedPrecondition(_))
    ));
    cp2.set_provider_state("rt", ProviderStatus::Disabled)
        .await
        .unwrap();
    cp2.remove_provider("rt").await.unwrap();
    assert!(cp2.get_provider("rt").await.is_err());
    cp2.shutdown();
}

#[test]
fn the_job_count_makes_a_provider_overloaded_at_its_limit_and_active_below() {
    use hodei_core::domain::provider::{Provider, ProviderCapabilities, ProviderStatus};
    // Non-exhaustive: built from its serde form, the other fields defaulted.
    let caps: ProviderCapabilities =
        serde_json::from_value(serde_json::json!({ "max_workers": 2 })).unwrap();
    let mut p = Provider::new(
        ProviderId::new(),
        "p",
        ProviderConfig::BareMetal {
            agent_binary: None,
            hosts: vec![],
        },
        caps,
    );
    p.set_job_count(1);
    assert_eq!((p.active_jobs(), p.status()), (1, ProviderStatus::Active));
    p.set_job_count(2);
    assert_eq!(p.status(), ProviderStatus::Overloaded);
    assert!(!p.is_available());
    p.set_job_count(1);
    assert_eq!(p.status(), ProviderStatus::Active);
    // An operator's state is not overridden by the load.
    p.set_status(ProviderStatus::Maintenance);
    p.set_job_count(5);
    assert_eq!(p.status(), ProviderStatus::Maintenance);
}
