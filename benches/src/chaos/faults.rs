//! The faults the suite injects, and what each needs from the round's setup.

use std::time::Duration;

/// One kind of fault. Each round injects one kind several times, at random
/// (seeded) points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
#[non_exhaustive]
pub enum Fault {
    /// `kill -9` of the server while submissions are in flight, then a restart on
    /// the same ports and database.
    KillServerSubmit,
    /// `kill -9` of the server while workers are being provisioned (agents start
    /// slowly through a wrapper that sleeps before exec'ing `hodei-worker`).
    KillServerProvisioning,
    /// `kill -9` of the server while jobs run.
    KillServerRun,
    /// `kill -9` of the server the moment a job printed its last line (its result
    /// is on the way).
    KillServerResult,
    /// `kill -9` of the agent running a job.
    KillAgent,
    /// `SIGSTOP` of the replica holding the maintenance lease for longer than the
    /// lease, then `SIGCONT`, with a second replica on the same database.
    SigstopLeader,
    /// Postgres stopped (`pg_ctl stop -m immediate`) and started again.
    PgRestart,
    /// The agents' network cut (their veth in a network namespace set down) for
    /// longer than the heartbeat loss window, then restored.
    Netcut,
}

impl Fault {
    /// Every fault, in table order.
    pub const ALL: [Fault; 8] = [
        Fault::KillServerSubmit,
        Fault::KillServerProvisioning,
        Fault::KillServerRun,
        Fault::KillServerResult,
        Fault::KillAgent,
        Fault::SigstopLeader,
        Fault::PgRestart,
        Fault::Netcut,
    ];

    /// The faults of `--quick`: cheap ones, no second replica, no namespace.
    pub const QUICK: [Fault; 3] = [Fault::KillServerRun, Fault::KillAgent, Fault::PgRestart];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillServerSubmit => "kill-server-submit",
            Fault::KillServerProvisioning => "kill-server-provisioning",
            Fault::KillServerRun => "kill-server-run",
            Fault::KillServerResult => "kill-server-result",
            Fault::KillAgent => "kill-agent",
            Fault::SigstopLeader => "sigstop-leader",
            Fault::PgRestart => "pg-restart",
            Fault::Netcut => "netcut",
        }
    }

    /// Whether the round runs two replicas on one database.
    pub fn two_replicas(self) -> bool {
        self == Fault::SigstopLeader
    }

    /// How long agents sleep before exec'ing `hodei-worker`.
    pub fn agent_start_delay(self) -> Option<Duration> {
        (self == Fault::KillServerProvisioning).then_some(Duration::from_secs(3))
    }

    /// Whether agents run in a network namespace.
    pub fn needs_netns(self) -> bool {
        self == Fault::Netcut
    }

    /// Whether the run must own its Postgres.
    pub fn needs_own_postgres(self) -> bool {
        self == Fault::PgRestart
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
