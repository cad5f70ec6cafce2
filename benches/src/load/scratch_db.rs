//! Throwaway databases for the load tool's Postgres runs: each run gets a
//! database of its own on the given server (its figures never see another
//! run's rows), dropped afterwards.

use hodei_store_postgres::sqlx::{Connection, Executor, PgConnection};

use super::LoadError;

/// Creates database `name` (dropping a leftover of that name) on the server of
/// `admin_url` and returns its URL.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, LoadError> {
    let db_err = |e: hodei_store_postgres::sqlx::Error| {
        LoadError::Check(format!("Postgres at {admin_url}: {e}"))
    };
    let mut conn = PgConnection::connect(admin_url).await.map_err(db_err)?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .map_err(db_err)?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .map_err(db_err)?;
    let _ = conn.close().await;
    let (prefix, query) = match admin_url.split_once('?') {
        Some((p, q)) => (p, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let prefix = prefix.rsplit_once('/').map_or(prefix, |(p, _)| p);
    Ok(format!("{prefix}/{name}{query}"))
}

/// Drops database `name` (best effort: the figures are already taken).
pub async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut conn) = PgConnection::connect(admin_url).await {
        let _ = conn
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        let _ = conn.close().await;
    }
}
