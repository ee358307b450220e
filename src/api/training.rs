//! Training in background workers: `train`, `cancel_job`, `wait_job`,
//! `job_log`, `evaluate`, `drop_model` (the `jobs` and `models` views are in
//! sql/bootstrap.sql, the worker in src/worker.rs).

use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::JsonB;
use tfllmer_core::sequences::{leave_one_out, Histories};
use tfllmer_train::options::TrainingOptions;

use crate::postgres::errors::{object_name, raise, raise_with_hint, required, Code};
use crate::postgres::interactions::InteractionSource;
use crate::postgres::jobs::{is_final, launch_worker, record_lost_jobs, WorkerStart};
use crate::postgres::models::{load_newest, parse_backbone};
use crate::postgres::relation::readable_relation;
use crate::postgres::spi::{first_pair, first_value, spi_failed};
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
    let options = required(options, "options");
    let options = TrainingOptions::parse(&options.0, backbone, init_dim, settings::threads())
        .unwrap_or_else(|e| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, e.0));
    check_enough_data(&source);
    advise_history_index(&source);
    claim_model_name(model_name);

    // login_role and created_xid come from the table's defaults (the caller
    // cannot set them): the worker connects as this session's login role
    let (job_id, creator_xid, login_role) = Spi::connect_mut(|client| {
        let row = client
            .update(
                "INSERT INTO tfllmer.job_store (model_name, source_table, source_name, user_column,
                        item_column, time_column, init, backbone, normalize, options, max_epochs)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 RETURNING job_id, created_xid::text, login_role::oid",
                None,
                &[
                    model_name.into(),
                    source.relation.oid.into(),
                    source.relation.display.as_str().into(),
                    source.user.name.as_str().into(),
                    source.item.name.as_str().into(),
                    source.time.name.as_str().into(),
                    init.into(),
                    backbone_name.into(),
                    normalize.into(),
                    JsonB(options.to_json()).into(),
                    (options.epochs as i32).into(),
                ],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<String>(2)?.unwrap_or_default(),
            row.get::<pg_sys::Oid>(3)?.unwrap_or(pg_sys::InvalidOid),
        ))
    })
    .unwrap_or_else(|e| spi_failed(e));
    let start = WorkerStart {
        database: unsafe { pg_sys::MyDatabaseId },
        login_role,
        owner: unsafe { pg_sys::GetUserId() },
        creator_xid: creator_xid.parse().unwrap_or(0),
    };
    if launch_worker(job_id, &start) {
        Spi::run_with_args("UPDATE tfllmer.job_store SET launched_at = now() WHERE job_id = $1", &[job_id.into()])
            .unwrap_or_else(|e| spi_failed(e));
    } else {
        let slots =
            Spi::get_one::<String>("SELECT current_setting('max_worker_processes')").ok().flatten().unwrap_or_default();
        notice!(
            "train: every background worker slot is in use (max_worker_processes = {slots}); job {job_id} is \
             queued and starts when a tfllmer job finishes or tfllmer.wait_job({job_id}) is called"
        );
    }
    job_id
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
    let mine = first_value::<bool>(
        "SELECT true FROM tfllmer.model_names WHERE model_name = $1 FOR UPDATE",
        &[model_name.into()],
    );
    if mine.is_none() {
        raise(Code::ERRCODE_DUPLICATE_OBJECT, format!("model name \"{model_name}\" is already used by another role"));
    }
    record_lost_jobs();
    let active = first_pair::<i64, String>(
        "SELECT job_id, state FROM tfllmer.job_store
          WHERE model_name = $1 AND state IN ('queued', 'running') ORDER BY job_id LIMIT 1",
        &[model_name.into()],
    )
    .unwrap_or((None, None));
    if let (Some(job), Some(state)) = active {
        raise_with_hint(
            Code::ERRCODE_OBJECT_IN_USE,
            format!("model \"{model_name}\" is already being trained by job {job} ({state})"),
            format!("Wait for it with tfllmer.wait_job({job}) or stop it with tfllmer.cancel_job({job})."),
        );
    }
}

/// The caller's job's state, or "does not exist" (also for other roles'
/// jobs, which the caller cannot see).
fn job_state(job_id: i64) -> String {
    first_value::<String>("SELECT state FROM tfllmer.job_store WHERE job_id = $1", &[job_id.into()])
        .unwrap_or_else(|| raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("job {job_id} does not exist")))
}

/// Asks a job to stop: a queued job is cancelled at once, a running one
/// within one batch (no model version is stored). False when the job had
/// already ended.
#[pg_extern(volatile, parallel_unsafe)]
fn cancel_job(job_id: Option<i64>) -> bool {
    let job_id = required(job_id, "job_id");
    record_lost_jobs();
    job_state(job_id);
    let state = first_value::<String>(
        "UPDATE tfllmer.job_store
            SET cancel_requested = true, updated_at = now(),
                state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END
          WHERE job_id = $1 AND state IN ('queued', 'running')
      RETURNING state",
        &[job_id.into()],
    );
    state.is_some()
}

/// Waits until a job has ended (or `timeout_s` passed) and returns its
/// state. Queued jobs are started here when a worker slot is free.
#[pg_extern(volatile, parallel_unsafe)]
fn wait_job(job_id: Option<i64>, timeout_s: default!(Option<f64>, "NULL")) -> String {
    let job_id = required(job_id, "job_id");
    if let Some(t) = timeout_s {
        if t.is_nan() || t < 0.0 {
            raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("timeout_s must be >= 0 or NULL, got {t}"));
        }
    }
    job_state(job_id);
    let in_this_transaction = first_value::<bool>(
        "SELECT created_xid = pg_catalog.pg_current_xact_id_if_assigned() FROM tfllmer.job_store WHERE job_id = $1",
        &[job_id.into()],
    )
    .unwrap_or(false);
    if in_this_transaction {
        raise_with_hint(
            Code::ERRCODE_INVALID_TRANSACTION_STATE,
            format!("job {job_id} was created in this transaction and cannot start before it commits"),
            "Commit first, then call tfllmer.wait_job().",
        );
    }
    let isolation = unsafe { pg_sys::XactIsoLevel };
    if isolation >= pg_sys::XACT_REPEATABLE_READ as i32 {
        raise(
            Code::ERRCODE_INVALID_TRANSACTION_STATE,
            "wait_job needs READ COMMITTED: a REPEATABLE READ or SERIALIZABLE snapshot would never see the job end",
        );
    }
    let deadline = timeout_s.map(|t| Instant::now() + Duration::from_secs_f64(t.min(1e9)));
    let mut launched: Option<Instant> = None;
    loop {
        // fresh activity data for the liveness check in every round
        unsafe { pg_sys::pgstat_clear_snapshot() };
        record_lost_jobs();
        let state = job_state(job_id);
        if is_final(&state) {
            return state;
        }
        // a queued job that no worker is starting: start one. (No writes
        // here: a row lock held by this long statement would block the
        // worker's claim until the wait ended.)
        if state == "queued" && launched.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            let roles = first_pair::<pg_sys::Oid, pg_sys::Oid>(
                "SELECT login_role::oid, owner::oid FROM tfllmer.job_store
                  WHERE job_id = $1 AND state = 'queued'
                    AND (launched_at IS NULL OR launched_at < now() - interval '1 minute')",
                &[job_id.into()],
            );
            if let Some((Some(login_role), Some(owner))) = roles {
                let start =
                    WorkerStart { database: unsafe { pg_sys::MyDatabaseId }, login_role, owner, creator_xid: 0 };
                if launch_worker(job_id, &start) {
                    launched = Some(Instant::now());
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return state;
        }
        sleep_interruptibly(Duration::from_millis(100));
    }
}

/// Sleeps on the backend's latch; Ctrl-C / statement_timeout end the wait.
fn sleep_interruptibly(d: Duration) {
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            d.as_millis() as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// One row per finished epoch of a job.
#[pg_extern(stable, parallel_safe)]
fn job_log(
    job_id: Option<i64>,
) -> TableIterator<
    'static,
    (name!(epoch, i32), name!(train_loss, f64), name!(valid_hr10, f64), name!(valid_ndcg10, f64), name!(epoch_ms, f64)),
> {
    let job_id = required(job_id, "job_id");
    job_state(job_id);
    let rows = Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            "SELECT epoch, train_loss, valid_hr10, valid_ndcg10, epoch_ms FROM tfllmer.job_epoch_store
              WHERE job_id = $1 ORDER BY epoch",
            None,
            &[job_id.into()],
        )? {
            out.push((
                row.get::<i32>(1)?.unwrap_or(0),
                row.get::<f64>(2)?.unwrap_or(f64::NAN),
                row.get::<f64>(3)?.unwrap_or(f64::NAN),
                row.get::<f64>(4)?.unwrap_or(f64::NAN),
                row.get::<f64>(5)?.unwrap_or(f64::NAN),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| spi_failed(e));
    TableIterator::new(rows)
}

/// Leave-one-out HR@k and NDCG@k of the model's newest version on its
/// interaction table as it is now (read with the caller's privileges):
/// full ranking over all items, history items masked.
#[pg_extern(volatile, parallel_unsafe)]
fn evaluate(
    model_name: Option<&str>,
    k: default!(Option<i32>, 10),
) -> TableIterator<'static, (name!(split, String), name!(n_users, i64), name!(hr, f64), name!(ndcg, f64))> {
    let model_name = object_name(model_name, "model_name");
    let k = required(k, "k");
    if k < 1 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("k must be at least 1, got {k}"));
    }
    // candle's pool first, built with PostgreSQL's signals blocked
    tfllmer_train::threads::init_compute_threads(settings::threads());
    let loaded = load_newest(model_name);
    debug1!("evaluate: model \"{model_name}\" version {}", loaded.version);
    let relation = readable_relation(Some(RegClass(loaded.source_table)), "interactions");
    let source = InteractionSource::new(
        relation,
        Some(SqlName(loaded.user_column.clone())),
        Some(SqlName(loaded.item_column.clone())),
        Some(SqlName(loaded.time_column.clone())),
    );
    let events = source.read_events().events;
    let (histories, _unknown) = Histories::with_items(events, loaded.item_ids.clone());
    let split = leave_one_out(&histories);
    let mut rows = Vec::new();
    let valid: Vec<(&[u32], u32)> = split.valid.iter().map(|v| (v.1, v.2)).collect();
    let test: Vec<(&[u32], u32)> = split.test.iter().map(|v| (v.1, v.2)).collect();
    for (name, cases) in [("valid", valid), ("test", test)] {
        let metrics = tfllmer_train::train::evaluate(&loaded.model, &cases, k as usize).unwrap_or_else(|e| {
            raise(Code::ERRCODE_INTERNAL_ERROR, format!("evaluation failed: {}", tfllmer_train::error_message(&e)))
        });
        rows.push((name.to_string(), cases.len() as i64, metrics.hr(), metrics.ndcg()));
    }
    TableIterator::new(rows)
}

/// Drops every version of a model. A model still being trained is refused
/// (cancel the job first).
#[pg_extern(volatile, parallel_unsafe)]
fn drop_model(model_name: Option<&str>, if_exists: default!(Option<bool>, false)) -> bool {
    let model_name = object_name(model_name, "model_name");
    let if_exists = required(if_exists, "if_exists");
    record_lost_jobs();
    let active = first_value::<i64>(
        "SELECT job_id FROM tfllmer.job_store WHERE model_name = $1 AND state IN ('queued', 'running')
          ORDER BY job_id LIMIT 1",
        &[model_name.into()],
    );
    if let Some(job) = active {
        raise_with_hint(
            Code::ERRCODE_OBJECT_IN_USE,
            format!("model \"{model_name}\" is being trained by job {job}"),
            format!("Stop it with tfllmer.cancel_job({job}) first."),
        );
    }
    let dropped = first_value::<i64>(
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

/// An SVG line chart of one or more jobs' training curves, one line per
/// job: `metric` 'train_loss' (default) or 'valid_ndcg10' per epoch.
#[pg_extern(stable, parallel_safe)]
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
    let (column, y_label) = match metric {
        "train_loss" => ("train_loss", "training loss (cross-entropy per position)"),
        "valid_ndcg10" => ("valid_ndcg10", "validation NDCG@10"),
        other => raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("metric must be 'train_loss' or 'valid_ndcg10', got '{other}'"),
        ),
    };
    let mut series = Vec::new();
    for job_id in job_ids {
        let job_id = required(job_id, "job_ids element");
        job_state(job_id);
        let label = first_value::<String>(
            "SELECT format('job %s: %s (%s, %s, %s)', job_id, model_name, backbone,
                           coalesce('init ' || init, 'random init'),
                           CASE WHEN normalize THEN 'normalised' ELSE 'not normalised' END)
               FROM tfllmer.job_store WHERE job_id = $1",
            &[job_id.into()],
        )
        .unwrap_or_default();
        let points = Spi::connect(|client| {
            let mut out = Vec::new();
            for row in client.select(
                &format!("SELECT epoch, {column} FROM tfllmer.job_epoch_store WHERE job_id = $1 ORDER BY epoch"),
                None,
                &[job_id.into()],
            )? {
                out.push((row.get::<i32>(1)?.unwrap_or(0).max(0) as u32, row.get::<f64>(2)?.unwrap_or(f64::NAN)));
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .unwrap_or_else(|e| spi_failed(e));
        series.push(tfllmer_train::plot::Series { label, points });
    }
    let title = title.unwrap_or(if column == "train_loss" { "training loss per epoch" } else { "validation NDCG@10" });
    tfllmer_train::plot::line_chart_svg(&series, title, y_label, (800, 480))
        .unwrap_or_else(|e| raise(Code::ERRCODE_INTERNAL_ERROR, format!("drawing the chart failed: {e}")))
}
