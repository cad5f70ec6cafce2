//! Per-worker tap devices and their addresses.
//!
//! Each microVM gets a persistent tap device, created before Firecracker
//! starts (owned by the jailer's uid/gid when there is one, so the jailed
//! process may attach to it) and removed once Firecracker has exited. The
//! tap carries the host end of a `/30` taken from
//! [`FirecrackerProviderConfig::tap_subnet`](super::FirecrackerProviderConfig::tap_subnet);
//! the guest gets the other end through MMDS.
//!
//! Devices are managed with iproute2's `ip` (the commands of Firecracker's
//! own network setup guide), run without a shell: creating a tap is a
//! `TUNSETIFF` ioctl that no netlink call replaces, and this crate forbids
//! `unsafe`. The binary is configurable, so an unprivileged server can use a
//! wrapper (`sudo -n ip`, say) that holds `CAP_NET_ADMIN`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use hodei_core::ProviderError;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Addresses of one worker's point-to-point link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TapAddresses {
    /// The host end, on the tap device (the guest's gateway).
    pub host: Ipv4Addr,
    /// The guest end, on its `eth0`.
    pub guest: Ipv4Addr,
    /// Prefix length of the link (30).
    pub prefix_len: u8,
}

/// Prefix length of each worker's link: host, guest, network and broadcast.
pub const LINK_PREFIX_LEN: u8 = 30;

/// How many `/30` links fit in `subnet/prefix_len`.
#[must_use]
pub fn link_count(prefix_len: u8) -> u32 {
    if prefix_len > LINK_PREFIX_LEN {
        0
    } else {
        1u32 << (LINK_PREFIX_LEN - prefix_len)
    }
}

/// The addresses of link number `slot` in `subnet/prefix_len`, `None` past its end.
#[must_use]
pub fn link_addresses(subnet: Ipv4Addr, prefix_len: u8, slot: u32) -> Option<TapAddresses> {
    if slot >= link_count(prefix_len) {
        return None;
    }
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    let base = u32::from(subnet) & mask;
    let link = base + slot * 4;
    Some(TapAddresses {
        host: Ipv4Addr::from(link + 1),
        guest: Ipv4Addr::from(link + 2),
        prefix_len: LINK_PREFIX_LEN,
    })
}

/// The environment that tells the guest init its address and gateway.
#[must_use]
pub fn guest_network_env(a: &TapAddresses) -> [(String, String); 2] {
    [
        (
            "HODEI_GUEST_IP".to_owned(),
            format!("{}/{}", a.guest, a.prefix_len),
        ),
        ("HODEI_GUEST_GATEWAY".to_owned(), a.host.to_string()),
    ]
}

/// Runs `ip -batch -` with `script` on stdin; stderr on failure.
async fn ip_batch(ip: &Path, script: &str) -> Result<(), String> {
    let mut child = Command::new(ip)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {} ({e})", ip.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("cannot write to {} ({e})", ip.display()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("{} did not finish ({e})", ip.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// What an `ip` failure means, with what to do about it.
pub(crate) fn tap_error(name: &str, ip: &Path, stderr: &str) -> ProviderError {
    let denied = ["Operation not permitted", "Permission denied"]
        .iter()
        .any(|m| stderr.contains(m));
    if denied {
        ProviderError::Unavailable(format!(
            "creating tap device {name} is not permitted ({stderr}): it needs CAP_NET_ADMIN — run \
             the server as root, give it the capability (`setcap cap_net_admin+ep`), point \
             HODEI_FC_IP_BINARY at a privileged wrapper (e.g. a script running `sudo -n ip \"$@\"`), \
             or create the taps yourself and set HODEI_FC_CREATE_TAP=false"
        ))
    } else if stderr.starts_with("cannot run") {
        ProviderError::InvalidConfig(format!(
            "{stderr}: install iproute2 or set HODEI_FC_IP_BINARY (tap device {name})"
        ))
    } else {
        ProviderError::Internal(format!(
            "cannot set up tap device {name} with {}: {stderr}",
            ip.display()
        ))
    }
}

/// Creates tap `name` (persistent, owned by `owner` uid/gid when given),
/// puts the host address on it and brings it up. A device of that name left
/// behind (the names are per worker) is removed first.
///
/// # Errors
/// [`ProviderError::Unavailable`] when not permitted (no `CAP_NET_ADMIN`),
/// [`ProviderError::InvalidConfig`] when `ip` cannot run,
/// [`ProviderError::Internal`] otherwise; nothing is left behind.
pub async fn create_tap(
    ip: &Path,
    name: &str,
    addresses: &TapAddresses,
    owner: Option<(u32, u32)>,
) -> Result<(), ProviderError> {
    let owner = owner
        .map(|(uid, gid)| format!(" user {uid} group {gid}"))
        .unwrap_or_default();
    let script = format!(
        "tuntap add dev {name} mode tap{owner}\n\
         addr add {}/{} dev {name}\n\
         link set dev {name} up\n",
        addresses.host, addresses.prefix_len
    );
    let mut result = ip_batch(ip, &script).await;
    if result
        .as_ref()
        .is_err_and(|e| e.contains("busy") || e.contains("exists"))
    {
        tracing::warn!(tap = name, "replacing a tap device left behind");
        remove_tap(ip, name).await?;
        result = ip_batch(ip, &script).await;
    }
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            // The batch stops at the first failure; what it made goes.
            let _ = remove_tap(ip, name).await;
            Err(tap_error(name, ip, &e))
        }
    }
}

/// Removes tap `name`; `Ok(false)` when there is none.
///
/// # Errors
/// As [`create_tap`].
pub async fn remove_tap(ip: &Path, name: &str) -> Result<bool, ProviderError> {
    match ip_batch(ip, &format!("link del dev {name}\n")).await {
        Ok(()) => Ok(true),
        Err(e) if e.contains("Cannot find device") || e.contains("does not exist") => Ok(false),
        Err(e) => Err(tap_error(name, ip, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_consecutive_slash_30s() {
        let net = Ipv4Addr::new(172, 30, 0, 0);
        let a = link_addresses(net, 16, 0).unwrap();
        assert_eq!(a.host, Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(a.guest, Ipv4Addr::new(172, 30, 0, 2));
        assert_eq!(a.prefix_len, 30);
        let b = link_addresses(net, 16, 1).unwrap();
        assert_eq!(b.host, Ipv4Addr::new(172, 30, 0, 5));
        let last = link_addresses(net, 16, 16383).unwrap();
        assert_eq!(last.guest, Ipv4Addr::new(172, 30, 255, 254));
        assert_eq!(link_addresses(net, 16, 16384), None);
        // Host bits of the subnet are ignored.
        assert_eq!(
            link_addresses(Ipv4Addr::new(10, 1, 2, 3), 24, 0)
                .unwrap()
                .host,
            Ipv4Addr::new(10, 1, 2, 1)
        );
        assert_eq!(link_count(30), 1);
        assert_eq!(link_count(31), 0);
        assert_eq!(link_count(0), 1 << 30);
        assert_eq!(
            guest_network_env(&a),
            [
                ("HODEI_GUEST_IP".to_owned(), "172.30.0.2/30".to_owned()),
                ("HODEI_GUEST_GATEWAY".to_owned(), "172.30.0.1".to_owned()),
            ]
        );
    }

    #[test]
    fn ip_failures_say_what_to_do() {
        let ip = Path::new("ip");
        for denied in [
            "ioctl(TUNSETIFF): Operation not permitted",
            "open: Permission denied",
        ] {
            let e = tap_error("hfc1", ip, denied);
            assert!(
                matches!(&e, ProviderError::Unavailable(m) if m.contains("CAP_NET_ADMIN")),
                "{e:?}"
            );
        }
        let e = tap_error("hfc1", ip, "cannot run ip (No such file or directory)");
        assert!(
            matches!(&e, ProviderError::InvalidConfig(m) if m.contains("iproute2")),
            "{e:?}"
        );
        let e = tap_error("hfc1", ip, "Error: ipv4: Address already assigned.");
        assert!(matches!(&e, ProviderError::Internal(_)), "{e:?}");
    }
}
