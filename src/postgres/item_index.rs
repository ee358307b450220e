//! Item index tables: a model version's item vectors in an ordinary table
//! `tfllmer_items.items_<job id>` (item_id bigint primary key, embedding
//! vector(dim)) with a pgvector HNSW index on inner product, recorded in
//! `tfllmer.item_index_store`. This module owns them: building one (from
//! `create_item_index`, and in the training worker for each new version of
//! an indexed model), finding the one that serves a version, asking it for
//! the best items, and dropping them.
//!
//! pgvector is never a hard dependency: nothing here runs unless the
//! `vector` extension is installed in the database, and its type and
//! operators are always named with the schema it was installed in.

use std::ffi::{CStr, CString};

use pgrx::prelude::*;
use serde_json::{Map, Value};
use tfllmer_core::ranking::best_of;
use tfllmer_core::vocabulary::Vocabulary;

use super::errors::{raise, raise_with_hint, Code};
use super::relation::quote_ident;
use super::spi::{first_value, in_own_memory, prepared, spi_failed, write_returning};

/// The schema the index tables live in (created by the extension).
pub const SCHEMA: &str = "tfllmer_items";

/// Rows written per INSERT while filling a table.
const BATCH_ROWS: usize = 4096;

/// HNSW's search list can be at most this long (pgvector's limit).
const MAX_EF_SEARCH: usize = 1000;

/// pgvector as installed in this database.
#[derive(Clone, Debug)]
pub struct PgVector {
    /// its schema, quoted
    pub schema: String,
    /// (major, minor)
    pub version: (u32, u32),
}

impl PgVector {
    /// Iterative index scans (hnsw.iterative_scan) came with 0.8.0.
    fn iterative_scans(&self) -> bool {
        self.version >= (0, 8)
    }
}

/// pgvector when the `vector` extension is installed in this database.
pub fn pgvector() -> Option<PgVector> {
    let found = Spi::connect(|client| {
        let mut rows = client.select(
            "SELECT n.nspname::text, e.extversion FROM pg_catalog.pg_extension e
               JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'",
            Some(1),
            &[],
        )?;
        match rows.next() {
            Some(row) => Ok::<_, pgrx::spi::Error>(Some((row.get::<String>(1)?, row.get::<String>(2)?))),
            None => Ok(None),
        }
    })
    .unwrap_or_else(|e| spi_failed(e))?;
    let (Some(schema), Some(version)) = found else { return None };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    Some(PgVector { schema: quote_ident(&schema), version: (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) })
}

/// pgvector, or an ERROR saying how to get it.
pub fn require_pgvector() -> PgVector {
    let Some(vector) = pgvector() else {
        raise_with_hint(
            Code::ERRCODE_UNDEFINED_OBJECT,
            "an item index needs pgvector, and extension \"vector\" is not installed in this database",
            "CREATE EXTENSION vector; (https://github.com/pgvector/pgvector). Without an index, recommend() \
             scores every item exactly, as it always has.",
        )
    };
    if vector.version < (0, 5) {
        raise_with_hint(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "an item index needs pgvector 0.5.0 or later (HNSW), and {}.{} is installed",
                vector.version.0, vector.version.1
            ),
            "ALTER EXTENSION vector UPDATE;",
        );
    }
    vector
}

/// How an index is built and searched (create_item_index's `options`).
#[derive(Clone, Debug, PartialEq)]
pub struct IndexOptions {
    /// HNSW's links per node (pgvector's `m`: 2..=100, default 16)
    pub m: i32,
    /// the candidate list while building (4..=1000, at least 2·m; default 64)
    pub ef_construction: i32,
    /// the smallest candidate list while searching (1..=1000, default 100);
    /// a request for more rows searches with as many
    pub ef_search: i32,
    /// maintenance_work_mem for the build (None: the session's); the graph
    /// builds fastest when it fits
    pub maintenance_work_mem: Option<String>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self { m: 16, ef_construction: 64, ef_search: 100, maintenance_work_mem: None }
    }
}

impl IndexOptions {
    /// Parses `options` (a JSON object; absent keys take their defaults);
    /// an ERROR names a key that is unknown or out of range.
    pub fn parse(options: &Value) -> Self {
        let bad =
            |message: String| -> ! { raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("options: {message}")) };
        let Some(object) = options.as_object() else { bad("must be a JSON object".to_string()) };
        let mut out = Self::default();
        let int = |key: &str, value: &Value, range: std::ops::RangeInclusive<i64>| -> i32 {
            match value.as_i64() {
                Some(v) if range.contains(&v) => v as i32,
                _ => bad(format!("{key} must be an integer from {} to {}, got {value}", range.start(), range.end())),
            }
        };
        for (key, value) in object {
            match key.as_str() {
                "m" => out.m = int(key, value, 2..=100),
                "ef_construction" => out.ef_construction = int(key, value, 4..=1000),
                "ef_search" => out.ef_search = int(key, value, 1..=MAX_EF_SEARCH as i64),
                "maintenance_work_mem" => match value.as_str() {
                    Some(v) if valid_memory_setting(v) => out.maintenance_work_mem = Some(v.to_string()),
                    _ => bad(format!("maintenance_work_mem must be a memory size such as '1GB', got {value}")),
                },
                other => bad(format!(
                    "unknown option \"{other}\" (known: m, ef_construction, ef_search, maintenance_work_mem)"
                )),
            }
        }
        if out.ef_construction < 2 * out.m {
            bad(format!("ef_construction ({}) must be at least 2·m ({})", out.ef_construction, 2 * out.m));
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("m".into(), self.m.into());
        o.insert("ef_construction".into(), self.ef_construction.into());
        o.insert("ef_search".into(), self.ef_search.into());
        if let Some(mem) = &self.maintenance_work_mem {
            o.insert("maintenance_work_mem".into(), mem.clone().into());
        }
        Value::Object(o)
    }
}

/// Whether `value` is a valid maintenance_work_mem (checked by
/// PostgreSQL without changing the setting).
fn valid_memory_setting(value: &str) -> bool {
    // without applying it (-1: valid, not applied); DEBUG1 reports a bad
    // value as 0, not an ERROR
    CString::new(value)
        .is_ok_and(|value| set_config(c"maintenance_work_mem", &value, false, pgrx::PgLogLevel::DEBUG1) != 0)
}

/// PostgreSQL's set_config_option for a session-level user setting, saved
/// at the current GUC nest level: `apply` false only checks the value;
/// a bad value is reported at `elevel`. Returns its result (+1 applied, -1
/// valid but not applied, 0 invalid below ERROR).
fn set_config(name: &CStr, value: &CStr, apply: bool, elevel: pgrx::PgLogLevel) -> i32 {
    // SAFETY: valid C strings; GUC_ACTION_SAVE restores the old value when
    // the nest level ends (or the transaction aborts)
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            apply,
            elevel as i32,
            false,
        )
    }
}

/// Whether this database's catalog has item indexes (a catalog older than
/// 0.4.0, before ALTER EXTENSION UPDATE, has not). A syscache lookup, cheap
/// enough for every request.
fn catalog_has_indexes() -> bool {
    // SAFETY: syscache lookups by name, with missing_ok: no ERROR, 0 for none
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"tfllmer".as_ptr(), true);
        schema != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"item_index_store".as_ptr(), schema) != pg_sys::InvalidOid
    }
}

/// The index table that serves a model version, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexTable {
    pub oid: pg_sys::Oid,
    pub ef_search: usize,
    pub n_items: i64,
}

/// The index table of `version` of `model_name` the caller can see (row
/// level security), if any. Only a sound row counts: its table is an
/// ordinary table of schema tfllmer_items owned by the row's owner, who
/// owns the model version too, with an `embedding` column of the model's
/// width. Any other row (written by hand, or by another role that shares a
/// group with the caller) is ignored, as is a row whose table is gone (a
/// transaction whose snapshot still sees a version two switches old): the
/// exact path serves then.
pub fn index_of(model_name: &str, version: i32) -> Option<IndexTable> {
    if !catalog_has_indexes() {
        return None;
    }
    let found = Spi::connect(|client| {
        // planned once per backend: this runs on every recommendation
        let statement = prepared(
            client,
            "SELECT i.index_table::oid, (i.options->>'ef_search')::int8, i.n_items
               FROM tfllmer.item_index_store i
               JOIN tfllmer.model_store m ON m.model_name = i.model_name AND m.version = i.version
               JOIN pg_catalog.pg_class c ON c.oid = i.index_table
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'embedding' AND NOT a.attisdropped
              WHERE i.model_name = $1 AND i.version = $2
                AND c.relkind = 'r' AND c.relnamespace = 'tfllmer_items'::regnamespace
                AND c.relowner = i.owner::oid AND i.owner = m.owner AND a.atttypmod = m.dim AND i.dim = m.dim",
            &[PgOid::BuiltIn(PgBuiltInOids::TEXTOID), PgOid::BuiltIn(PgBuiltInOids::INT4OID)],
        )?;
        let rows = client.select(&*statement, Some(1), &[model_name.into(), version.into()])?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        Ok::<_, pgrx::spi::Error>(Some((row.get::<pg_sys::Oid>(1)?, row.get::<i64>(2)?, row.get::<i64>(3)?)))
    })
    .unwrap_or_else(|e| spi_failed(e))?;
    let (Some(oid), ef_search, Some(n_items)) = found else { return None };
    let ef_search = ef_search.unwrap_or(IndexOptions::default().ef_search as i64).clamp(1, MAX_EF_SEARCH as i64);
    Some(IndexTable { oid, ef_search: ef_search as usize, n_items })
}

/// The schema-qualified, quoted name of a relation; an ERROR when it no
/// longer exists.
fn qualified_name(oid: pg_sys::Oid, model_name: &str) -> String {
    let name = first_value::<String>(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        &[oid.into()],
    );
    name.unwrap_or_else(|| {
        raise_with_hint(
            Code::ERRCODE_UNDEFINED_TABLE,
            format!("the item index table of model \"{model_name}\" no longer exists"),
            format!(
                "Rebuild it: SELECT tfllmer.drop_item_index('{0}'); SELECT tfllmer.create_item_index('{0}');",
                model_name.replace('\'', "''")
            ),
        )
    })
}

/// An index table ready to query: the statements recommend() runs on it.
pub struct ServingIndex {
    pub table: IndexTable,
    pgvector: PgVector,
    /// rows (item_id, embedding as real[]) of the given item ids
    rows_query: String,
    /// the best rows for a query vector: $1 the vector as real[], $2 how many
    nearest_query: String,
    /// the same by a scan of the whole table (an order no index gives; ties
    /// by item id, as the exact path breaks them)
    exact_query: String,
    /// by cosine distance (a scan of the whole table: the index orders by
    /// inner product)
    cosine_query: String,
    /// dim of the model (every row read is checked against it)
    dim: usize,
}

impl ServingIndex {
    pub fn new(table: IndexTable, model_name: &str, dim: usize) -> Self {
        let pgvector = require_pgvector();
        let quoted = qualified_name(table.oid, model_name);
        let vector = &pgvector.schema;
        Self {
            rows_query: format!("SELECT item_id, embedding::real[] FROM {quoted} WHERE item_id = ANY($1)"),
            nearest_query: format!(
                "SELECT item_id, embedding::real[] FROM {quoted}
                  ORDER BY embedding OPERATOR({vector}.<#>) $1::{vector}.vector LIMIT $2"
            ),
            exact_query: format!(
                "SELECT item_id, embedding::real[] FROM {quoted}
                  ORDER BY (embedding OPERATOR({vector}.<#>) $1::{vector}.vector) + 0, item_id LIMIT $2"
            ),
            cosine_query: format!(
                "SELECT item_id, embedding::real[] FROM {quoted}
                  ORDER BY embedding OPERATOR({vector}.<=>) $1::{vector}.vector, item_id LIMIT $2"
            ),
            dim,
            table,
            pgvector,
        }
    }

    /// The best `k` items by `score` (exact, of each returned row) among
    /// those not in `excluded` (sorted), best first (ties: lower item id
    /// first). The index is asked for k + |excluded| rows in the order of
    /// inner product with `query` (of cosine distance with `cosine`, which
    /// no index serves: a scan of the table); when it returns fewer than k
    /// eligible rows while the table has more, the table is scanned
    /// exactly, so k rows come back whenever k items are eligible.
    pub fn best(
        &self,
        query: &[f32],
        k: usize,
        excluded: &[i64],
        cosine: bool,
        score: impl Fn(&[f32]) -> f32,
    ) -> Vec<(i64, f32)> {
        let n_items = usize::try_from(self.table.n_items).unwrap_or(0);
        let limit = k.saturating_add(excluded.len()).min(n_items);
        let ranked = |rows: Vec<(i64, Vec<f32>)>| -> (usize, Vec<(i64, f32)>) {
            let returned = rows.len();
            let eligible = rows
                .into_iter()
                .filter(|(id, _)| excluded.binary_search(id).is_err())
                .map(|(id, row)| (id, score(&row)))
                .collect();
            (returned, best_of(eligible, k))
        };
        let (returned, top) = ranked(self.nearest(query, limit, cosine, cosine));
        if top.len() < k && returned < limit && !cosine {
            return ranked(self.nearest(query, limit, false, true)).1;
        }
        top
    }

    /// (item id, row) of each of `ids` the table holds, in no order.
    pub fn rows(&self, ids: &[i64]) -> Vec<(i64, Vec<f32>)> {
        if ids.is_empty() {
            return Vec::new();
        }
        self.select(&self.rows_query, &[ids.to_vec().into()], &[PgBuiltInOids::INT8ARRAYOID])
    }

    /// The `limit` rows of highest inner product with `query` (of lowest
    /// cosine distance with `cosine`) as the index finds them
    /// (approximate), searched with a candidate list of at least `limit`
    /// (and iterative scans on pgvector 0.8+, so a long request is answered
    /// whole); with `exact`, by a scan of the whole table instead (the
    /// index switched off for this query).
    fn nearest(&self, query: &[f32], limit: usize, cosine: bool, exact: bool) -> Vec<(i64, Vec<f32>)> {
        if limit == 0 {
            return Vec::new();
        }
        let ef_search = limit.clamp(self.table.ef_search, MAX_EF_SEARCH);
        let mut settings = vec![("hnsw.ef_search", ef_search.to_string())];
        if self.pgvector.iterative_scans() {
            settings.push(("hnsw.iterative_scan", "strict_order".to_string()));
            settings.push(("hnsw.max_scan_tuples", (2 * limit).max(20_000).to_string()));
        }
        // planned for each request: the session's planner settings count
        // (SET enable_indexscan = off compares the index with pgvector's
        // exact scan), and a kept generic plan never fixes the path
        settings.push(("plan_cache_mode", "force_custom_plan".to_string()));
        let statement = match (cosine, exact) {
            (true, _) => &self.cosine_query,
            (false, true) => &self.exact_query,
            (false, false) => &self.nearest_query,
        };
        with_settings(&settings, || {
            self.select(
                statement,
                &[query.to_vec().into(), (limit as i64).into()],
                &[PgBuiltInOids::FLOAT4ARRAYOID, PgBuiltInOids::INT8OID],
            )
        })
    }

    /// The rows of `ids`, each id once; an ERROR names `argument` for a
    /// NULL id or one the model does not have.
    pub fn rows_of(&self, ids: Vec<Option<i64>>, argument: &str, model_name: &str) -> Vec<(i64, Vec<f32>)> {
        let mut wanted = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(id) = id else {
                raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{argument} must not contain NULL item ids"))
            };
            wanted.push(id);
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut rows = self.rows(&wanted);
        if rows.len() < wanted.len() {
            rows.sort_unstable_by_key(|r| r.0);
            let missing = wanted.iter().find(|&&id| rows.binary_search_by_key(&id, |r| r.0).is_err());
            if let Some(id) = missing {
                raise_with_hint(
                    Code::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("{argument}: model \"{model_name}\" has no item {id}"),
                    "Pass only items the model was trained on: tfllmer.item_vectors(model_name) lists them.",
                );
            }
        }
        rows
    }

    /// The rows of the latest `max_len` items of a history the table holds
    /// (`newest_first`: item ids, newest first; others are skipped), oldest
    /// first, flattened (n × dim): what the model reads.
    pub fn history_rows(&self, newest_first: &[i64], max_len: usize) -> Vec<f32> {
        let mut found: Vec<Vec<f32>> = Vec::new();
        for chunk in newest_first.chunks(max_len.max(1)) {
            let mut by_id = self.rows(chunk);
            by_id.sort_unstable_by_key(|r| r.0);
            for id in chunk {
                if found.len() == max_len {
                    break;
                }
                if let Ok(i) = by_id.binary_search_by_key(id, |r| r.0) {
                    found.push(by_id[i].1.clone());
                }
            }
            if found.len() == max_len {
                break;
            }
        }
        found.into_iter().rev().flatten().collect()
    }

    fn select(
        &self,
        query: &str,
        args: &[pgrx::datum::DatumWithOid<'_>],
        types: &[PgBuiltInOids],
    ) -> Vec<(i64, Vec<f32>)> {
        in_own_memory("tfllmer index read", || self.select_in(query, args, types))
    }

    fn select_in(
        &self,
        query: &str,
        args: &[pgrx::datum::DatumWithOid<'_>],
        types: &[PgBuiltInOids],
    ) -> Vec<(i64, Vec<f32>)> {
        Spi::connect(|client| {
            let types: Vec<PgOid> = types.iter().map(|&t| PgOid::BuiltIn(t)).collect();
            let statement = prepared(client, query, &types)?;
            let rows = client.select(&*statement, None, args)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                if let (Some(id), Some(v)) = (row.get::<i64>(1)?, row.get::<Vec<f32>>(2)?) {
                    if v.len() != self.dim {
                        raise(
                            Code::ERRCODE_DATA_CORRUPTED,
                            format!("item index table: item {id} has {} values, the model {}", v.len(), self.dim),
                        );
                    }
                    out.push((id, v));
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .unwrap_or_else(|e| spi_failed(e))
    }
}

thread_local! {
    /// Whether this backend has loaded pgvector's library.
    static VECTOR_LOADED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with configuration settings changed for its duration only (as
/// a function's SET clause does): restored afterwards, and by the abort of
/// an ERROR.
fn with_settings<R>(settings: &[(&str, String)], f: impl FnOnce() -> R) -> R {
    // pgvector's settings exist once its library is loaded; load it first
    // so they are set as themselves, not as placeholders
    VECTOR_LOADED.with(|loaded| {
        if !loaded.get() {
            // SAFETY: loads a library by name from dynamic_library_path, as
            // a query using the vector type would; an ERROR if it is missing
            unsafe { pg_sys::load_file(c"vector".as_ptr(), false) };
            loaded.set(true);
        }
    });
    // SAFETY: a GUC nest level opened here and closed below (an ERROR in
    // between is cleaned up by the transaction's abort)
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    for (name, value) in settings {
        let (name, value) = (CString::new(*name).expect("no NUL"), CString::new(value.as_str()).expect("no NUL"));
        set_config(&name, &value, true, pgrx::PgLogLevel::ERROR);
    }
    let out = f();
    // SAFETY: closes the nest level opened above, restoring the settings
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    out
}

/// What a build produced.
pub struct Built {
    pub table: String,
    pub n_items: i64,
    pub build_ms: f64,
}

/// Builds the index table of `version` of `model_name` (trained by
/// `job_id`) from its item rows `rows` ((n_items + 1) × dim, row t the
/// vector of token t as recommend() scores it, row 0 unused) and
/// vocabulary, records it, and drops the tables of this model's versions
/// before the previous indexed one. Runs as the caller, who owns the table.
pub fn build(
    model_name: &str,
    version: i32,
    job_id: i64,
    rows: &[f32],
    dim: usize,
    items: &Vocabulary,
    options: &IndexOptions,
) -> Built {
    let started = std::time::Instant::now();
    let vector = require_pgvector();
    if dim > 2000 {
        raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("model \"{model_name}\" has {dim} dimensions; pgvector's HNSW indexes take at most 2,000"),
        );
    }
    let n_items = items.len();
    if rows.len() != (n_items + 1) * dim {
        raise(
            Code::ERRCODE_DATA_CORRUPTED,
            format!(
                "model \"{model_name}\" version {version}: {n_items} items but an item table of {} values",
                rows.len()
            ),
        );
    }
    let name = free_table_name(job_id);
    let table = format!("{}.{}", quote_ident(SCHEMA), quote_ident(&name));
    let vtype = format!("{}.vector", vector.schema);
    run(&format!("CREATE TABLE {table} (item_id bigint NOT NULL, embedding {vtype}({dim}) NOT NULL)"));
    let insert = format!(
        "INSERT INTO {table} (item_id, embedding)
         SELECT $1[i], ($2::real[])[(i - 1) * {dim} + 1 : i * {dim}]::{vtype}
           FROM pg_catalog.generate_series(1, pg_catalog.cardinality($1)) AS i"
    );
    let mut token = 1;
    while token <= n_items {
        let end = (token + BATCH_ROWS - 1).min(n_items);
        let ids: Vec<i64> = (token..=end).map(|t| items.item_id(t as u32).expect("token in range")).collect();
        let flat = rows[token * dim..(end + 1) * dim].to_vec();
        Spi::connect_mut(|client| client.update(&insert, None, &[ids.into(), flat.into()]).map(|_| ()))
            .unwrap_or_else(|e| spi_failed(e));
        token = end + 1;
        pgrx::check_for_interrupts!();
    }
    run(&format!("ALTER TABLE {table} ADD PRIMARY KEY (item_id)"));
    let mut settings = Vec::new();
    if let Some(mem) = &options.maintenance_work_mem {
        settings.push(("maintenance_work_mem", mem.clone()));
    }
    with_settings(&settings, || {
        run(&format!(
            "CREATE INDEX ON {table} USING hnsw (embedding {}.vector_ip_ops) WITH (m = {}, ef_construction = {})",
            vector.schema, options.m, options.ef_construction
        ))
    });
    run(&format!("ANALYZE {table}"));
    let build_ms = started.elapsed().as_secs_f64() * 1000.0;
    write_returning::<i32>(
        "INSERT INTO tfllmer.item_index_store (model_name, version, index_table, method, options, n_items, dim, build_ms)
         VALUES ($1, $2, $3::regclass, 'hnsw', $4, $5, $6, $7) RETURNING version",
        &[
            model_name.into(),
            version.into(),
            table.as_str().into(),
            pgrx::JsonB(options.to_json()).into(),
            (n_items as i64).into(),
            (dim as i32).into(),
            build_ms.into(),
        ],
    );
    drop_older(model_name, version);
    // as regclass prints it (quoted only where needed)
    let table = first_value::<String>("SELECT $1::regclass::text", &[table.as_str().into()]).unwrap_or(table);
    Built { table, n_items: n_items as i64, build_ms }
}

/// items_<job id>, or items_<job id>_2, ... when that name is taken.
/// Adds cold items to the index table of `version`, when it has one: the
/// index then serves them like the trained items. `rows` is ids.len() ×
/// dim. (The caller holds the model's lock: see [`lock_model`].)
pub fn add_rows(model_name: &str, version: i32, ids: &[i64], rows: &[f32], dim: usize) {
    let Some(index) = index_of(model_name, version) else { return };
    let table = qualified_name(index.oid, model_name);
    let vtype = format!("{}.vector", require_pgvector().schema);
    let insert = format!(
        "INSERT INTO {table} (item_id, embedding)
         SELECT ($1::int8[])[i], ($2::real[])[(i - 1) * {dim} + 1 : i * {dim}]::{vtype}
           FROM pg_catalog.generate_series(1, pg_catalog.cardinality($1::int8[])) AS i"
    );
    for start in (0..ids.len()).step_by(BATCH_ROWS) {
        let end = (start + BATCH_ROWS).min(ids.len());
        let (batch, flat) = (ids[start..end].to_vec(), rows[start * dim..end * dim].to_vec());
        Spi::connect_mut(|client| client.update(&insert, None, &[batch.into(), flat.into()]).map(|_| ()))
            .unwrap_or_else(|e| spi_failed(e));
        pgrx::check_for_interrupts!();
    }
    set_indexed_count(model_name, version, ids.len() as i64);
}

/// Removes cold items from the index table of `version`, when it has one.
pub fn remove_rows(model_name: &str, version: i32, ids: &[i64]) {
    let Some(index) = index_of(model_name, version) else { return };
    let table = qualified_name(index.oid, model_name);
    let gone = write_returning::<i64>(
        &format!("WITH gone AS (DELETE FROM {table} WHERE item_id = ANY ($1) RETURNING 1) SELECT count(*) FROM gone"),
        &[ids.to_vec().into()],
    )
    .unwrap_or(0);
    set_indexed_count(model_name, version, -gone);
}

/// The catalog's n_items of an index after `delta` rows were added (or
/// removed): O(1).
fn set_indexed_count(model_name: &str, version: i32, delta: i64) {
    Spi::run_with_args(
        "UPDATE tfllmer.item_index_store SET n_items = n_items + $3 WHERE model_name = $1 AND version = $2",
        &[model_name.into(), version.into(), delta.into()],
    )
    .unwrap_or_else(|e| spi_failed(e));
}

fn free_table_name(job_id: i64) -> String {
    let taken = |name: &str| {
        first_value::<bool>(
            "SELECT pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1::text, $2::text)) IS NOT NULL",
            &[SCHEMA.into(), name.into()],
        )
        .unwrap_or(false)
    };
    let base = format!("items_{job_id}");
    let mut name = base.clone();
    let mut n = 2;
    while taken(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    name
}

fn run(sql: &str) {
    Spi::connect_mut(|client| client.update(sql, None, &[]).map(|_| ())).unwrap_or_else(|e| spi_failed(e));
}

/// Drops the index tables (and rows) of `model_name` whose version is
/// older than the newest indexed version before `version`: the current
/// table and the one before it stay.
fn drop_older(model_name: &str, version: i32) {
    let keep_from = first_value::<i32>(
        "SELECT max(version) FROM tfllmer.item_index_store WHERE model_name = $1 AND version < $2",
        &[model_name.into(), version.into()],
    );
    if let Some(keep_from) = keep_from {
        // never wait long for readers of an old table (a pg_dump, a long
        // transaction): it is dropped at the next switch instead
        let dropped = super::xact::subtransaction(|| {
            with_settings(&[("lock_timeout", "2s".to_string())], || drop_where(model_name, Some(keep_from)))
        });
        if let Err(e) = dropped {
            super::errors::notice_with_hint(
                format!("the item index tables of model \"{model_name}\" before version {keep_from} stay for now: {e}"),
                "They are dropped when the next version's index is built, or by tfllmer.drop_item_index().",
            );
        }
    }
}

/// Drops the index tables of `model_name` older than `before` (all when
/// None) and their catalog rows; returns how many.
pub fn drop_where(model_name: &str, before: Option<i32>) -> usize {
    if !catalog_has_indexes() {
        return 0;
    }
    let tables: Vec<(i32, Option<String>)> = Spi::connect_mut(|client| {
        let rows = client.update(
            "DELETE FROM tfllmer.item_index_store
              WHERE model_name = $1 AND ($2::int4 IS NULL OR version < $2)
          RETURNING version,
                    (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = index_table AND n.nspname = $3 AND c.relowner = owner::oid)",
            None,
            &[model_name.into(), before.into(), SCHEMA.into()],
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push((row.get::<i32>(1)?.unwrap_or(0), row.get::<String>(2)?));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| spi_failed(e));
    for (_, table) in &tables {
        // only a table of the schema owned by the row's owner: a row cannot
        // name another table to have it dropped (a table dropped by hand is
        // already gone)
        if let Some(table) = table {
            run(&format!("DROP TABLE IF EXISTS {table}"));
        }
    }
    tables.len()
}

/// Locks the model's name row until the transaction ends: an index being
/// created and a version being stored wait for each other, so the version
/// stored next always sees an index that was committed before it.
pub fn lock_model(model_name: &str) {
    Spi::connect_mut(|client| {
        client
            .update("SELECT 1 FROM tfllmer.model_names WHERE model_name = $1 FOR UPDATE", None, &[model_name.into()])
            .map(|_| ())
    })
    .unwrap_or_else(|e| spi_failed(e));
}

/// The options of the newest index of `model_name`, when it has one: a
/// new version of an indexed model is indexed the same way.
pub fn options_of(model_name: &str) -> Option<IndexOptions> {
    if !catalog_has_indexes() {
        return None;
    }
    let options = first_value::<pgrx::JsonB>(
        "SELECT options FROM tfllmer.item_index_store WHERE model_name = $1 ORDER BY version DESC LIMIT 1",
        &[model_name.into()],
    )?;
    Some(IndexOptions::parse(&options.0))
}

/// Items from which a model is worth an item index: below, each
/// connection's copy of the item table is small and the exact path fast.
pub const ADVISE_ITEMS: i64 = 100_000;

/// At train time: a NOTICE when the catalogue is large (at least
/// [`ADVISE_ITEMS`] items as known before training: the init embedding's
/// items, else the planner's estimate of the item column's distinct values)
/// and the model has no item index to carry over to the new version.
pub fn advise_at_train(model_name: &str, init: Option<&str>, relation: pg_sys::Oid, item_column: &str) {
    let estimate = match init {
        Some(init) => {
            first_value::<i64>("SELECT n_items FROM tfllmer.embedding_store WHERE embedding_name = $1", &[init.into()])
        }
        None => first_value::<f64>(
            "SELECT CASE WHEN s.n_distinct < 0 THEN -s.n_distinct * c.reltuples ELSE s.n_distinct END::float8
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
              WHERE c.oid = $1 AND s.attname = $2",
            &[relation.into(), item_column.into()],
        )
        .map(|v| v as i64),
    };
    let Some(items) = estimate.filter(|&n| n >= ADVISE_ITEMS) else { return };
    if options_of(model_name).is_some() {
        return;
    }
    let call = format!("SELECT tfllmer.create_item_index('{}');", model_name.replace('\'', "''"));
    let hint = match pgvector() {
        Some(_) => format!("Once the model is trained: {call} (each new version then gets its own index)."),
        None => format!("Install pgvector (CREATE EXTENSION vector), then once the model is trained: {call}"),
    };
    super::errors::notice_with_hint(
        format!(
            "model \"{model_name}\" will have about {items} items: without an item index, every connection that \
             serves it holds its whole item table and scores every item per request"
        ),
        hint,
    );
}
