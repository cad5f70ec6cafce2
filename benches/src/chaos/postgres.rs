//! The Postgres the suite runs on: a throwaway PostgreSQL 15 cluster it owns (so it
//! may stop and start it), or an external one given by URL (then the
//! `pg-restart` fault cannot run). One fresh database per round.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hodei_store_postgres::sqlx::{Connection, Executor, PgConnection};

use super::ChaosError;

/// Where the PostgreSQL 15 server binaries are installed (Debian layout).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A cluster owned by this run: `initdb` as user `postgres` (via `runuser`) in a
/// temp dir on a free port; stopped (`-m immediate`) and removed on drop.
#[derive(Debug)]
pub struct OwnCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnCluster {
    /// Creates and starts a cluster.
    ///
    /// # Errors
    /// [`ChaosError::Missing`] when the binaries, the `postgres` user or root rights
    /// are missing; [`ChaosError::Command`] when `initdb` or `pg_ctl` fails.
    pub fn start() -> Result<Self, ChaosError> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            return Err(ChaosError::Missing(format!(
                "PostgreSQL 15 binaries not found at {PG_BIN} (apt-get install postgresql-15), \
                 and no --database-url given"
            )));
        }
        if !succeeds(Command::new("runuser").args(["-u", "postgres", "--", "true"])) {
            return Err(ChaosError::Missing(
                "cannot run commands as user `postgres` (needs root and the user)".into(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("hodei-chaos-pg")
            .tempdir()
            .map_err(|e| ChaosError::io("temp dir for Postgres", e))?;
        run(Command::new("chown")
            .arg("-R")
            .arg("postgres")
            .arg(dir.path()))?;
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "postgres"]))?;
        let cluster = Self {
            dir,
            port: crate::load::server::free_port()
                .map_err(|e| ChaosError::Missing(format!("free port: {e}")))?,
        };
        cluster.start_again()?;
        Ok(cluster)
    }

    /// `postgres://…/postgres` on this cluster.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), ChaosError> {
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args))
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    ///
    /// # Errors
    /// [`ChaosError::Command`] when `pg_ctl start` fails.
    pub fn start_again(&self) -> Result<(), ChaosError> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.log_path().display().to_string();
        self.pg_ctl(&["-l", &log, "-w", "-t", "120", "-o", &opts, "start"])
    }

    /// `pg_ctl stop -m immediate`: every backend dies at once, as in a crash.
    ///
    /// # Errors
    /// [`ChaosError::Command`] when `pg_ctl stop` fails.
    pub fn stop_immediate(&self) -> Result<(), ChaosError> {
        self.pg_ctl(&["-m", "immediate", "-w", "-t", "60", "stop"])
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

/// The database server of a run.
#[derive(Debug)]
pub enum Database {
    /// A cluster this run owns.
    Own(OwnCluster),
    /// An external server (`--database-url` / `HODEI_TEST_DATABASE_URL`).
    External(String),
}

impl Database {
    /// URL of the server's maintenance database.
    pub fn url(&self) -> String {
        match self {
            Self::Own(c) => c.url(),
            Self::External(u) => u.clone(),
        }
    }

    /// The owned cluster, when this run may stop it.
    pub fn own(&self) -> Option<&OwnCluster> {
        match self {
            Self::Own(c) => Some(c),
            Self::External(_) => None,
        }
    }

    /// Creates database `name` and returns its URL.
    ///
    /// # Errors
    /// [`ChaosError::Database`] when connecting or creating fails.
    pub async fn create(&self, name: &str) -> Result<String, ChaosError> {
        let base = self.url();
        let mut conn = PgConnection::connect(&base).await?;
        conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        let _ = conn.close().await;
        let prefix = base.rsplit_once('/').map_or(base.as_str(), |(p, _)| p);
        Ok(format!("{prefix}/{name}"))
    }

    /// Drops database `name` (best effort: a round's leftovers must not stop the run).
    pub async fn drop_database(&self, name: &str) {
        if let Ok(mut conn) = PgConnection::connect(&self.url()).await {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
            let _ = conn.close().await;
        }
    }
}

/// The holder of the maintenance lease in `db`, if the lease is current.
///
/// # Errors
/// [`ChaosError::Database`] when the query fails.
pub async fn lease_holder(db: &str) -> Result<Option<String>, ChaosError> {
    let mut conn = PgConnection::connect(db).await?;
    let holder = hodei_store_postgres::sqlx::query_scalar(
        "SELECT holder FROM leader_leases WHERE name = 'hodei-maintenance' \
         AND expires_at >= clock_timestamp()",
    )
    .fetch_optional(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(holder)
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd`, turning a failure into [`ChaosError::Command`] with its output.
///
/// # Errors
/// [`ChaosError::Command`] when it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<(), ChaosError> {
    let line = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ChaosError::Command {
            command: line.clone(),
            output: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ChaosError::Command {
            command: line,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}
