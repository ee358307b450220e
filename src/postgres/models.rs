//! Trained models in `tfllmer.model_store`: one row per version, the newest
//! version of a name is the one in use. Reads run as the caller, so
//! row-level security decides which models a role can use.

use pgrx::prelude::*;
use tfllmer_train::model::{Backbone, ModelConfig, Recommender};
use tfllmer_train::DType;

use super::errors::{raise, raise_with_hint, Code};
use super::spi::{first_pair, first_value, prepared, spi_failed};

pub fn parse_backbone(name: &str) -> Option<Backbone> {
    match name {
        "sasrec" => Some(Backbone::SasRec),
        "gru4rec" => Some(Backbone::Gru4Rec),
        _ => None,
    }
}

/// The newest version of a model, ready to score.
pub struct LoadedModel {
    pub version: i32,
    pub model: Recommender,
    /// item id of token t at index t - 1
    pub item_ids: Vec<i64>,
    pub source_table: pg_sys::Oid,
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
}

pub fn encode_item_ids(ids: &[i64]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

fn decode_item_ids(bytes: &[u8]) -> Option<Vec<i64>> {
    if bytes.len() % 8 != 0 {
        return None;
    }
    Some(bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
}

/// Loads the newest version of `name` the caller can see, or raises:
/// unknown model (42704), or a model with no finished version yet (55000,
/// saying what its latest job is doing).
pub fn load_newest(name: &str) -> LoadedModel {
    load_version(name, None)
}

/// Which stored version is the newest: enough to tell whether a cached copy
/// is still the current one, without reading the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionKey {
    pub version: i32,
    /// the job that trained it (never reused)
    pub job_id: i64,
    /// the transaction that wrote the row: tells a version apart from one of
    /// the same number written after DROP EXTENSION or a restore
    pub row_xmin: i64,
}

/// The newest version of `name` the caller can see (row-level security
/// decides), in the statement's snapshot; None when there is none.
pub fn newest_version(name: &str) -> Option<VersionKey> {
    let found = Spi::connect(|client| {
        // planned once per backend: this runs on every recommendation
        let statement = prepared(
            client,
            "SELECT version, job_id, xmin::text::int8 FROM tfllmer.model_store
              WHERE model_name = $1 ORDER BY version DESC LIMIT 1",
            &[PgOid::BuiltIn(PgBuiltInOids::TEXTOID)],
        )?;
        let rows = client.select(&*statement, Some(1), &[name.into()])?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        Ok::<_, pgrx::spi::Error>(Some(VersionKey {
            version: row.get::<i32>(1)?.unwrap_or(0),
            job_id: row.get::<i64>(2)?.unwrap_or(0),
            row_xmin: row.get::<i64>(3)?.unwrap_or(0),
        }))
    })
    .unwrap_or_else(|e| spi_failed(e));
    found
}

/// Loads `version` of `name` (the newest when None).
pub fn load_version(name: &str, version: Option<i32>) -> LoadedModel {
    struct Row {
        version: i32,
        backbone: String,
        normalize: bool,
        sizes: [i64; 5],
        dropout: f64,
        temperature: Option<f64>,
        table: pg_sys::Oid,
        columns: [String; 3],
        ids: Vec<u8>,
        weights: Vec<u8>,
    }
    let row = Spi::connect(|client| {
        let rows = client.select(
            "SELECT version, backbone, normalized, n_items, dim::int8, max_len::int8, layers::int8, heads::int8,
                    dropout, source_table::oid, user_column::text, item_column::text, time_column::text, item_ids, weights,
                    (options->>'temperature')::float8
               FROM tfllmer.model_store WHERE model_name = $1 AND ($2 IS NULL OR version = $2)
              ORDER BY version DESC LIMIT 1",
            None,
            &[name.into(), version.into()],
        )?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let text = |i: usize| -> Result<String, pgrx::spi::Error> { Ok(row.get::<String>(i)?.unwrap_or_default()) };
        let int = |i: usize| -> Result<i64, pgrx::spi::Error> { Ok(row.get::<i64>(i)?.unwrap_or(0)) };
        Ok::<_, pgrx::spi::Error>(Some(Row {
            version: row.get::<i32>(1)?.unwrap_or(0),
            backbone: text(2)?,
            normalize: row.get::<bool>(3)?.unwrap_or(true),
            sizes: [int(4)?, int(5)?, int(6)?, int(7)?, int(8)?],
            dropout: row.get::<f64>(9)?.unwrap_or(0.0),
            table: row.get::<pg_sys::Oid>(10)?.unwrap_or(pg_sys::InvalidOid),
            columns: [text(11)?, text(12)?, text(13)?],
            ids: row.get::<Vec<u8>>(14)?.unwrap_or_default(),
            weights: row.get::<Vec<u8>>(15)?.unwrap_or_default(),
            temperature: row.get::<f64>(16)?,
        }))
    })
    .unwrap_or_else(|e| spi_failed(e));
    let Some(row) = row else { raise_no_version(name) };
    let version = row.version;
    let corrupt = |what: String| -> ! {
        raise(Code::ERRCODE_DATA_CORRUPTED, format!("model \"{name}\" version {version}: {what}"))
    };
    let backbone =
        parse_backbone(&row.backbone).unwrap_or_else(|| corrupt(format!("unknown backbone {}", row.backbone)));
    let [n_items, dim, max_len, layers, heads] = row.sizes.map(|v| v.max(0) as usize);
    let config = ModelConfig {
        backbone,
        n_items,
        dim,
        max_len,
        layers,
        heads,
        dropout: row.dropout,
        normalize: row.normalize,
        dtype: DType::F32,
        temperature: row.temperature,
    };
    let model = Recommender::from_safetensors(config, &row.weights)
        .unwrap_or_else(|e| corrupt(tfllmer_train::error_message(&e)));
    let item_ids = decode_item_ids(&row.ids)
        .filter(|ids| ids.len() == n_items)
        .unwrap_or_else(|| corrupt("item ids do not match n_items".into()));
    let [user_column, item_column, time_column] = row.columns;
    LoadedModel { version, model, item_ids, source_table: row.table, user_column, item_column, time_column }
}

/// The ERROR for a model with no usable version.
pub fn raise_no_version(name: &str) -> ! {
    let known =
        first_value::<bool>("SELECT EXISTS (SELECT 1 FROM tfllmer.model_names WHERE model_name = $1)", &[name.into()])
            .unwrap_or(false);
    if !known {
        raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("model \"{name}\" does not exist"));
    }
    let latest = first_pair::<i64, String>(
        "SELECT job_id, state FROM tfllmer.jobs WHERE model_name = $1 ORDER BY job_id DESC LIMIT 1",
        &[name.into()],
    )
    .unwrap_or((None, None));
    let doing = match latest {
        (Some(job), Some(state)) if state == "queued" || state == "running" => {
            format!("it is still training (job {job} is {state})")
        }
        (Some(job), Some(state)) => format!("its latest job {job} {state}"),
        _ => "it has no training job".to_string(),
    };
    raise_with_hint(
        Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("model \"{name}\" has no trained version yet: {doing}"),
        "tfllmer.wait_job(job_id) waits for a job; tfllmer.jobs shows its progress and error.",
    )
}
