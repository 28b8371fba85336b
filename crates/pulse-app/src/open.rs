//! Loading the config and opening the store it names.

use std::path::Path;

use anyhow::{Context, Result};
use pulse_config::{Config, StoreBackend};
use pulse_store::AnyStore;
use pulse_store::clickhouse::{ClickHouseSettings, ClickHouseStore};
use pulse_store::lake::LakeStore;

pub fn config(path: &Path) -> Result<Config> {
    Ok(pulse_config::load(path)?)
}

pub fn store(config: &Config) -> Result<AnyStore> {
    match config.store.backend {
        StoreBackend::Lake => Ok(AnyStore::Lake(LakeStore::open(&config.store.lake_dir)?)),
        StoreBackend::Clickhouse => {
            let ch = config.store.clickhouse.as_ref().context("[store.clickhouse] is missing")?;
            let password = match &ch.password {
                Some(r) => Some(
                    config
                        .resolve(r)
                        .with_context(|| {
                            format!("ClickHouse password ({}) in {}", r.describe(), config.path.display())
                        })?
                        .expose()
                        .to_owned(),
                ),
                None => None,
            };
            Ok(AnyStore::ClickHouse(Box::new(ClickHouseStore::new(ClickHouseSettings {
                url: ch.url.clone(),
                database: ch.database.clone(),
                user: ch.user.clone(),
                password,
                cluster: ch.cluster.clone(),
                replica_urls: ch.replica_urls.clone(),
                zookeeper: ch.zookeeper.clone(),
            }))))
        }
    }
}
