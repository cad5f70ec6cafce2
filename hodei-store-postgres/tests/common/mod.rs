//! A fresh database per test on the server named by `HODEI_TEST_DATABASE_URL`.
//!
//! Without that variable the tests say SKIPPED loudly and pass, unless
//! `CI=true`, where a missing database is a failure.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use hodei_core::testing::require;
use hodei_store_postgres::{PgStoreConfig, PgStores, connect};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};

/// The server URL, or `None` after printing SKIPPED (panics under `CI=true`).
pub fn server_url(test: &str) -> Option<String> {
    require::require_env("HODEI_TEST_DATABASE_URL", test)
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// A database created for one test; [`TestDb::drop_db`] removes it.
pub struct TestDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates an empty database (no migrations yet), or `None` when skipping.
    pub async fn create(test: &str) -> Option<TestDb> {
        let admin_url = server_url(test)?;
        let name = format!("hodei_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        Some(TestDb {
            admin_url,
            name,
            url,
        })
    }

    /// The stores, migrated, on a small pool.
    pub async fn stores(&self) -> PgStores {
        let config = PgStoreConfig::new(&self.url)
            .with_max_connections(8)
            .with_connect_timeout(Duration::from_secs(30));
        connect(&config).await.unwrap()
    }

    /// A pool without migrations.
    pub async fn pool(&self, max: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max)
            .connect(&self.url)
            .await
            .unwrap()
    }

    /// Drops the database, closing whatever still uses it.
    pub async fn drop_db(self) {
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.ok();
    }
}

#[test]
fn database_name_replaced() {
    assert_eq!(
        with_database("postgres://u@h:5/postgres", "x"),
        "postgres://u@h:5/x"
    );
    assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
}
