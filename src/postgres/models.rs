//! Trained models in `tfllmer.model_store`: one row per version, the newest
//! version of a name is the one in use. Reads run as the caller, so
//! row-level security decides which models a role can use.

use pgrx::prelude::*;
use tfllmer_core::vocabulary::Vocabulary;
use tfllmer_train::model::{Backbone, ModelConfig, Recommender};
use tfllmer_train::model_file;
use tfllmer_train::DType;

use super::catalog::catalog_is_current;
use super::cold_items;
use super::errors::{raise, raise_with_hint, Code};
use super::jobs::{self, JobState};
use super::spi::{first_value, in_own_memory, prepared, spi_failed, write_returning};

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
    /// the item of each token
    pub items: Vocabulary,
    pub source_table: pg_sys::Oid,
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
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
    /// where the row is (block · 2¹⁶ + offset): every UPDATE of it (cold
    /// items added or dropped) moves it, even twice in one transaction,
    /// whose xmin stays the same
    pub row_ctid: i64,
}

/// The newest version of `name` the caller can see (row-level security
/// decides), in the statement's snapshot; None when there is none.
pub fn newest_version(name: &str) -> Option<VersionKey> {
    let found = Spi::connect(|client| {
        // planned once per backend: this runs on every recommendation
        let statement = prepared(
            client,
            "SELECT version, job_id, xmin::text::int8,
                    (ctid::text::point)[0]::int8 * 65536 + (ctid::text::point)[1]::int8
               FROM tfllmer.model_store WHERE model_name = $1 ORDER BY version DESC LIMIT 1",
            &[PgOid::BuiltIn(PgBuiltInOids::TEXTOID)],
        )?;
        let rows = client.select(&*statement, Some(1), &[name.into()])?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        Ok::<_, pgrx::spi::Error>(Some((
            row.get::<i32>(1)?,
            row.get::<i64>(2)?,
            row.get::<i64>(3)?,
            row.get::<i64>(4)?.unwrap_or(0),
        )))
    })
    .unwrap_or_else(|e| spi_failed(e));
    match found? {
        (Some(version), Some(job_id), Some(row_xmin), row_ctid) => {
            Some(VersionKey { version, job_id, row_xmin, row_ctid })
        }
        _ => raise(Code::ERRCODE_DATA_CORRUPTED, format!("model \"{name}\": its newest version has no number or job")),
    }
}

/// A stored version's vocabulary (item_ids) and weights.
struct Blobs {
    ids: Vec<u8>,
    weights: Vec<u8>,
}

/// What a stored version is, without its weights.
pub struct VersionMeta {
    pub version: i32,
    /// the trained items' model (config.n_items counts those only)
    pub config: ModelConfig,
    /// cold-start items served beside them
    pub n_cold_items: usize,
    pub source_table: pg_sys::Oid,
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
}

/// Reads `version` of `name` (the newest when None): its description, and
/// with `blobs` its vocabulary and weights. A stored row with a NULL or
/// out-of-range value where a trained version always has one is corrupt
/// (XX001, naming the column), never a silent default.
fn read_version(name: &str, version: Option<i32>, blobs: bool) -> (VersionMeta, Option<Blobs>) {
    // the weights are detoasted (and copied) by PostgreSQL: free that copy at once
    in_own_memory("tfllmer model read", || read_version_in(name, version, blobs))
}

fn read_version_in(name: &str, version: Option<i32>, blobs: bool) -> (VersionMeta, Option<Blobs>) {
    struct Row {
        version: Option<i32>,
        backbone: Option<String>,
        normalize: Option<bool>,
        sizes: [Option<i64>; 5],
        dropout: Option<f64>,
        temperature: Option<f64>,
        table: Option<pg_sys::Oid>,
        columns: [Option<String>; 3],
        ids: Option<Vec<u8>>,
        weights: Option<Vec<u8>>,
        n_cold: Option<i64>,
    }
    // (a catalog older than 0.5.0, before ALTER EXTENSION UPDATE, has no cold items)
    let n_cold = if cold_items::catalog_has_cold_items() { "n_cold_items" } else { "0::int8" };
    let row = Spi::connect(|client| {
        let rows = client.select(
            &format!(
                "SELECT version, backbone, normalized, n_items, dim::int8, max_len::int8, layers::int8, heads::int8,
                        dropout, source_table::oid, user_column::text, item_column::text, time_column::text,
                        CASE WHEN $3 THEN item_ids END, CASE WHEN $3 THEN weights END,
                        (options->>'temperature')::float8, {n_cold}
                   FROM tfllmer.model_store WHERE model_name = $1 AND ($2 IS NULL OR version = $2)
                  ORDER BY version DESC LIMIT 1"
            ),
            None,
            &[name.into(), version.into(), blobs.into()],
        )?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let int = |i: usize| row.get::<i64>(i);
        Ok::<_, pgrx::spi::Error>(Some(Row {
            version: row.get::<i32>(1)?,
            backbone: row.get::<String>(2)?,
            normalize: row.get::<bool>(3)?,
            sizes: [int(4)?, int(5)?, int(6)?, int(7)?, int(8)?],
            dropout: row.get::<f64>(9)?,
            table: row.get::<pg_sys::Oid>(10)?,
            columns: [row.get::<String>(11)?, row.get::<String>(12)?, row.get::<String>(13)?],
            ids: row.get::<Vec<u8>>(14)?,
            weights: row.get::<Vec<u8>>(15)?,
            temperature: row.get::<f64>(16)?,
            n_cold: row.get::<i64>(17)?,
        }))
    })
    .unwrap_or_else(|e| spi_failed(e));
    let Some(row) = row else { raise_no_version(name) };
    let version = row.version.unwrap_or_else(|| {
        raise(Code::ERRCODE_DATA_CORRUPTED, format!("model \"{name}\": a stored version has no number"))
    });
    let corrupt = |what: String| -> ! { raise_corrupt(name, version, what) };
    let missing = |column: &str| -> ! { corrupt(format!("{column} is NULL")) };
    let backbone_name = row.backbone.unwrap_or_else(|| missing("backbone"));
    let backbone =
        parse_backbone(&backbone_name).unwrap_or_else(|| corrupt(format!("unknown backbone {backbone_name}")));
    let names = ["n_items", "dim", "max_len", "layers", "heads"];
    let mut sizes = [0usize; 5];
    for ((size, value), column) in sizes.iter_mut().zip(row.sizes).zip(names) {
        let value = value.unwrap_or_else(|| missing(column));
        *size = usize::try_from(value).unwrap_or_else(|_| corrupt(format!("{column} is {value}")));
    }
    let [n_items, dim, max_len, layers, heads] = sizes;
    let config = ModelConfig {
        backbone,
        n_items,
        dim,
        max_len,
        layers,
        heads,
        dropout: row.dropout.unwrap_or_else(|| missing("dropout")),
        normalize: row.normalize.unwrap_or_else(|| missing("normalized")),
        dtype: DType::F32,
        temperature: row.temperature,
    };
    let [user, item, time] = row.columns;
    let n_cold_items = row.n_cold.unwrap_or_else(|| missing("n_cold_items"));
    let meta = VersionMeta {
        version,
        n_cold_items: usize::try_from(n_cold_items)
            .unwrap_or_else(|_| corrupt(format!("n_cold_items is {n_cold_items}"))),
        config,
        source_table: row.table.unwrap_or_else(|| missing("source_table")),
        user_column: user.unwrap_or_else(|| missing("user_column")),
        item_column: item.unwrap_or_else(|| missing("item_column")),
        time_column: time.unwrap_or_else(|| missing("time_column")),
    };
    let blobs = blobs.then(|| Blobs {
        ids: row.ids.unwrap_or_else(|| missing("item_ids")),
        weights: row.weights.unwrap_or_else(|| missing("weights")),
    });
    (meta, blobs)
}

/// What `version` of `name` is (the newest when None), without its weights;
/// raises as [`load_version`] does.
pub fn describe_version(name: &str, version: Option<i32>) -> VersionMeta {
    read_version(name, version, false).0
}

fn raise_corrupt(name: &str, version: i32, what: String) -> ! {
    raise(Code::ERRCODE_DATA_CORRUPTED, format!("model \"{name}\" version {version}: {what}"))
}

/// Loads `version` of `name` (the newest when None), whole.
pub fn load_version(name: &str, version: Option<i32>) -> LoadedModel {
    let (meta, blobs) = read_version(name, version, true);
    let Some(Blobs { ids, weights }) = blobs else { raise_corrupt(name, meta.version, "no weights".to_string()) };
    let corrupt = |what: String| -> ! { raise_corrupt(name, meta.version, what) };
    let n_items = meta.config.n_items;
    let model = Recommender::from_safetensors(meta.config.clone(), &weights)
        .unwrap_or_else(|e| corrupt(tfllmer_train::error_message(&e)));
    drop(weights);
    let items = Vocabulary::decode(&ids, n_items).unwrap_or_else(|e| corrupt(e.to_string()));
    let (model, items) = if meta.n_cold_items > 0 {
        // cold items after the trained ones: tokens n_items+1..
        let dim = meta.config.dim;
        let cold = cold_items::read(name, meta.version, dim);
        let mut rows = model.item_rows().unwrap_or_else(|e| corrupt(tfllmer_train::error_message(&e)));
        rows.extend_from_slice(&cold.rows);
        let items = items.with_cold(cold.ids).unwrap_or_else(|e| corrupt(e.to_string()));
        let model =
            model.with_item_rows(items.len(), &rows).unwrap_or_else(|e| corrupt(tfllmer_train::error_message(&e)));
        (model, items)
    } else {
        (model, items)
    };
    LoadedModel {
        version: meta.version,
        model,
        items,
        source_table: meta.source_table,
        user_column: meta.user_column,
        item_column: meta.item_column,
        time_column: meta.time_column,
    }
}

/// Loads the encoder of `version` of `name` without its item table and
/// vocabulary (see tfllmer_train::model_file): the stored weights are read
/// in the byte ranges of the encoder's tensors only (`weights` is stored
/// uncompressed out of line, so PostgreSQL reads only the TOAST chunks of
/// those ranges). Returns the model's description (with its real n_items)
/// and the encoder (a model of n_items 0).
pub fn load_encoder(name: &str, version: i32) -> (VersionMeta, Recommender) {
    in_own_memory("tfllmer encoder read", || load_encoder_in(name, version))
}

fn load_encoder_in(name: &str, version: i32) -> (VersionMeta, Recommender) {
    let (meta, _) = read_version(name, Some(version), false);
    let corrupt = |what: String| -> ! { raise_corrupt(name, version, what) };
    let range = |from: usize, len: usize| -> Vec<u8> {
        first_value::<Vec<u8>>(
            "SELECT substring(weights FROM $3::int4 FOR $4::int4) FROM tfllmer.model_store WHERE model_name = $1 AND version = $2",
            &[name.into(), version.into(), (from as i64 + 1).into(), (len as i64).into()],
        )
        .unwrap_or_else(|| corrupt("weights vanished while being read".to_string()))
    };
    let header_len = model_file::header_len(&range(0, 8)).unwrap_or_else(|e| corrupt(tfllmer_train::error_message(&e)));
    let layout = model_file::ModelFileLayout::parse(&range(8, header_len))
        .unwrap_or_else(|e| corrupt(tfllmer_train::error_message(&e)));
    let tensors = layout.encoder_tensors();
    // every range in one statement
    let (starts, lengths): (Vec<i64>, Vec<i64>) =
        tensors.iter().map(|t| (t.bytes.start as i64 + 1, (t.bytes.end - t.bytes.start) as i64)).unzip();
    let parts = Spi::connect(|client| {
        let rows = client.select(
            "SELECT substring(s.weights FROM r.start::int4 FOR r.len::int4)
               FROM tfllmer.model_store s, unnest($3::int8[], $4::int8[]) WITH ORDINALITY AS r(start, len, i)
              WHERE s.model_name = $1 AND s.version = $2 ORDER BY r.i",
            None,
            &[name.into(), version.into(), starts.into(), lengths.into()],
        )?;
        let mut parts = Vec::with_capacity(rows.len());
        for row in rows {
            parts.push(row.get::<Vec<u8>>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::Error>(parts)
    })
    .unwrap_or_else(|e| spi_failed(e));
    if parts.iter().zip(&tensors).any(|(p, t)| p.len() != t.bytes.end - t.bytes.start) {
        corrupt("the weights are shorter than their header says".to_string());
    }
    let encoder = model_file::encoder_from_parts(&meta.config, &layout, &parts)
        .unwrap_or_else(|e| corrupt(tfllmer_train::error_message(&e)));
    (meta, encoder)
}

/// A trained version to store.
pub struct NewVersion<'a> {
    pub model_name: &'a str,
    pub job_id: i64,
    pub config: &'a ModelConfig,
    pub dropout: f64,
    pub n_users: i64,
    pub epochs: usize,
    pub best_epoch: usize,
    pub valid_ndcg10: f64,
    pub test_hr10: f64,
    pub test_ndcg10: f64,
    /// users the test figures were computed on
    pub test_users: i64,
    /// the options as the job resolved them (loss, eval_users filled in)
    pub options: serde_json::Value,
    /// the vocabulary's stored form
    pub item_ids: Vec<u8>,
    /// safetensors
    pub weights: Vec<u8>,
    /// the cold-item map's stored form (tfllmer_core::cold), when there is one
    pub cold_map: Option<Vec<u8>>,
}

/// Inserts the next version of a model (the job row supplies what train()
/// recorded: table, columns, options); returns its number.
pub fn insert_version(v: &NewVersion<'_>) -> i32 {
    let int = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    Spi::run_with_args(
        "INSERT INTO tfllmer.model_names (model_name) VALUES ($1) ON CONFLICT DO NOTHING",
        &[v.model_name.into()],
    )
    .unwrap_or_else(|e| spi_failed(e));
    // (a catalog older than 0.4.0, before ALTER EXTENSION UPDATE, has no test_users)
    let (test_users_column, test_users_value) = if catalog_is_current() { (", test_users", ", $17") } else { ("", "") };
    let version = write_returning::<i32>(
        &format!(
            "INSERT INTO tfllmer.model_store (model_name, version, job_id, backbone, normalized, init, n_items, n_users,
                dim, max_len, layers, heads, dropout, options, source_table, source_name, user_column, item_column,
                time_column, epochs, best_epoch, valid_ndcg10, test_hr10, test_ndcg10, item_ids, weights{test_users_column})
         SELECT $1, coalesce((SELECT max(version) FROM tfllmer.model_store WHERE model_name = $1), 0) + 1,
                $2, j.backbone, j.normalize, j.init, $3, $4, $5, $6, $7, $8, $9, $18, j.source_table,
                j.source_name, j.user_column, j.item_column, j.time_column, $10, $11, $12, $13, $14, $15, $16{test_users_value}
           FROM tfllmer.job_store j WHERE j.job_id = $2
         RETURNING version"
        ),
        &[
            v.model_name.into(),
            v.job_id.into(),
            (v.config.n_items as i64).into(),
            v.n_users.into(),
            int(v.config.dim).into(),
            int(v.config.max_len).into(),
            int(v.config.layers).into(),
            int(v.config.heads).into(),
            v.dropout.into(),
            int(v.epochs).into(),
            int(v.best_epoch).into(),
            v.valid_ndcg10.into(),
            v.test_hr10.into(),
            v.test_ndcg10.into(),
            v.item_ids.as_slice().into(),
            v.weights.as_slice().into(),
            v.test_users.into(),
            pgrx::JsonB(v.options.clone()).into(),
        ],
    )
    .unwrap_or_else(|| raise(Code::ERRCODE_INTERNAL_ERROR, format!("job {}: the job row vanished", v.job_id)));
    // (a catalog older than 0.5.0 has no place for the map)
    if let Some(map) = v.cold_map.as_ref().filter(|_| cold_items::catalog_has_cold_items()) {
        Spi::run_with_args(
            "UPDATE tfllmer.model_store SET cold_map = $3 WHERE model_name = $1 AND version = $2",
            &[v.model_name.into(), version.into(), map.as_slice().into()],
        )
        .unwrap_or_else(|e| spi_failed(e));
    }
    version
}

/// Raises 42501 unless the current role owns `version` of `name` (a member
/// of the owner's role sees the model, but only its owner may `what`).
pub fn require_owner(name: &str, version: i32, what: &str) {
    let (mine, owner) = super::spi::first_pair::<bool, String>(
        "SELECT owner = tfllmer.current_role_oid(), pg_catalog.pg_get_userbyid(owner)::text
           FROM tfllmer.model_store WHERE model_name = $1 AND version = $2",
        &[name.into(), version.into()],
    )
    .unwrap_or_else(|| raise_no_version(name));
    if mine != Some(true) {
        raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("model \"{name}\" belongs to role {}: only its owner can {what}", owner.unwrap_or_default()),
        );
    }
}

/// The ERROR for a model with no usable version.
pub fn raise_no_version(name: &str) -> ! {
    let known =
        first_value::<bool>("SELECT EXISTS (SELECT 1 FROM tfllmer.model_names WHERE model_name = $1)", &[name.into()])
            .unwrap_or(false);
    if !known {
        raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("model \"{name}\" does not exist"));
    }
    let doing = match jobs::latest_job_of_model(name) {
        Some((job, state @ (JobState::Queued | JobState::Running))) => {
            format!("it is still training (job {job} is {state})")
        }
        Some((job, state)) => format!("its latest job {job} {state}"),
        None => "it has no training job".to_string(),
    };
    raise_with_hint(
        Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("model \"{name}\" has no trained version yet: {doing}"),
        "tfllmer.wait_job(job_id) waits for a job; tfllmer.jobs shows its progress and error.",
    )
}
