//! The real server on a real Postgres: state survives `kill -9` of the server.

use std::time::Duration;

use hodei_core::proto::v1;

use crate::harness::*;

const CANARY: &str = "canary-pg-5d1e9b7a";
const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

#[tokio::test]
async fn kill_9_of_the_server_loses_no_job() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let env = [
        ("HODEI_DATABASE_URL", db.as_str()),
        ("HODEI_SECRETS_KEY", KEY),
        ("HODEI_MAX_WORKERS", "4"),
        ("HODEI_WORKER_LOST_AFTER_MS", "4000"),
    ];
    let mut s = start_server(&env).await;
    let (grpc, http) = (s.grpc_port(), s.http_port());
    let mut ids = Vec::new();
    for i in 0..40 {
        let spec =
            script(&format!("sleep 0.3; echo done-{i}")).with_secret("TOKEN", "s3cr3t-value");
        ids.push((i, s.submit(spec).await));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.kill9();
    // Same ports: the agents of the killed server come back to the new one.
    let s2 = start_server_at(grpc, http, &env).await;
    for (i, id) in &ids {
        let j = s2.wait_done(id, Duration::from_secs(120)).await;
        assert_eq!(
            j.state,
            v1::JobState::Succeeded as i32,
            "job {i} after the restart: {} {}",
            state_name(j.state),
            j.error
        );
        assert!(
            s2.log_lines(id).await.contains(&format!("done-{i}")),
            "job {i} logs kept"
        );
    }
    // Secrets at rest: no table holds the canary in plaintext (nor in the logs).
    {
        use hodei_store_postgres::sqlx::{Connection, PgConnection, Row};
        let mut conn = PgConnection::connect(&db).await.unwrap();
        for table in [
            "jobs",
            "job_queue",
            "workers",
            "providers",
            "job_logs",
            "otp_tokens",
        ] {
            let row = hodei_store_postgres::sqlx::query(&format!(
                "SELECT coalesce(string_agg(t::text, ''), '') AS dump FROM {table} t"
            ))
            .fetch_one(&mut conn)
            .await
            .unwrap();
            let dump: String = row.get("dump");
            assert!(
                !dump.contains(CANARY),
                "table {table} holds the secret in plaintext"
            );
        }
        let row = hodei_store_postgres::sqlx::query(
            "SELECT count(*) AS n FROM job_logs WHERE position(convert_to($1, 'UTF8') in data) > 0",
        )
        .bind(CANARY)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(row.get::<i64, _>("n"), 0, "a log line holds the secret");
        let row = hodei_store_postgres::sqlx::query(
            "SELECT count(*) AS n FROM jobs WHERE data::text LIKE '%TOKEN%'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(
            row.get::<i64, _>("n") > 0,
            "the scan looked at the stored specs"
        );
    }
    drop(s2);
    drop(s);
    kill_agents_of(grpc);
}
