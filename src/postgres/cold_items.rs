//! Cold-start items of model versions (`tfllmer.cold_item_store`): items
//! with an LLM embedding and no interactions in training, served beside a
//! version's trained items. Each row holds the item's row in the version's
//! item table (as stored, before the model's normalisation) and its init
//! row (the Rec-PCA
//! projection of its LLM embedding), from which a later version maps it
//! again. `model_store.n_cold_items` counts them; changing it changes the
//! version row's xmin, which is how every backend's cache learns that the
//! version's items changed (models::VersionKey).

use pgrx::pg_sys;
use pgrx::prelude::*;
use tfllmer_core::cold::ColdMap;

use super::errors::{raise, Code};
use super::spi::{first_value, spi_failed, write_returning};

/// Rows written per INSERT statement.
const BATCH_ROWS: usize = 4096;

/// Cold items of one version, ascending by id.
#[derive(Clone, Debug, Default)]
pub struct ColdRows {
    pub ids: Vec<i64>,
    /// ids.len() × dim: the rows as the model scores them
    pub rows: Vec<f32>,
    /// ids.len() × dim: the init rows they were mapped from
    pub init_rows: Vec<f32>,
}

impl ColdRows {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Sorted by item id (rows follow their ids).
    pub fn sorted(self, dim: usize) -> Self {
        let mut order: Vec<usize> = (0..self.ids.len()).collect();
        order.sort_unstable_by_key(|&r| self.ids[r]);
        let take = |src: &[f32]| order.iter().flat_map(|&r| src[r * dim..(r + 1) * dim].iter().copied()).collect();
        Self {
            ids: order.iter().map(|&r| self.ids[r]).collect(),
            rows: take(&self.rows),
            init_rows: take(&self.init_rows),
        }
    }
}

/// Whether this database's catalog has cold items (one older than 0.5.0,
/// before ALTER EXTENSION UPDATE, has not). A syscache lookup.
pub fn catalog_has_cold_items() -> bool {
    // SAFETY: syscache lookups by name, with missing_ok: no ERROR, 0 for none
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"tfllmer".as_ptr(), true);
        schema != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"cold_item_store".as_ptr(), schema) != pg_sys::InvalidOid
    }
}

/// The cold items of `version` of `model_name` (the caller's view: row
/// level security applies), ascending by id; rows of another width than
/// `dim` are a corrupt catalog.
pub fn read(model_name: &str, version: i32, dim: usize) -> ColdRows {
    let mut out = ColdRows::default();
    if !catalog_has_cold_items() {
        return out;
    }
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT item_id, embedding, init_row FROM tfllmer.cold_item_store
              WHERE model_name = $1 AND version = $2 ORDER BY item_id",
            None,
            &[model_name.into(), version.into()],
        )?;
        for row in rows {
            let id = row.get::<i64>(1)?;
            let embedding = row.get::<Vec<f32>>(2)?;
            let init = row.get::<Vec<f32>>(3)?;
            match (id, embedding, init) {
                (Some(id), Some(e), Some(i)) if e.len() == dim && i.len() == dim => {
                    out.ids.push(id);
                    out.rows.extend_from_slice(&e);
                    out.init_rows.extend_from_slice(&i);
                }
                (id, _, _) => raise(
                    Code::ERRCODE_DATA_CORRUPTED,
                    format!(
                        "model \"{model_name}\" version {version}: cold item {} has no vector of {dim} values",
                        id.map_or("NULL".to_string(), |i| i.to_string())
                    ),
                ),
            }
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .unwrap_or_else(|e| spi_failed(e));
    out
}

/// Stores cold items of a version (as the current role; the caller has
/// checked that none is in the version yet).
pub fn insert(model_name: &str, version: i32, cold: &ColdRows, dim: usize) {
    let query = format!(
        "INSERT INTO tfllmer.cold_item_store (model_name, version, item_id, embedding, init_row)
         SELECT $1, $2, ($3::int8[])[i], ($4::real[])[(i - 1) * {dim} + 1 : i * {dim}],
                ($5::real[])[(i - 1) * {dim} + 1 : i * {dim}]
           FROM pg_catalog.generate_series(1, pg_catalog.cardinality($3::int8[])) AS i"
    );
    for start in (0..cold.len()).step_by(BATCH_ROWS) {
        let end = (start + BATCH_ROWS).min(cold.len());
        let ids = cold.ids[start..end].to_vec();
        let rows = cold.rows[start * dim..end * dim].to_vec();
        let inits = cold.init_rows[start * dim..end * dim].to_vec();
        Spi::connect_mut(|client| {
            client
                .update(&query, None, &[model_name.into(), version.into(), ids.into(), rows.into(), inits.into()])
                .map(|_| ())
        })
        .unwrap_or_else(|e| spi_failed(e));
        pgrx::check_for_interrupts!();
    }
}

/// Which of `ids` (ascending) are cold items of the version already,
/// ascending. One index probe per id: the version's other cold items are
/// not read.
pub fn existing(model_name: &str, version: i32, ids: &[i64]) -> Vec<i64> {
    if !catalog_has_cold_items() || ids.is_empty() {
        return Vec::new();
    }
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT item_id FROM tfllmer.cold_item_store
              WHERE model_name = $1 AND version = $2 AND item_id = ANY ($3) ORDER BY item_id",
            None,
            &[model_name.into(), version.into(), ids.to_vec().into()],
        )?;
        let mut found = Vec::new();
        for row in rows {
            found.extend(row.get::<i64>(1)?);
        }
        Ok::<_, pgrx::spi::Error>(found)
    })
    .unwrap_or_else(|e| spi_failed(e))
}

/// Deletes the cold items `ids` of a version; returns the ids deleted.
pub fn delete(model_name: &str, version: i32, ids: &[i64]) -> Vec<i64> {
    Spi::connect_mut(|client| {
        let rows = client.update(
            "DELETE FROM tfllmer.cold_item_store WHERE model_name = $1 AND version = $2 AND item_id = ANY ($3)
             RETURNING item_id",
            None,
            &[model_name.into(), version.into(), ids.to_vec().into()],
        )?;
        let mut gone = Vec::with_capacity(rows.len());
        for row in rows {
            gone.extend(row.get::<i64>(1)?);
        }
        Ok::<_, pgrx::spi::Error>(gone)
    })
    .unwrap_or_else(|e| spi_failed(e))
}

/// Adds `delta` (the rows just inserted, or minus those just deleted) to the
/// version's n_cold_items and returns it: O(1), whatever the number of cold
/// items. The version row changes, so caches reload it.
pub fn adjust_count(model_name: &str, version: i32, delta: i64) -> i64 {
    write_returning::<i64>(
        "UPDATE tfllmer.model_store SET n_cold_items = n_cold_items + $3
          WHERE model_name = $1 AND version = $2 RETURNING n_cold_items",
        &[model_name.into(), version.into(), delta.into()],
    )
    .unwrap_or(0)
}

/// The cold-item map of a version, if it has one.
pub fn cold_map(model_name: &str, version: i32) -> Option<ColdMap> {
    if !catalog_has_cold_items() {
        return None;
    }
    let bytes = first_value::<Vec<u8>>(
        "SELECT cold_map FROM tfllmer.model_store WHERE model_name = $1 AND version = $2",
        &[model_name.into(), version.into()],
    )?;
    Some(ColdMap::decode(&bytes).unwrap_or_else(|e| {
        raise(Code::ERRCODE_DATA_CORRUPTED, format!("model \"{model_name}\" version {version}: {e}"))
    }))
}
