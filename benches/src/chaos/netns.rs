//! A network namespace joined to the host by a veth pair, for the agents of a
//! `netcut` round: they run inside it (`ip netns exec`) and reach the server on
//! the host end; the cut is an nftables table in the namespace that drops every
//! packet in and out (a silent partition, not a reset), removed to restore.
//!
//! The addresses are a /30 of 10.254.0.0/16 that exists only on this veth pair,
//! which this run creates and deletes: no traffic leaves the machine.

use std::process::Command;

use super::ChaosError;
use super::postgres::run;

/// The namespace and its veth pair; both are deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    host_ip: String,
    cut: bool,
}

impl NetNs {
    /// Creates namespace `hchaos<id>` with veth `hch<id>` (host) / `hcn<id>`
    /// (namespace) and addresses 10.254.N.1 (host) and 10.254.N.2.
    ///
    /// # Errors
    /// [`ChaosError::Missing`] when `ip` or `nft` fail (not root, no kernel support).
    pub fn create(id: u32) -> Result<Self, ChaosError> {
        let id = id % 100_000;
        let name = format!("hchaos{id}");
        let host_if = format!("hch{id}");
        let ns_if = format!("hcn{id}");
        let net = id % 250 + 1;
        let host_ip = format!("10.254.{net}.1");
        let ns_ip = format!("10.254.{net}.2");
        // Leftovers of an earlier run with the same id.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let me = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
            cut: false,
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                host_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                ns_if.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                ns_if.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{host_ip}/30"),
                "dev".into(),
                host_if.clone(),
            ],
            vec!["link".into(), "set".into(), host_if.clone(), "up".into()],
        ];
        for s in steps {
            me.ip(&s)?;
        }
        for s in [
            vec!["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if],
            vec!["link", "set", &ns_if, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            me.in_ns("ip", &s)?;
        }
        // Prove nftables works in the namespace before the round relies on it.
        me.in_ns("nft", &["add", "table", "inet", "chaosprobe"])?;
        me.in_ns("nft", &["delete", "table", "inet", "chaosprobe"])?;
        Ok(me)
    }

    fn ip(&self, args: &[String]) -> Result<(), ChaosError> {
        run(Command::new("ip").args(args)).map_err(|e| ChaosError::Missing(format!("netns: {e}")))
    }

    fn in_ns(&self, program: &str, args: &[&str]) -> Result<(), ChaosError> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args))
        .map_err(|e| ChaosError::Missing(format!("netns: {e}")))
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host end's address, where the server listens.
    pub fn host_ip(&self) -> &str {
        &self.host_ip
    }

    /// Drops every packet in and out of the namespace.
    ///
    /// # Errors
    /// [`ChaosError::Missing`] when `nft` fails.
    pub fn cut(&mut self) -> Result<(), ChaosError> {
        self.in_ns("nft", &["add", "table", "inet", "chaos"])?;
        for hook in ["input", "output"] {
            let chain = format!("{{ type filter hook {hook} priority 0; policy drop; }}");
            self.in_ns("nft", &["add", "chain", "inet", "chaos", hook, &chain])?;
        }
        self.cut = true;
        Ok(())
    }

    /// Removes the cut.
    ///
    /// # Errors
    /// [`ChaosError::Missing`] when `nft` fails.
    pub fn restore(&mut self) -> Result<(), ChaosError> {
        if self.cut {
            self.in_ns("nft", &["delete", "table", "inet", "chaos"])?;
            self.cut = false;
        }
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}
