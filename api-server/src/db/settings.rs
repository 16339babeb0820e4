//! Global key/value settings (`app_settings`). Values of sensitive keys arrive here already
//! encrypted; this layer never sees plaintext secrets.

use uuid::Uuid;

use super::{Db, DbResult, WritePool, now, with_db};

/// A stored setting.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettingRow {
    pub key: String,
    pub value: String,
}

impl Db {
    /// Every stored setting.
    pub async fn list_settings(&self) -> DbResult<Vec<SettingRow>> {
        with_db!(self, pool => {
            Ok(sqlx::query_as("SELECT key, value FROM app_settings ORDER BY key").fetch_all(pool).await?)
        })
    }

    /// Applies every change in one transaction: `Some(value)` upserts, `None` deletes.
    pub async fn write_settings(&self, changes: &[(String, Option<String>)]) -> DbResult<()> {
        let ts = now();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (key, value) in changes {
                match value {
                    Some(value) => {
                        sqlx::query(
                            "INSERT INTO app_settings (id, key, value, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $4) \
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                        )
                        .bind(Uuid::new_v4())
                        .bind(key)
                        .bind(value)
                        .bind(ts)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM app_settings WHERE key = $1")
                            .bind(key)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
