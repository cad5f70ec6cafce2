//! [`TemplateStore`] on the `templates` table: one row per version.

use async_trait::async_trait;
use hodei_core::domain::template::JobTemplate;
use hodei_core::store::{StoreError, TemplateStore};
use sqlx::PgPool;

use crate::error::{codec, is_unique_violation, map_err};

/// Saves racing on one name retry with the next free version this many times.
const SAVE_ATTEMPTS: usize = 64;

/// Versioned job templates in Postgres.
#[derive(Debug, Clone)]
pub struct PgTemplateStore {
    pool: PgPool,
}

impl PgTemplateStore {
    /// A store on `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn decode(data: serde_json::Value) -> Result<JobTemplate, StoreError> {
    serde_json::from_value(data).map_err(|e| codec("template", e))
}

#[async_trait]
impl TemplateStore for PgTemplateStore {
    async fn save(&self, template: &JobTemplate) -> Result<JobTemplate, StoreError> {
        // The primary key (name, version) makes a racing save of the same
        // version fail; the loser reads the new maximum and tries the next.
        for _ in 0..SAVE_ATTEMPTS {
            let latest: Option<i32> =
                sqlx::query_scalar("SELECT max(version) FROM templates WHERE name = $1")
                    .bind(template.name())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| map_err("name", e))?;
            let next = latest
                .unwrap_or(0)
                .checked_add(1)
                .ok_or_else(|| StoreError::Invalid {
                    field: "version".into(),
                    message: "too many versions".into(),
                })?;
            let stored = template
                .clone()
                .with_version(u32::try_from(next).unwrap_or(1));
            let data = serde_json::to_value(&stored).map_err(|e| codec("template", e))?;
            let r = sqlx::query("INSERT INTO templates (name, version, data) VALUES ($1, $2, $3)")
                .bind(stored.name())
                .bind(next)
                .bind(&data)
                .execute(&self.pool)
                .await;
            match r {
                Ok(_) => return Ok(stored),
                Err(e) if is_unique_violation(&e, Some("templates_pkey")) => {}
                Err(e) => return Err(map_err("template", e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "template {}: too many concurrent saves",
            template.name()
        )))
    }

    async fn get(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<JobTemplate>, StoreError> {
        let data: Option<serde_json::Value> = match version {
            None => {
                sqlx::query_scalar(
                    "SELECT data FROM templates WHERE name = $1 ORDER BY version DESC LIMIT 1",
                )
                .bind(name)
                .fetch_optional(&self.pool)
                .await
            }
            Some(v) => {
                let Ok(v) = i32::try_from(v) else {
                    return Ok(None);
                };
                sqlx::query_scalar("SELECT data FROM templates WHERE name = $1 AND version = $2")
                    .bind(name)
                    .bind(v)
                    .fetch_optional(&self.pool)
                    .await
            }
        }
        .map_err(|e| map_err("name", e))?;
        data.map(decode).transpose()
    }

    async fn list(&self) -> Result<Vec<JobTemplate>, StoreError> {
        let rows: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT DISTINCT ON (name) data FROM templates ORDER BY name, version DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("template", e))?;
        rows.into_iter().map(decode).collect()
    }

    async fn versions(&self, name: &str) -> Result<Vec<u32>, StoreError> {
        let rows: Vec<i32> =
            sqlx::query_scalar("SELECT version FROM templates WHERE name = $1 ORDER BY version")
                .bind(name)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_err("name", e))?;
        Ok(rows
            .into_iter()
            .filter_map(|v| u32::try_from(v).ok())
            .collect())
    }
}
