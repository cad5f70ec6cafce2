//! [`ProviderConfigRepository`] on the `providers` table.

use std::sync::Arc;

use async_trait::async_trait;
use hodei_core::domain::ids::ProviderId;
use hodei_core::domain::provider::Provider;
use hodei_core::store::{ProviderConfigRepository, StoreError};
use sqlx::PgPool;

use crate::change_feed::ChangeFeed;
use crate::error::{codec, is_unique_violation, map_err};
use crate::kept_read::KeptRead;

/// Registered providers in Postgres; names are unique (a constraint).
#[derive(Debug, Clone)]
pub struct PgProviderConfigRepository {
    pool: PgPool,
    /// Every dispatch pass lists the providers: the list is kept between
    /// changes when the store has a feed.
    listed: Arc<KeptRead<Vec<Provider>>>,
}

impl PgProviderConfigRepository {
    /// A repository on `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            listed: Arc::default(),
        }
    }

    /// Keeps the list between the changes `feed` hears of.
    pub(crate) fn with_changes(mut self, feed: Arc<ChangeFeed>) -> Self {
        self.listed = Arc::new(KeptRead::kept_by(feed));
        self
    }
}

fn decode(data: serde_json::Value) -> Result<Provider, StoreError> {
    serde_json::from_value(data).map_err(|e| codec("provider", e))
}

#[async_trait]
impl ProviderConfigRepository for PgProviderConfigRepository {
    async fn save(&self, provider: &Provider) -> Result<(), StoreError> {
        let data = serde_json::to_value(provider).map_err(|e| codec("provider", e))?;
        let r = sqlx::query(
            "INSERT INTO providers (id, name, data) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, data = EXCLUDED.data",
        )
        .bind(provider.id().as_uuid())
        .bind(provider.name())
        .bind(&data)
        .execute(&self.pool)
        .await;
        self.listed.changed();
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e, Some("providers_name_key")) => {
                Err(StoreError::AlreadyExists {
                    entity: "provider",
                    id: provider.name().to_owned(),
                })
            }
            Err(e) => Err(map_err("provider", e)),
        }
    }

    async fn get(&self, id: ProviderId) -> Result<Option<Provider>, StoreError> {
        let data: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT data FROM providers WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| map_err("provider", e))?;
        data.map(decode).transpose()
    }

    async fn get_by_name(&self, name: &str) -> Result<Option<Provider>, StoreError> {
        let data: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT data FROM providers WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| map_err("name", e))?;
        data.map(decode).transpose()
    }

    async fn list(&self) -> Result<Vec<Provider>, StoreError> {
        self.listed
            .get(|| async {
                let rows: Vec<serde_json::Value> =
                    sqlx::query_scalar("SELECT data FROM providers ORDER BY name COLLATE \"C\"")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(|e| map_err("provider", e))?;
                rows.into_iter().map(decode).collect()
            })
            .await
    }

    async fn delete(&self, id: ProviderId) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM providers WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await;
        self.listed.changed();
        let n = n.map_err(|e| map_err("provider", e))?.rows_affected();
        Ok(n > 0)
    }
}
