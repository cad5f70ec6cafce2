//! Configuration of the [`QemuMicroVmProvider`](super::QemuMicroVmProvider).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hodei_core::ProviderError;
use hodei_core::settings::Setting;

/// QEMU binary (default `qemu-system-x86_64`, looked up on `PATH`).
pub const ENV_QEMU_BINARY: &str = "HODEI_QEMU_BINARY";
/// Guest kernel (bzImage), default `target/microvm/vmlinuz`.
pub const ENV_QEMU_KERNEL: &str = "HODEI_QEMU_KERNEL";
/// Guest initramfs, default `target/microvm/initramfs.cpio.gz`.
pub const ENV_QEMU_INITRD: &str = "HODEI_QEMU_INITRD";
/// Base root filesystem image (never written), default `target/microvm/rootfs.ext4`.
pub const ENV_QEMU_ROOTFS: &str = "HODEI_QEMU_ROOTFS";
/// Directory of the per-worker directories, default `$TMPDIR/hodei-qemu`.
pub const ENV_QEMU_WORK_DIR: &str = "HODEI_QEMU_WORK_DIR";
/// `auto` (default), `kvm` or `tcg`.
pub const ENV_QEMU_ACCEL: &str = "HODEI_QEMU_ACCEL";
/// Most VMs alive at once (default 4).
pub const ENV_QEMU_MAX_WORKERS: &str = "HODEI_QEMU_MAX_WORKERS";
/// Guest memory when the job asks less (default 256 MiB).
pub const ENV_QEMU_MIN_MEMORY_MB: &str = "HODEI_QEMU_MIN_MEMORY_MB";

/// Every variable [`QemuProviderConfig::from_env`] reads.
pub const SETTINGS: &[Setting] = &[
    Setting::new(ENV_QEMU_BINARY, "qemu-system-x86_64 on PATH", "QEMU binary"),
    Setting::new(
        ENV_QEMU_KERNEL,
        "target/microvm/vmlinuz",
        "guest kernel (bzImage)",
    ),
    Setting::new(
        ENV_QEMU_INITRD,
        "target/microvm/initramfs.cpio.gz",
        "guest initramfs",
    ),
    Setting::new(
        ENV_QEMU_ROOTFS,
        "target/microvm/rootfs.ext4",
        "base root filesystem image (never written)",
    ),
    Setting::new(
        ENV_QEMU_WORK_DIR,
        "$TMPDIR/hodei-qemu",
        "directory of the per-worker directories",
    ),
    Setting::new(ENV_QEMU_ACCEL, "auto", "`auto`, `kvm` or `tcg`"),
    Setting::new(ENV_QEMU_MAX_WORKERS, "4", "most VMs alive at once"),
    Setting::new(
        ENV_QEMU_MIN_MEMORY_MB,
        "256",
        "guest memory when the job asks less, MiB",
    ),
];

/// What the guest gets when `build-guest.sh` is run from the repository root.
const DEFAULT_GUEST_DIR: &str = "target/microvm";

/// The hint every "guest image missing" error carries.
pub const GUEST_IMAGE_HINT: &str = "build the guest image with `scripts/microvm/build-guest.sh` \
     and point HODEI_QEMU_KERNEL / HODEI_QEMU_INITRD / HODEI_QEMU_ROOTFS at its outputs";

/// How the guest's CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Accel {
    /// KVM when hardware KVM works (a readable `/dev/kvm` and `vmx`/`svm` CPU flags),
    /// software emulation (TCG) otherwise.
    #[default]
    Auto,
    /// KVM, even when it does not look like hardware KVM.
    Kvm,
    /// Software emulation (TCG): works everywhere, about 20× slower.
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = ProviderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(ProviderError::InvalidConfig(format!(
                "{ENV_QEMU_ACCEL}={other:?}: expected auto, kvm or tcg"
            ))),
        }
    }
}

/// How the QEMU microvm provider boots worker VMs.
///
/// ```
/// use hodei_providers::qemu::{Accel, QemuProviderConfig};
/// let config = QemuProviderConfig::default()
///     .with_guest_dir("/opt/hodei/guest")
///     .with_accel(Accel::Tcg)
///     .with_max_workers(2);
/// assert_eq!(config.name, "qemu");
/// assert!(config.kernel.ends_with("vmlinuz"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QemuProviderConfig {
    /// Unique provider name. Default `qemu`.
    pub name: String,
    /// The QEMU binary. Default `qemu-system-x86_64` (on `PATH`).
    pub qemu_binary: PathBuf,
    /// `qemu-img`, for copy-on-write overlays of the root disk; when it cannot
    /// be run, each worker gets a plain copy. Default `qemu-img` (on `PATH`).
    pub qemu_img: PathBuf,
    /// Guest kernel (bzImage).
    pub kernel: PathBuf,
    /// Guest initramfs (loads the virtio modules, mounts `/dev/vda`).
    pub initrd: PathBuf,
    /// Base root filesystem; each worker boots from its own overlay or copy.
    pub rootfs: PathBuf,
    /// Where the per-worker directories live.
    pub work_dir: PathBuf,
    /// KVM or software emulation.
    pub accel: Accel,
    /// Most VMs alive at once. Default 4.
    pub max_workers: u32,
    /// Guest memory floor in MiB (a job asking less gets this). Default 256.
    pub min_memory_mb: u64,
    /// How long `destroy_worker` waits after `system_powerdown` before `quit`. Default 1 s.
    pub destroy_grace: Duration,
    /// The host as the guest reaches it (QEMU user networking: `10.0.2.2`). A
    /// worker's server address on `127.0.0.1`/`localhost` is rewritten to it.
    pub host_from_guest: String,
    /// Extra kernel command-line arguments (never secrets: the command line is
    /// visible in the host's process list).
    pub extra_kernel_args: Vec<String>,
    /// Extra QEMU arguments, after the provider's (e.g. `-device i8042`, a
    /// keyboard controller that makes QMP `send-key ctrl-alt-delete` reach the guest).
    pub extra_qemu_args: Vec<String>,
    /// Extra environment given to every agent (the spec's own environment wins).
    pub extra_env: BTreeMap<String, String>,
}

impl Default for QemuProviderConfig {
    fn default() -> Self {
        let guest = PathBuf::from(DEFAULT_GUEST_DIR);
        Self {
            name: "qemu".to_owned(),
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            qemu_img: PathBuf::from("qemu-img"),
            kernel: guest.join("vmlinuz"),
            initrd: guest.join("initramfs.cpio.gz"),
            rootfs: guest.join("rootfs.ext4"),
            work_dir: std::env::temp_dir().join("hodei-qemu"),
            accel: Accel::Auto,
            max_workers: 4,
            min_memory_mb: 256,
            destroy_grace: Duration::from_secs(1),
            host_from_guest: "10.0.2.2".to_owned(),
            extra_kernel_args: Vec::new(),
            extra_qemu_args: Vec::new(),
            extra_env: BTreeMap::new(),
        }
    }
}

impl QemuProviderConfig {
    /// Defaults overridden by the `HODEI_QEMU_*` variables.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] for an unknown accelerator or a bad number.
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] for an unknown accelerator or a bad number.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProviderError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut c = Self::default();
        if let Some(v) = get(ENV_QEMU_BINARY) {
            c.qemu_binary = v.into();
        }
        if let Some(v) = get(ENV_QEMU_KERNEL) {
            c.kernel = v.into();
        }
        if let Some(v) = get(ENV_QEMU_INITRD) {
            c.initrd = v.into();
        }
        if let Some(v) = get(ENV_QEMU_ROOTFS) {
            c.rootfs = v.into();
        }
        if let Some(v) = get(ENV_QEMU_WORK_DIR) {
            c.work_dir = v.into();
        }
        if let Some(v) = get(ENV_QEMU_ACCEL) {
            c.accel = v.parse()?;
        }
        let positive = |k: &str, v: String| match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ProviderError::InvalidConfig(format!(
                "{k}={v:?} is not a positive integer"
            ))),
        };
        if let Some(v) = get(ENV_QEMU_MAX_WORKERS) {
            c.max_workers = u32::try_from(positive(ENV_QEMU_MAX_WORKERS, v)?).unwrap_or(u32::MAX);
        }
        if let Some(v) = get(ENV_QEMU_MIN_MEMORY_MB) {
            c.min_memory_mb = positive(ENV_QEMU_MIN_MEMORY_MB, v)?;
        }
        Ok(c)
    }

    /// Kernel, initramfs and root filesystem from one `build-guest.sh` output dir.
    #[must_use]
    pub fn with_guest_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.kernel = dir.join("vmlinuz");
        self.initrd = dir.join("initramfs.cpio.gz");
        self.rootfs = dir.join("rootfs.ext4");
        self
    }

    /// Sets the provider name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the directory of the per-worker directories.
    #[must_use]
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = dir.into();
        self
    }

    /// Sets the accelerator.
    #[must_use]
    pub fn with_accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// Sets the QEMU binary.
    #[must_use]
    pub fn with_qemu_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.qemu_binary = path.into();
        self
    }

    /// Sets the most VMs alive at once.
    #[must_use]
    pub fn with_max_workers(mut self, n: u32) -> Self {
        self.max_workers = n;
        self
    }

    /// Sets the `system_powerdown` → `quit` grace.
    #[must_use]
    pub fn with_destroy_grace(mut self, grace: Duration) -> Self {
        self.destroy_grace = grace;
        self
    }

    /// Adds QEMU arguments after the provider's own.
    #[must_use]
    pub fn with_qemu_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.extra_qemu_args
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable given to every agent.
    #[must_use]
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.extra_env.insert(k.into(), v.into());
        self
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_settings_table_lists_every_variable_read() {
        let unlisted =
            hodei_core::settings::unlisted(SETTINGS, |get| QemuProviderConfig::from_lookup(get));
        assert!(
            unlisted.is_empty(),
            "read but not in SETTINGS: {unlisted:?}"
        );
    }
    use super::*;

    #[test]
    fn env_overrides_defaults() {
        let c = QemuProviderConfig::from_lookup(|k| match k {
            ENV_QEMU_KERNEL => Some("/g/vmlinuz".into()),
            ENV_QEMU_ACCEL => Some("TCG".into()),
            ENV_QEMU_MAX_WORKERS => Some("2".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.kernel, PathBuf::from("/g/vmlinuz"));
        assert_eq!(c.accel, Accel::Tcg);
        assert_eq!(c.max_workers, 2);
        assert!(c.rootfs.ends_with("rootfs.ext4"));
    }

    #[test]
    fn bad_values_are_invalid_config() {
        for (k, v) in [(ENV_QEMU_ACCEL, "xen"), (ENV_QEMU_MAX_WORKERS, "0")] {
            let err =
                QemuProviderConfig::from_lookup(|q| (q == k).then(|| v.to_owned())).unwrap_err();
            assert!(matches!(err, ProviderError::InvalidConfig(_)), "{k}={v}");
        }
    }
}
