//! Configuration of the [`FirecrackerProvider`](super::FirecrackerProvider).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hodei_core::settings::Setting;
use hodei_core::switch::{EXPECTED, parse_switch};
use hodei_core::{JobResources, ProviderError};

/// Firecracker binary (default `firecracker`, looked up on `PATH`).
pub const ENV_FC_BINARY: &str = "HODEI_FC_BINARY";
/// Guest kernel (ELF `vmlinux`), default `target/microvm/vmlinux`.
pub const ENV_FC_KERNEL_PATH: &str = "HODEI_FC_KERNEL_PATH";
/// Guest initramfs (loads the virtio modules, mounts `/dev/vda`), default
/// `target/microvm/initramfs.cpio.gz`; empty string: boot without one.
pub const ENV_FC_INITRD_PATH: &str = "HODEI_FC_INITRD_PATH";
/// Base root filesystem image (never written), default `target/microvm/rootfs.ext4`.
pub const ENV_FC_ROOTFS_PATH: &str = "HODEI_FC_ROOTFS_PATH";
/// Directory of the per-worker directories, default `$TMPDIR/hodei-firecracker`.
pub const ENV_FC_WORK_DIR: &str = "HODEI_FC_WORK_DIR";
/// `true` to start Firecracker through `jailer`.
pub const ENV_FC_USE_JAILER: &str = "HODEI_FC_USE_JAILER";
/// Jailer binary (default `jailer` on `PATH`).
pub const ENV_FC_JAILER_BINARY: &str = "HODEI_FC_JAILER_BINARY";
/// User id the jailed Firecracker runs as (default 65534, `nobody`).
pub const ENV_FC_JAILER_UID: &str = "HODEI_FC_JAILER_UID";
/// Group id the jailed Firecracker runs as (default 65534, `nogroup`).
pub const ENV_FC_JAILER_GID: &str = "HODEI_FC_JAILER_GID";
/// Base directory of the jailer's chroots (default `/srv/jailer`).
pub const ENV_FC_CHROOT_BASE: &str = "HODEI_FC_CHROOT_BASE";
/// Most microVMs alive at once (default 4).
pub const ENV_FC_MAX_WORKERS: &str = "HODEI_FC_MAX_WORKERS";
/// `false` when the per-worker tap devices are made by someone else (default `true`).
pub const ENV_FC_CREATE_TAP: &str = "HODEI_FC_CREATE_TAP";
/// Where the per-worker `/30` links come from (default `172.30.0.0/16`).
pub const ENV_FC_TAP_SUBNET: &str = "HODEI_FC_TAP_SUBNET";
/// iproute2's `ip`, or a wrapper holding `CAP_NET_ADMIN` (default `ip` on `PATH`).
pub const ENV_FC_IP_BINARY: &str = "HODEI_FC_IP_BINARY";
/// Every variable [`FirecrackerProviderConfig::from_env`] reads.
pub const SETTINGS: &[Setting] = &[
    Setting::new(ENV_FC_BINARY, "firecracker on PATH", "Firecracker binary"),
    Setting::new(
        ENV_FC_KERNEL_PATH,
        "target/microvm/vmlinux",
        "guest kernel (ELF vmlinux)",
    ),
    Setting::new(
        ENV_FC_INITRD_PATH,
        "target/microvm/initramfs.cpio.gz",
        "guest initramfs (empty: boot without one)",
    ),
    Setting::new(
        ENV_FC_ROOTFS_PATH,
        "target/microvm/rootfs.ext4",
        "base root filesystem image (never written)",
    ),
    Setting::new(
        ENV_FC_WORK_DIR,
        "$TMPDIR/hodei-firecracker",
        "directory of the per-worker directories",
    ),
    Setting::new(
        ENV_FC_USE_JAILER,
        "off",
        "start Firecracker through `jailer` (yes/no)",
    ),
    Setting::new(ENV_FC_JAILER_BINARY, "jailer on PATH", "jailer binary"),
    Setting::new(
        ENV_FC_JAILER_UID,
        "65534",
        "user id of the jailed Firecracker",
    ),
    Setting::new(
        ENV_FC_JAILER_GID,
        "65534",
        "group id of the jailed Firecracker",
    ),
    Setting::new(
        ENV_FC_CHROOT_BASE,
        "/srv/jailer",
        "base directory of the jailer's chroots",
    ),
    Setting::new(ENV_FC_MAX_WORKERS, "4", "most microVMs alive at once"),
    Setting::new(
        ENV_FC_CREATE_TAP,
        "on",
        "make the per-worker tap devices (yes/no)",
    ),
    Setting::new(
        ENV_FC_TAP_SUBNET,
        "172.30.0.0/16",
        "where the per-worker /30 links come from",
    ),
    Setting::new(
        ENV_FC_IP_BINARY,
        "ip on PATH",
        "iproute2's `ip`, or a wrapper holding CAP_NET_ADMIN",
    ),
];

/// What the guest gets when `build-guest.sh` is run from the repository root.
const DEFAULT_GUEST_DIR: &str = "target/microvm";

/// The hint every "guest image missing" error carries.
pub const FC_GUEST_IMAGE_HINT: &str = "build the guest image with `scripts/microvm/build-guest.sh` \
     and point HODEI_FC_KERNEL_PATH (its `vmlinux`) / HODEI_FC_INITRD_PATH (its \
     `initramfs.cpio.gz`) / HODEI_FC_ROOTFS_PATH (its `rootfs.ext4`) at it";

/// Firecracker's vCPU limit.
pub const MAX_VCPUS: u32 = 32;

/// How the jailer confines each Firecracker process.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JailerConfig {
    /// The `jailer` binary.
    pub binary: PathBuf,
    /// User id Firecracker runs as.
    pub uid: u32,
    /// Group id Firecracker runs as.
    pub gid: u32,
    /// Base of the chroots: each worker's is `<base>/firecracker/<worker id>/root`.
    pub chroot_base: PathBuf,
}

impl Default for JailerConfig {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("jailer"),
            uid: 65534,
            gid: 65534,
            chroot_base: PathBuf::from("/srv/jailer"),
        }
    }
}

/// How the Firecracker provider boots worker microVMs.
///
/// ```
/// use hodei_providers::firecracker::FirecrackerProviderConfig;
/// let config = FirecrackerProviderConfig::default()
///     .with_guest_dir("/opt/hodei/guest")
///     .with_max_workers(2);
/// assert_eq!(config.name, "firecracker");
/// assert!(config.kernel.ends_with("vmlinux"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FirecrackerProviderConfig {
    /// Unique provider name. Default `firecracker`.
    pub name: String,
    /// The Firecracker binary. Default `firecracker` (on `PATH`).
    pub binary: PathBuf,
    /// Guest kernel (uncompressed ELF `vmlinux`).
    pub kernel: PathBuf,
    /// Guest initramfs (`None`: the kernel mounts the root disk itself).
    pub initrd: Option<PathBuf>,
    /// Base root filesystem; each worker boots from its own copy.
    pub rootfs: PathBuf,
    /// Where the per-worker directories live (without the jailer).
    pub work_dir: PathBuf,
    /// `Some`: start Firecracker through the jailer.
    pub jailer: Option<JailerConfig>,
    /// Most microVMs alive at once. Default 4.
    pub max_workers: u32,
    /// Guest memory floor in MiB (a job asking less gets this). Default 128.
    pub min_memory_mb: u64,
    /// How long `destroy_worker` waits after `SendCtrlAltDel` before SIGKILL. Default 2 s.
    pub destroy_grace: Duration,
    /// How long Firecracker may take to open its API socket, and each API call. Default 5 s.
    pub api_timeout: Duration,
    /// Kernel command line (never secrets: the OTP goes through MMDS).
    pub boot_args: String,
    /// Prefix of the per-worker tap device names (the name is at most 15 bytes).
    pub tap_prefix: String,
    /// Create each worker's tap device (and remove it after). Default `true`;
    /// `false`: the taps `tap_prefix` + worker id must exist, or Firecracker
    /// must be allowed to create them.
    pub create_tap: bool,
    /// Network the per-worker `/30` links are taken from. Default `172.30.0.0`.
    pub tap_subnet: Ipv4Addr,
    /// Prefix length of [`tap_subnet`](Self::tap_subnet), at most 30. Default 16.
    pub tap_subnet_prefix_len: u8,
    /// iproute2's `ip` (or a privileged wrapper). Default `ip`.
    pub ip_binary: PathBuf,
    /// The KVM device whose access health checks and boots require. Default `/dev/kvm`.
    pub kvm_device: PathBuf,
    /// Where the CPU flags (`vmx`/`svm`) are read. Default `/proc/cpuinfo`.
    pub cpuinfo: PathBuf,
    /// Extra environment given to every agent (through MMDS; the spec's own environment wins).
    pub extra_env: BTreeMap<String, String>,
}

impl Default for FirecrackerProviderConfig {
    fn default() -> Self {
        let guest = PathBuf::from(DEFAULT_GUEST_DIR);
        Self {
            name: "firecracker".to_owned(),
            binary: PathBuf::from("firecracker"),
            kernel: guest.join("vmlinux"),
            initrd: Some(guest.join("initramfs.cpio.gz")),
            rootfs: guest.join("rootfs.ext4"),
            work_dir: std::env::temp_dir().join("hodei-firecracker"),
            jailer: None,
            max_workers: 4,
            min_memory_mb: 128,
            destroy_grace: Duration::from_secs(2),
            api_timeout: Duration::from_secs(5),
            boot_args: "console=ttyS0 reboot=k panic=1 pci=off".to_owned(),
            tap_prefix: "hfc".to_owned(),
            create_tap: true,
            tap_subnet: Ipv4Addr::new(172, 30, 0, 0),
            tap_subnet_prefix_len: 16,
            ip_binary: PathBuf::from("ip"),
            kvm_device: PathBuf::from("/dev/kvm"),
            cpuinfo: PathBuf::from("/proc/cpuinfo"),
            extra_env: BTreeMap::new(),
        }
    }
}

impl FirecrackerProviderConfig {
    /// Defaults overridden by the `HODEI_FC_*` variables.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] for a bad number or boolean.
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] for a bad number or boolean.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProviderError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let number = |k: &str, v: String| {
            v.trim().parse::<u32>().map_err(|_| {
                ProviderError::InvalidConfig(format!("{k}={v:?} is not a non-negative integer"))
            })
        };
        let mut c = Self::default();
        if let Some(v) = get(ENV_FC_BINARY) {
            c.binary = v.into();
        }
        if let Some(v) = get(ENV_FC_KERNEL_PATH) {
            c.kernel = v.into();
        }
        if let Some(v) = lookup(ENV_FC_INITRD_PATH) {
            c.initrd = (!v.trim().is_empty()).then(|| v.into());
        }
        if let Some(v) = get(ENV_FC_ROOTFS_PATH) {
            c.rootfs = v.into();
        }
        if let Some(v) = get(ENV_FC_WORK_DIR) {
            c.work_dir = v.into();
        }
        if let Some(v) = get(ENV_FC_MAX_WORKERS) {
            c.max_workers = match number(ENV_FC_MAX_WORKERS, v.clone())? {
                0 => {
                    return Err(ProviderError::InvalidConfig(format!(
                        "{ENV_FC_MAX_WORKERS}={v:?} must be positive"
                    )));
                }
                n => n,
            };
        }
        let boolean = |k: &str, default: bool| match get(k) {
            None => Ok(default),
            Some(v) if v.trim().is_empty() => Ok(default),
            Some(v) => parse_switch(&v).ok_or_else(|| {
                ProviderError::InvalidConfig(format!("{k}={v:?}: expected {EXPECTED}"))
            }),
        };
        c.create_tap = boolean(ENV_FC_CREATE_TAP, true)?;
        if let Some(v) = get(ENV_FC_TAP_SUBNET) {
            (c.tap_subnet, c.tap_subnet_prefix_len) = parse_subnet(&v).ok_or_else(|| {
                ProviderError::InvalidConfig(format!(
                    "{ENV_FC_TAP_SUBNET}={v:?}: expected an IPv4 network with a prefix length \
                     of at most 30, like 172.30.0.0/16"
                ))
            })?;
        }
        if let Some(v) = get(ENV_FC_IP_BINARY) {
            c.ip_binary = v.into();
        }
        let use_jailer = boolean(ENV_FC_USE_JAILER, false)?;
        if use_jailer {
            let mut j = JailerConfig::default();
            if let Some(v) = get(ENV_FC_JAILER_BINARY) {
                j.binary = v.into();
            }
            if let Some(v) = get(ENV_FC_JAILER_UID) {
                j.uid = number(ENV_FC_JAILER_UID, v)?;
            }
            if let Some(v) = get(ENV_FC_JAILER_GID) {
                j.gid = number(ENV_FC_JAILER_GID, v)?;
            }
            if let Some(v) = get(ENV_FC_CHROOT_BASE) {
                j.chroot_base = v.into();
            }
            c.jailer = Some(j);
        }
        Ok(c)
    }

    /// Kernel and root filesystem from one `build-guest.sh` output dir.
    #[must_use]
    pub fn with_guest_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.kernel = dir.join("vmlinux");
        self.initrd = Some(dir.join("initramfs.cpio.gz"));
        self.rootfs = dir.join("rootfs.ext4");
        self
    }

    /// Sets the provider name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the Firecracker binary.
    #[must_use]
    pub fn with_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Sets the kernel.
    #[must_use]
    pub fn with_kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = path.into();
        self
    }

    /// Sets the initramfs (`None`: none).
    #[must_use]
    pub fn with_initrd(mut self, path: Option<PathBuf>) -> Self {
        self.initrd = path;
        self
    }

    /// Sets the base root filesystem.
    #[must_use]
    pub fn with_rootfs(mut self, path: impl Into<PathBuf>) -> Self {
        self.rootfs = path.into();
        self
    }

    /// Sets the directory of the per-worker directories.
    #[must_use]
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = dir.into();
        self
    }

    /// Starts Firecracker through the jailer.
    #[must_use]
    pub fn with_jailer(mut self, jailer: JailerConfig) -> Self {
        self.jailer = Some(jailer);
        self
    }

    /// Sets the most microVMs alive at once.
    #[must_use]
    pub fn with_max_workers(mut self, n: u32) -> Self {
        self.max_workers = n;
        self
    }

    /// Sets the `SendCtrlAltDel` → SIGKILL grace.
    #[must_use]
    pub fn with_destroy_grace(mut self, grace: Duration) -> Self {
        self.destroy_grace = grace;
        self
    }

    /// Sets where KVM is checked (device and CPU flags file), for hosts that
    /// expose them elsewhere.
    #[must_use]
    pub fn with_kvm_paths(
        mut self,
        device: impl Into<PathBuf>,
        cpuinfo: impl Into<PathBuf>,
    ) -> Self {
        self.kvm_device = device.into();
        self.cpuinfo = cpuinfo.into();
        self
    }

    /// Sets whether the provider creates the tap devices.
    #[must_use]
    pub fn with_create_tap(mut self, create: bool) -> Self {
        self.create_tap = create;
        self
    }

    /// Sets the network of the per-worker links (`prefix_len` at most 30).
    #[must_use]
    pub fn with_tap_subnet(mut self, subnet: Ipv4Addr, prefix_len: u8) -> Self {
        self.tap_subnet = subnet;
        self.tap_subnet_prefix_len = prefix_len;
        self
    }

    /// Sets the `ip` binary (or a privileged wrapper).
    #[must_use]
    pub fn with_ip_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.ip_binary = path.into();
        self
    }

    /// Adds an environment variable given to every agent.
    #[must_use]
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.extra_env.insert(k.into(), v.into());
        self
    }
}

/// `a.b.c.d/n` with `n` at most 30 (room for one `/30` link).
fn parse_subnet(v: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = v.trim().split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (len <= super::tap::LINK_PREFIX_LEN).then_some((addr.parse().ok()?, len))
}

/// The vCPU count of a job (its CPU cores rounded up), validated against
/// Firecracker's limits: 1 to 32, and 1 or even.
///
/// # Errors
/// [`ProviderError::InvalidConfig`] naming the count and the rule.
pub fn vcpu_count(resources: &JobResources) -> Result<u32, ProviderError> {
    let cores = resources.cpu_cores;
    if !cores.is_finite() || cores <= 0.0 {
        return Err(ProviderError::InvalidConfig(format!(
            "{cores} CPU cores cannot be a Firecracker vCPU count: ask for 1 to {MAX_VCPUS}"
        )));
    }
    let n = cores.ceil();
    if n > f64::from(MAX_VCPUS) {
        return Err(ProviderError::InvalidConfig(format!(
            "{n} vCPUs: Firecracker allows at most {MAX_VCPUS}"
        )));
    }
    let n = n as u32;
    if n != 1 && !n.is_multiple_of(2) {
        return Err(ProviderError::InvalidConfig(format!(
            "{n} vCPUs: Firecracker needs 1 or an even count (ask for {} or {})",
            n - 1,
            n + 1
        )));
    }
    Ok(n)
}

/// The jailer's command line for one worker: `jailer --id … --exec-file …
/// --uid … --gid … --chroot-base-dir … --cgroup-version 2 --cgroup cpu.max=…
/// --cgroup memory.max=… -- --api-sock <socket>`. The API socket is relative
/// to the chroot (the jailed Firecracker sees its chroot as `/`).
#[must_use]
pub fn jailer_args(
    jailer: &JailerConfig,
    firecracker: &Path,
    id: &str,
    resources: &JobResources,
    memory_mb: u64,
    api_sock_in_chroot: &str,
) -> Vec<String> {
    const CPU_PERIOD_US: u64 = 100_000;
    let quota = (resources.cpu_cores.max(0.01) * CPU_PERIOD_US as f64).ceil() as u64;
    vec![
        "--id".to_owned(),
        id.to_owned(),
        "--exec-file".to_owned(),
        firecracker.display().to_string(),
        "--uid".to_owned(),
        jailer.uid.to_string(),
        "--gid".to_owned(),
        jailer.gid.to_string(),
        "--chroot-base-dir".to_owned(),
        jailer.chroot_base.display().to_string(),
        "--cgroup-version".to_owned(),
        "2".to_owned(),
        "--cgroup".to_owned(),
        format!("cpu.max={quota} {CPU_PERIOD_US}"),
        "--cgroup".to_owned(),
        format!("memory.max={}", memory_mb * 1024 * 1024),
        "--".to_owned(),
        "--api-sock".to_owned(),
        api_sock_in_chroot.to_owned(),
    ]
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_settings_table_lists_every_variable_read() {
        let unlisted = hodei_core::settings::unlisted(SETTINGS, |get| {
            FirecrackerProviderConfig::from_lookup(get)
        });
        assert!(
            unlisted.is_empty(),
            "read but not in SETTINGS: {unlisted:?}"
        );
    }
    use super::*;

    #[test]
    fn env_overrides_defaults() {
        let c = FirecrackerProviderConfig::from_lookup(|k| match k {
            ENV_FC_KERNEL_PATH => Some("/g/vmlinux".into()),
            ENV_FC_INITRD_PATH => Some(String::new()),
            ENV_FC_USE_JAILER => Some("true".into()),
            ENV_FC_JAILER_UID => Some("1000".into()),
            ENV_FC_MAX_WORKERS => Some("2".into()),
            ENV_FC_CREATE_TAP => Some("no".into()),
            ENV_FC_TAP_SUBNET => Some("10.9.0.0/24".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.kernel, PathBuf::from("/g/vmlinux"));
        assert_eq!(c.max_workers, 2);
        assert_eq!(c.initrd, None);
        assert_eq!(c.jailer.as_ref().map(|j| j.uid), Some(1000));
        assert!(!c.create_tap);
        assert_eq!(
            (c.tap_subnet, c.tap_subnet_prefix_len),
            (Ipv4Addr::new(10, 9, 0, 0), 24)
        );
        assert!(c.rootfs.ends_with("rootfs.ext4"));
        let plain = FirecrackerProviderConfig::from_lookup(|_| None).unwrap();
        assert!(plain.jailer.is_none());
        assert!(plain.create_tap);
        assert!(
            plain
                .initrd
                .is_some_and(|p| p.ends_with("initramfs.cpio.gz"))
        );
    }

    #[test]
    fn bad_values_are_invalid_config() {
        for (k, v) in [
            (ENV_FC_USE_JAILER, "maybe"),
            (ENV_FC_MAX_WORKERS, "0"),
            (ENV_FC_MAX_WORKERS, "x"),
            (ENV_FC_CREATE_TAP, "sometimes"),
            (ENV_FC_TAP_SUBNET, "172.30.0.0"),
            (ENV_FC_TAP_SUBNET, "172.30.0.0/31"),
            (ENV_FC_TAP_SUBNET, "fd00::/64"),
        ] {
            let err = FirecrackerProviderConfig::from_lookup(|q| {
                (q == k || q == ENV_FC_USE_JAILER).then(|| {
                    if q == k {
                        v.to_owned()
                    } else {
                        "true".to_owned()
                    }
                })
            })
            .unwrap_err();
            assert!(matches!(err, ProviderError::InvalidConfig(_)), "{k}={v}");
        }
    }

    #[test]
    fn vcpus_follow_firecracker_limits() {
        let r = |cpu_cores| JobResources {
            cpu_cores,
            ..JobResources::default()
        };
        assert_eq!(vcpu_count(&r(0.5)).unwrap(), 1);
        assert_eq!(vcpu_count(&r(1.0)).unwrap(), 1);
        assert_eq!(vcpu_count(&r(1.5)).unwrap(), 2);
        assert_eq!(vcpu_count(&r(32.0)).unwrap(), 32);
        for bad in [0.0, -1.0, 3.0, 33.0, 64.0, f64::NAN] {
            assert!(
                matches!(vcpu_count(&r(bad)), Err(ProviderError::InvalidConfig(_))),
                "{bad}"
            );
        }
    }
}
