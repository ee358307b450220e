//! Training in background workers: `train`, `cancel_job`, `wait_job`,
//! `job_log`, `drop_model` (`evaluate` is in api/evaluation.rs) (the `jobs` and `models` views are in
//! sql/bootstrap.sql, the worker in src/worker.rs).

use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::JsonB;
use tfllmer_train::model::Backbone;
use tfllmer_train::options::TrainingOptions;

use crate::postgres::backend::{self, require_primary};
use crate::postgres::cold_items;
use crate::postgres::errors::{object_name, raise, raise_with_hint, required, Code};
use crate::postgres::interactions::InteractionSource;
use crate::postgres::item_index;
use crate::postgres::jobs::launch::{launch_worker, WorkerStart};
use crate::postgres::jobs::{self, record_lost_jobs, JobState, NewJob};
use crate::postgres::models::{describe_version, newest_version, parse_backbone, require_owner, VersionMeta};
use crate::postgres::relation::readable_relation;
use crate::postgres::spi::{first_value, spi_failed, write_returning};
use crate::postgres::sql_types::{RegClass, SqlName};
use crate::postgres::user_history::advise_history_index;
use crate::settings;

/// Starts training `model_name` on an interaction table in a background
/// worker and returns the job id at once. See docs/sql-reference.md.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn train(
    model_name: Option<&str>,
    interactions: Option<RegClass>,
    user_column: default!(Option<SqlName>, "'user_id'"),
    item_column: default!(Option<SqlName>, "'item_id'"),
    time_column: default!(Option<SqlName>, "'ts'"),
    init: default!(Option<&str>, "NULL"),
    backbone: default!(Option<&str>, "'sasrec'"),
    normalize: default!(Option<bool>, true),
    options: default!(Option<JsonB>, "'{}'"),
) -> i64 {
    require_primary("train");
    let model_name = object_name(model_name, "model_name");
    let relation = readable_relation(interactions, "interactions");
    let source = InteractionSource::new(relation, user_column, item_column, time_column);
    let backbone_name = required(backbone, "backbone");
    let backbone = parse_backbone(backbone_name).unwrap_or_else(|| {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("backbone must be 'sasrec' or 'gru4rec', got '{backbone_name}'"),
        )
    });
    let normalize = required(normalize, "normalize");
    let init_dim = init.map(|name| {
        let dim = first_value::<i32>(
            "SELECT output_dim FROM tfllmer.embedding_store WHERE embedding_name = $1",
            &[name.into()],
        );
        match dim {
            Some(d) => d as usize,
            None => raise_with_hint(
                Code::ERRCODE_UNDEFINED_OBJECT,
                format!("init: embedding \"{name}\" does not exist"),
                "Create one with tfllmer.rec_pca(); tfllmer.embeddings lists yours. Pass NULL for random init.",
            ),
        }
    });
    let given = required(options, "options").0;
    let warm_start = given.get("warm_start") == Some(&serde_json::Value::Bool(true));
    let (given, base) = if warm_start {
        let (merged, base) = warm_start_options(model_name, backbone, normalize, given);
        (merged, Some(base))
    } else {
        (given, None)
    };
    let options = TrainingOptions::parse(&given, backbone, init_dim, settings::threads())
        .unwrap_or_else(|e| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, e.0));
    if let Some(base) = &base {
        check_same_shape(model_name, base, &options);
    }
    if (options.cold_items || warm_start) && !cold_items::catalog_has_cold_items() {
        raise_with_hint(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "options.cold_items, cold_holdout and warm_start need the catalog of tfllmer 0.5.0",
            "ALTER EXTENSION tfllmer UPDATE;",
        );
    }
    if options.cold_items && init.is_none() {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "options.cold_items maps items from their LLM embeddings: it needs an init embedding (init => ...)",
        );
    }
    check_enough_data(&source);
    advise_history_index(&source);
    item_index::advise_at_train(model_name, init, source.relation.oid, &source.item.name);
    claim_model_name(model_name);

    let created = jobs::create(&NewJob {
        model_name,
        source_table: source.relation.oid,
        source_name: &source.relation.display,
        columns: [&source.user.name, &source.item.name, &source.time.name],
        init,
        backbone: backbone_name,
        normalize,
        options: options.to_json(),
        max_epochs: i32::try_from(options.epochs).unwrap_or(i32::MAX),
    });
    let job_id = created.job_id;
    let start = WorkerStart {
        database: backend::database(),
        login_role: created.login_role,
        owner: backend::current_role(),
        creator_xid: created.creator_xid,
    };
    if launch_worker(job_id, &start) {
        jobs::mark_launched(job_id);
    } else {
        let slots =
            first_value::<String>("SELECT pg_catalog.current_setting('max_worker_processes')", &[]).unwrap_or_default();
        notice!(
            "train: every background worker slot is in use (max_worker_processes = {slots}); job {job_id} is \
             queued and starts when a tfllmer job finishes or tfllmer.wait_job({job_id}) is called"
        );
    }
    job_id
}

/// The options of a warm start: those of the newest version of
/// `model_name` (the caller's), with the keys given over them. The model
/// must be of the same kind: backbone, normalisation and the shape of its
/// layers cannot change (its weights are continued).
fn warm_start_options(
    model_name: &str,
    backbone: Backbone,
    normalize: bool,
    given: serde_json::Value,
) -> (serde_json::Value, VersionMeta) {
    let Some(key) = newest_version(model_name) else {
        raise_with_hint(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("options.warm_start: model \"{model_name}\" has no trained version to continue from"),
            "Train it once without warm_start.",
        )
    };
    let base = describe_version(model_name, Some(key.version));
    let name_of = |b: Backbone| if b == Backbone::SasRec { "sasrec" } else { "gru4rec" };
    if base.config.backbone != backbone {
        raise_with_hint(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "backbone: model \"{model_name}\" is a {} model; a warm start continues it",
                name_of(base.config.backbone)
            ),
            format!("Pass backbone => '{}'.", name_of(base.config.backbone)),
        );
    }
    if base.config.normalize != normalize {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "normalize: model \"{model_name}\" was trained with normalize => {}; a warm start continues it",
                base.config.normalize
            ),
        );
    }
    let stored = first_value::<JsonB>(
        "SELECT options FROM tfllmer.model_store WHERE model_name = $1 AND version = $2",
        &[model_name.into(), key.version.into()],
    )
    .map(|j| j.0)
    .unwrap_or_default();
    let mut merged = match stored {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    // today's: the evaluation sample is chosen again by size, the threads
    // by this session's setting (the loss stays the version's: the
    // catalogue rarely changes size class overnight)
    for today in ["eval_users", "threads"] {
        merged.remove(today);
    }
    let serde_json::Value::Object(given) = given else { return (given, base) };
    merged.extend(given);
    (serde_json::Value::Object(merged), base)
}

/// A warm start's options must keep the continued version's layers.
fn check_same_shape(model_name: &str, base: &VersionMeta, options: &TrainingOptions) {
    let c = &base.config;
    let pairs = [
        ("dim", c.dim, options.dim),
        ("layers", c.layers, options.layers),
        ("heads", c.heads, options.heads),
        ("max_len", c.max_len, options.max_len),
    ];
    let changed = pairs.iter().find(|(_, theirs, mine)| theirs != mine).map(|(k, t, _)| (*k, t.to_string()));
    let changed = changed.or_else(|| {
        (c.temperature != options.temperature)
            .then(|| ("temperature", c.temperature.map_or("none".to_string(), |t| t.to_string())))
    });
    if let Some((option, theirs)) = changed {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "options.{option}: a warm start continues model \"{model_name}\" version {}, whose {option} is \
                 {theirs}; leave it out",
                base.version
            ),
        );
    }
}

/// "too few users or interactions to split": leave-one-out needs users with
/// a training, a validation and a test item.
fn check_enough_data(source: &InteractionSource) {
    let query = format!(
        "SELECT count(*) FILTER (WHERE n >= 3), count(*) FROM (
             SELECT count(*) AS n FROM {rel}
              WHERE {u} IS NOT NULL AND {i} IS NOT NULL AND {t} IS NOT NULL GROUP BY {u}) per_user",
        rel = source.relation.quoted,
        u = source.user.quoted,
        i = source.item.quoted,
        t = source.time.quoted
    );
    let (usable, users) = Spi::get_two::<i64, i64>(&query).unwrap_or_else(|e| spi_failed(e));
    let (usable, users) = (usable.unwrap_or(0), users.unwrap_or(0));
    if usable == 0 {
        raise_with_hint(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "interactions: {} has {users} user(s) and none with at least 3 interactions; leave-one-out needs \
                 3 per user (training, validation and test item)",
                source.relation.display
            ),
            "Users with fewer than 3 interactions are left out of training and evaluation.",
        );
    }
}

/// The model name becomes (or stays) the caller's; a name owned by another
/// role, or one a job is still training, is refused. The row lock makes a
/// concurrent train() of the same name wait for this transaction.
fn claim_model_name(model_name: &str) {
    Spi::run_with_args(
        "INSERT INTO tfllmer.model_names (model_name) VALUES ($1) ON CONFLICT DO NOTHING",
        &[model_name.into()],
    )
    .unwrap_or_else(|e| spi_failed(e));
    let mine = write_returning::<bool>(
        "SELECT true FROM tfllmer.model_names WHERE model_name = $1 FOR UPDATE",
        &[model_name.into()],
    );
    if mine.is_none() {
        raise(Code::ERRCODE_DUPLICATE_OBJECT, format!("model name \"{model_name}\" is already used by another role"));
    }
    record_lost_jobs();
    if let Some((job, state)) = jobs::active_job_of_model(model_name) {
        raise_with_hint(
            Code::ERRCODE_OBJECT_IN_USE,
            format!("model \"{model_name}\" is already being trained by job {job} ({state})"),
            format!("Wait for it with tfllmer.wait_job({job}) or stop it with tfllmer.cancel_job({job})."),
        );
    }
}

/// Asks a job to stop: a queued job is cancelled at once, a running one
/// within one batch (no model version is stored). False when the job had
/// already ended.
#[pg_extern(volatile, parallel_unsafe)]
fn cancel_job(job_id: Option<i64>) -> bool {
    let job_id = required(job_id, "job_id");
    require_primary("cancel_job");
    record_lost_jobs();
    jobs::state(job_id);
    jobs::request_cancel(job_id)
}

/// Waits until a job has ended (or `timeout_s` passed) and returns its
/// state. Queued jobs are started here when a worker slot is free. On a hot
/// standby it only waits (it sees the job end once the primary's record of
/// it has been replayed).
#[pg_extern(volatile, parallel_unsafe)]
fn wait_job(job_id: Option<i64>, timeout_s: default!(Option<f64>, "NULL")) -> String {
    let job_id = required(job_id, "job_id");
    if let Some(t) = timeout_s {
        if t.is_nan() || t < 0.0 {
            raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("timeout_s must be >= 0 or NULL, got {t}"));
        }
    }
    jobs::state(job_id);
    if jobs::created_in_this_transaction(job_id) {
        raise_with_hint(
            Code::ERRCODE_INVALID_TRANSACTION_STATE,
            format!("job {job_id} was created in this transaction and cannot start before it commits"),
            "Commit first, then call tfllmer.wait_job(); or use CALL tfllmer.train_and_wait(...), which commits \
             the new job and waits for it.",
        );
    }
    if backend::snapshot_is_fixed() {
        raise(
            Code::ERRCODE_INVALID_TRANSACTION_STATE,
            "wait_job needs READ COMMITTED: a REPEATABLE READ or SERIALIZABLE snapshot would never see the job end",
        );
    }
    let primary = !backend::in_recovery();
    let deadline = timeout_s.map(|t| Instant::now() + Duration::from_secs_f64(t.min(1e9)));
    let mut launched: Option<Instant> = None;
    loop {
        // fresh activity data for the liveness check in every round
        backend::refresh_activity_snapshot();
        record_lost_jobs();
        let state = jobs::state(job_id);
        if state.is_final() {
            return state.to_string();
        }
        // a queued job that no worker is starting: start one. (No writes
        // here: a row lock held by this long statement would block the
        // worker's claim until the wait ended.)
        let relaunch = primary && state == JobState::Queued;
        if relaunch && launched.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            if let Some((login_role, owner)) = jobs::stalled_queued_job(job_id) {
                let start = WorkerStart { database: backend::database(), login_role, owner, creator_xid: 0 };
                if launch_worker(job_id, &start) {
                    launched = Some(Instant::now());
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return state.to_string();
        }
        backend::sleep_interruptibly(Duration::from_millis(100));
    }
}

/// One row per finished epoch of a job.
#[pg_extern(stable, parallel_unsafe)]
fn job_log(
    job_id: Option<i64>,
) -> TableIterator<
    'static,
    (name!(epoch, i32), name!(train_loss, f64), name!(valid_hr10, f64), name!(valid_ndcg10, f64), name!(epoch_ms, f64)),
> {
    let job_id = required(job_id, "job_id");
    jobs::state(job_id);
    let rows = jobs::epoch_log(job_id)
        .into_iter()
        .map(|r| (r.epoch, r.train_loss, r.valid_hr10, r.valid_ndcg10, r.epoch_ms))
        .collect::<Vec<_>>();
    TableIterator::new(rows)
}

/// Drops every version of a model. A model still being trained is refused
/// (cancel the job first).
#[pg_extern(volatile, parallel_unsafe)]
fn drop_model(model_name: Option<&str>, if_exists: default!(Option<bool>, false)) -> bool {
    let model_name = object_name(model_name, "model_name");
    let if_exists = required(if_exists, "if_exists");
    require_primary("drop_model");
    record_lost_jobs();
    if let Some((job, _)) = jobs::active_job_of_model(model_name) {
        raise_with_hint(
            Code::ERRCODE_OBJECT_IN_USE,
            format!("model \"{model_name}\" is being trained by job {job}"),
            format!("Stop it with tfllmer.cancel_job({job}) first."),
        );
    }
    // the item index tables first (the catalog rows would go with the
    // model's, the tables would stay)
    item_index::drop_where(model_name, None);
    let dropped = write_returning::<i64>(
        "WITH gone AS (DELETE FROM tfllmer.model_names WHERE model_name = $1 RETURNING 1) SELECT count(*) FROM gone",
        &[model_name.into()],
    )
    .unwrap_or(0)
        > 0;
    if !dropped && !if_exists {
        raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("model \"{model_name}\" does not exist"));
    }
    dropped
}

/// Drops every version of a model but the newest `keep` ones (with their
/// item index tables and cold items); returns how many it dropped. The
/// version in use is never dropped, and a request being answered from it
/// is not disturbed. For schedules: keep the last N versions.
#[pg_extern(volatile, parallel_unsafe)]
fn prune_model(model_name: Option<&str>, keep: default!(Option<i32>, 3)) -> i64 {
    let model_name = object_name(model_name, "model_name");
    let keep = required(keep, "keep");
    if keep < 1 {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("keep must be at least 1 (the version in use), got {keep}"),
        );
    }
    require_primary("prune_model");
    // a version being stored or indexed meanwhile waits for this
    item_index::lock_model(model_name);
    if let Some(key) = newest_version(model_name) {
        require_owner(model_name, key.version, "prune it");
    } else {
        if !first_value::<bool>(
            "SELECT EXISTS (SELECT 1 FROM tfllmer.model_names WHERE model_name = $1)",
            &[model_name.into()],
        )
        .unwrap_or(false)
        {
            raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("model \"{model_name}\" does not exist"));
        }
        return 0;
    }
    // the oldest version kept
    let Some(oldest_kept) = first_value::<i32>(
        "SELECT version FROM tfllmer.model_store WHERE model_name = $1 ORDER BY version DESC OFFSET $2 - 1 LIMIT 1",
        &[model_name.into(), keep.into()],
    ) else {
        return 0;
    };
    item_index::drop_where(model_name, Some(oldest_kept));
    write_returning::<i64>(
        "WITH gone AS (DELETE FROM tfllmer.model_store WHERE model_name = $1 AND version < $2 RETURNING 1)
         SELECT count(*) FROM gone",
        &[model_name.into(), oldest_kept.into()],
    )
    .unwrap_or(0)
}

/// An SVG line chart of one or more jobs' training curves, one line per
/// job: `metric` 'train_loss' (default) or 'valid_ndcg10' per epoch.
#[pg_extern(stable, parallel_unsafe)]
fn loss_plot(
    job_ids: Option<Vec<Option<i64>>>,
    metric: default!(Option<&str>, "'train_loss'"),
    title: default!(Option<&str>, "NULL"),
) -> String {
    let job_ids = required(job_ids, "job_ids");
    if job_ids.is_empty() {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "job_ids must hold at least one job id");
    }
    let metric = required(metric, "metric");
    let (train_loss, y_label) = match metric {
        "train_loss" => (true, "training loss (cross-entropy per position)"),
        "valid_ndcg10" => (false, "validation NDCG@10"),
        other => raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("metric must be 'train_loss' or 'valid_ndcg10', got '{other}'"),
        ),
    };
    let mut series = Vec::new();
    for job_id in job_ids {
        let job_id = required(job_id, "job_ids element");
        jobs::state(job_id);
        let points = jobs::epoch_log(job_id)
            .into_iter()
            .map(|r| (r.epoch.max(0) as u32, if train_loss { r.train_loss } else { r.valid_ndcg10 }))
            .collect();
        series.push(tfllmer_train::plot::Series { label: jobs::label(job_id), points });
    }
    let title = title.unwrap_or(if train_loss { "training loss per epoch" } else { "validation NDCG@10" });
    tfllmer_train::plot::line_chart_svg(&series, title, y_label, (800, 480))
        .unwrap_or_else(|e| raise(Code::ERRCODE_INTERNAL_ERROR, format!("drawing the chart failed: {e}")))
}

// The blocking route, `CALL tfllmer.train_and_wait(...)`: a procedure,
// because only a procedure may commit (the new job must be committed before
// its worker can start); sql/train_and_wait.sql.
pgrx::extension_sql_file!("../../sql/train_and_wait.sql", name = "train_and_wait", requires = [train, wait_job]);
