//! The background worker that runs one training job.
//!
//! It connects as the caller's login role and does SET ROLE to the role
//! that called train(), so everything it reads and writes goes through that
//! role's privileges and row-level security. It works in short
//! transactions: claim the job, read the data, one per batch (progress,
//! cancel check) and per epoch (the job log), and one that stores the model
//! version and marks the job succeeded; no transaction stays open while it
//! trains. Any error ends the job as 'failed' with the message.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::JsonB;
use tfllmer_core::embedding_codec;
use tfllmer_core::sequences::{leave_one_out, Histories};
use tfllmer_train::error_message;
use tfllmer_train::model::{ModelConfig, Recommender};
use tfllmer_train::options::TrainingOptions;
use tfllmer_train::rng::SplitMix64;
use tfllmer_train::train::{evaluate, train, Control, EpochReport, TrainOptions};

use crate::postgres::catalog::EMBEDDINGS;
use crate::postgres::interactions::InteractionSource;
use crate::postgres::jobs::{launch_queued_jobs, WorkerStart};
use crate::postgres::models::{encode_item_ids, parse_backbone};
use crate::postgres::relation::readable_relation;
use crate::postgres::spi::first_value;
use crate::postgres::sql_types::{RegClass, SqlName};

/// Entry point of a training worker (registered by jobs::launch_worker).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn tfllmer_training_worker_main(arg: pg_sys::Datum) {
    let job_id = unsafe { i64::from_polymorphic_datum(arg, false, pg_sys::INT8OID) }.unwrap_or(0);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(start) = WorkerStart::decode(BackgroundWorker::get_extra()) else {
        log!("tfllmer: training worker for job {job_id} got malformed start data; exiting");
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(start.database), Some(start.login_role));
    let outcome = run_job(job_id, &start);
    match &outcome {
        Outcome::NotMine => {}
        Outcome::Finished(state) => log!("tfllmer: job {job_id} {state}"),
        Outcome::Failed(message) => {
            log!("tfllmer: job {job_id} failed: {message}");
            let recorded = transaction(|| {
                Spi::run_with_args(
                    "UPDATE tfllmer.job_store SET state = 'failed', error = $2, finished_at = now(),
                            updated_at = now(), eta_s = NULL
                      WHERE job_id = $1 AND state IN ('queued', 'running')",
                    &[job_id.into(), message.as_str().into()],
                )
            });
            if !matches!(recorded, Ok(Ok(()))) {
                log!("tfllmer: could not record the failure of job {job_id}: {recorded:?}");
            }
        }
    }
    // a slot is free now: start jobs that were waiting for one
    if !matches!(outcome, Outcome::NotMine) && !BackgroundWorker::sigterm_received() {
        if let Err(e) = transaction(|| launch_queued_jobs(4)) {
            log!("tfllmer: starting queued jobs failed: {e}");
        }
    }
}

enum Outcome {
    /// the job was gone, already claimed, cancelled while queued, or its
    /// creating transaction rolled back: nothing to do
    NotMine,
    Finished(&'static str),
    Failed(String),
}

/// Runs `body` in its own transaction; a PostgreSQL ERROR or a panic rolls
/// it back and comes back as the error's message.
fn transaction<R>(body: impl FnOnce() -> R) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(AssertUnwindSafe(move || {
        let value = body();
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Ok(value)
    }))
    .catch_others(|e| Err(describe(e)))
    .execute();
    if result.is_err() {
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    result
}

fn describe(e: CaughtError) -> String {
    let report = match &e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
        CaughtError::RustPanic { ereport, .. } => ereport,
    };
    match report.detail() {
        Some(detail) if !detail.is_empty() => format!("{} ({detail})", report.message()),
        _ => report.message().to_string(),
    }
}

/// The job as train() stored it.
struct JobSpec {
    model_name: String,
    source_table: pg_sys::Oid,
    source_name: String,
    columns: [String; 3],
    init: Option<String>,
    backbone: String,
    normalize: bool,
    options: serde_json::Value,
}

/// Why training stopped early.
enum Stop {
    Cancelled,
    Shutdown,
    Error(String),
}

fn run_job(job_id: i64, start: &WorkerStart) -> Outcome {
    // act as the caller; name ourselves so that liveness checks find us
    let setup = transaction(|| {
        Spi::run_with_args(
            "SELECT pg_catalog.set_config('role', (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = $1), false),
                    pg_catalog.set_config('application_name', 'tfllmer job ' || $2, false),
                    pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)",
            &[start.owner.into(), job_id.into()],
        )
    });
    match setup {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Outcome::Failed(format!("could not act as the job's role: {e}")),
        Err(e) => return Outcome::Failed(format!("could not act as the job's role: {e}")),
    }
    if !wait_for_creator(start.creator_xid) {
        return Outcome::NotMine;
    }
    let claimed = transaction(|| claim(job_id));
    let spec = match claimed {
        Ok(Some(spec)) => spec,
        Ok(None) => return Outcome::NotMine,
        Err(e) => return Outcome::Failed(e),
    };
    match train_job(job_id, &spec) {
        Ok(state) => Outcome::Finished(state),
        Err(message) => Outcome::Failed(message),
    }
}

/// Waits until the transaction that called train() has ended; false when
/// it rolled back (or the server is shutting down).
fn wait_for_creator(xid: u64) -> bool {
    if xid == 0 {
        return true;
    }
    loop {
        let status = transaction(|| {
            first_value::<String>("SELECT pg_catalog.pg_xact_status($1::text::xid8)", &[xid.to_string().into()])
        });
        match status {
            Ok(Some(s)) if s == "in progress" => {}
            Ok(Some(s)) => return s == "committed",
            // too old to look up: long over
            _ => return true,
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(100))) {
            return false;
        }
    }
}

/// Takes the job if it is still queued.
fn claim(job_id: i64) -> Option<JobSpec> {
    Spi::connect_mut(|client| {
        let rows = client.update(
            "UPDATE tfllmer.job_store
                SET state = 'running', worker_pid = pg_catalog.pg_backend_pid(), started_at = now(), updated_at = now()
              WHERE job_id = $1 AND state = 'queued' AND NOT cancel_requested
          RETURNING model_name, source_table::oid, user_column::text, item_column::text, time_column::text,
                    init, backbone, normalize, options, source_name",
            None,
            &[job_id.into()],
        )?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let text = |i: usize| -> Result<String, pgrx::spi::Error> { Ok(row.get::<String>(i)?.unwrap_or_default()) };
        Ok::<_, pgrx::spi::Error>(Some(JobSpec {
            model_name: text(1)?,
            source_table: row.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
            columns: [text(3)?, text(4)?, text(5)?],
            init: row.get::<String>(6)?,
            backbone: text(7)?,
            normalize: row.get::<bool>(8)?.unwrap_or(true),
            options: row.get::<JsonB>(9)?.map(|j| j.0).unwrap_or(serde_json::Value::Null),
            source_name: text(10)?,
        }))
    })
    .unwrap_or_else(|e| crate::postgres::spi::spi_failed(e))
}

/// What the worker reads before training: the histories and the init vectors.
struct TrainingData {
    histories: Histories,
    init: Option<Vec<f32>>,
    detail: Vec<String>,
}

fn read_data(spec: &JobSpec, dim: usize, rng: &mut SplitMix64) -> TrainingData {
    if unsafe { pg_sys::get_rel_relkind(spec.source_table) } == 0 {
        crate::postgres::errors::raise(
            crate::postgres::errors::Code::ERRCODE_UNDEFINED_TABLE,
            format!("interactions: table {} was dropped after train() was called", spec.source_name),
        );
    }
    let relation = readable_relation(Some(RegClass(spec.source_table)), "interactions");
    let [user, item, time] = spec.columns.clone().map(|c| Some(SqlName(c)));
    let source = InteractionSource::new(relation, user, item, time);
    let read = source.read_events();
    let mut detail = Vec::new();
    if read.null_rows > 0 {
        detail.push(format!("skipped {} interaction(s) with NULL user, item or time", read.null_rows));
    }
    let histories = Histories::from_events(read.events);
    let init = spec.init.as_ref().map(|name| {
        let stored = embedding_codec::decode(&EMBEDDINGS.load_blob(name)).unwrap_or_else(|e| {
            crate::postgres::errors::raise(
                crate::postgres::errors::Code::ERRCODE_DATA_CORRUPTED,
                format!("embedding \"{name}\": {e}"),
            )
        });
        if stored.dim != dim {
            crate::postgres::errors::raise(
                crate::postgres::errors::Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("init: embedding \"{name}\" now has dimension {}, the job expects {dim}", stored.dim),
            );
        }
        // rows in model token order, unit length (as the reference does);
        // items the embedding does not cover start at a random direction
        let mut rows = Vec::with_capacity(histories.n_items() * dim);
        let mut missing = 0usize;
        for &id in &histories.items {
            let start = rows.len();
            match stored.ids.binary_search(&id) {
                Ok(r) => rows.extend_from_slice(stored.row(r)),
                Err(_) => {
                    missing += 1;
                    rows.extend(rng.normals(dim, 1.0));
                }
            }
            let row = &mut rows[start..];
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        if missing > 0 {
            detail.push(format!("{missing} item(s) have no vector in embedding \"{name}\" and start random"));
        }
        rows
    });
    TrainingData { histories, init, detail }
}

fn train_job(job_id: i64, spec: &JobSpec) -> Result<&'static str, String> {
    let backbone = parse_backbone(&spec.backbone).ok_or_else(|| format!("unknown backbone \"{}\"", spec.backbone))?;
    let options = TrainingOptions::parse(&spec.options, backbone, None, 1).map_err(|e| e.0)?;
    tfllmer_train::threads::init_compute_threads(options.threads);
    let mut rng = SplitMix64::new(options.seed);
    let data = transaction(|| read_data(spec, options.dim, &mut rng))?;
    let split = leave_one_out(&data.histories);
    if split.train.is_empty() {
        return Err("no user has at least 3 interactions: leave-one-out needs a training, a validation and a \
                    test item per user"
            .into());
    }
    let n_users = split.train.len() as i64;
    let n_items = data.histories.n_items() as i64;
    let detail = (!data.detail.is_empty()).then(|| data.detail.join("; "));
    transaction(|| {
        Spi::run_with_args(
            "UPDATE tfllmer.job_store SET n_users = $2, n_items = $3, detail = $4, updated_at = now() WHERE job_id = $1",
            &[job_id.into(), n_users.into(), n_items.into(), detail.into()],
        )
    })?
    .map_err(|e| e.to_string())?;

    let config = ModelConfig {
        backbone,
        n_items: data.histories.n_items(),
        dim: options.dim,
        max_len: options.max_len,
        layers: options.layers,
        heads: options.heads,
        dropout: options.dropout,
        normalize: spec.normalize,
        dtype: tfllmer_train::DType::F32,
        temperature: options.temperature,
    };
    let model = Recommender::new(config, data.init.as_deref(), &mut rng).map_err(|e| error_message(&e))?;
    let train_seqs: Vec<&[u32]> = split.train.iter().map(|t| t.1).collect();
    let valid: Vec<(&[u32], u32)> = split.valid.iter().map(|v| (v.1, v.2)).collect();
    let test: Vec<(&[u32], u32)> = split.test.iter().map(|v| (v.1, v.2)).collect();
    let samples = train_seqs.iter().filter(|q| q.len() >= 2).count();
    let batches_per_epoch = samples.div_ceil(options.batch_size).max(1);
    let train_options = TrainOptions {
        epochs: options.epochs,
        batch_size: options.batch_size,
        learning_rate: options.learning_rate,
        patience: options.patience,
    };

    let started = Instant::now();
    // shared by the two callbacks below
    let stop: RefCell<Option<Stop>> = RefCell::new(None);
    let epochs_done = Cell::new(0usize);
    let batch_in_epoch = Cell::new(0usize);
    let best = Cell::new(f64::NEG_INFINITY);
    let last_progress_write = Cell::new(None::<Instant>);
    let progress_of = |epochs_done: usize, batch: usize| {
        ((epochs_done as f64 + batch as f64 / batches_per_epoch as f64) / options.epochs as f64).min(1.0)
    };
    let halt = |why: Stop| {
        *stop.borrow_mut() = Some(why);
        Control::Stop
    };
    let mut between_batches = || {
        batch_in_epoch.set(batch_in_epoch.get() + 1);
        if BackgroundWorker::sigterm_received() {
            return halt(Stop::Shutdown);
        }
        // the cancel flag after every batch, progress at most every 200 ms
        let progress = progress_of(epochs_done.get(), batch_in_epoch.get().min(batches_per_epoch));
        let elapsed = started.elapsed().as_secs_f64();
        let eta = if progress > 0.0 { elapsed / progress * (1.0 - progress) } else { 0.0 };
        let write = last_progress_write.get().is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
        let checked = transaction(|| {
            if write {
                first_value::<bool>(
                    "UPDATE tfllmer.job_store SET progress = $2, eta_s = $3, updated_at = now()
                      WHERE job_id = $1 RETURNING cancel_requested",
                    &[job_id.into(), progress.into(), eta.into()],
                )
            } else {
                first_value::<bool>(
                    "SELECT cancel_requested FROM tfllmer.job_store WHERE job_id = $1",
                    &[job_id.into()],
                )
            }
        });
        if write {
            last_progress_write.set(Some(Instant::now()));
        }
        match checked {
            Ok(Some(false)) => Control::Continue,
            // cancelled, or the job row is gone
            Ok(_) => halt(Stop::Cancelled),
            Err(e) => halt(Stop::Error(e)),
        }
    };
    let mut on_epoch = |r: &EpochReport| {
        epochs_done.set(r.epoch);
        batch_in_epoch.set(0);
        best.set(best.get().max(r.valid_ndcg10));
        let progress = progress_of(r.epoch, 0);
        let elapsed = started.elapsed().as_secs_f64();
        let eta = elapsed / progress * (1.0 - progress);
        let written = transaction(|| {
            Spi::run_with_args(
                "INSERT INTO tfllmer.job_epoch_store (job_id, epoch, train_loss, valid_hr10, valid_ndcg10, epoch_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    job_id.into(),
                    (r.epoch as i32).into(),
                    r.train_loss.into(),
                    r.valid_hr10.into(),
                    r.valid_ndcg10.into(),
                    r.epoch_ms.into(),
                ],
            )?;
            Spi::run_with_args(
                "UPDATE tfllmer.job_store SET epoch = $2, progress = $3, train_loss = $4, valid_ndcg10 = $5,
                        best_valid_ndcg10 = $6, eta_s = $7, updated_at = now()
                  WHERE job_id = $1",
                &[
                    job_id.into(),
                    (r.epoch as i32).into(),
                    progress.into(),
                    r.train_loss.into(),
                    r.valid_ndcg10.into(),
                    best.get().into(),
                    eta.into(),
                ],
            )
        });
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return halt(Stop::Error(e.to_string())),
            Err(e) => return halt(Stop::Error(e)),
        }
        match options.max_train_seconds {
            Some(limit) if elapsed >= limit => Control::Stop,
            _ => Control::Continue,
        }
    };
    let reports = train(&model, &train_seqs, &valid, &train_options, &mut rng, &mut on_epoch, &mut between_batches)
        .map_err(|e| format!("training failed: {}", error_message(&e)))?;
    match stop.into_inner() {
        Some(Stop::Cancelled) => return finish_cancelled(job_id),
        Some(Stop::Shutdown) => {
            return Err("the server shut down (or the worker was terminated) during training".into())
        }
        Some(Stop::Error(e)) => return Err(e),
        None => {}
    }
    let Some(best_report) = reports.iter().max_by(|a, b| a.valid_ndcg10.total_cmp(&b.valid_ndcg10)) else {
        return Err("no epoch finished".into());
    };
    let test_metrics = evaluate(&model, &test, 10).map_err(|e| format!("evaluation failed: {}", error_message(&e)))?;
    let weights = model.to_safetensors().map_err(|e| format!("saving the model failed: {}", error_message(&e)))?;
    let item_ids = encode_item_ids(&data.histories.items);
    let saved = transaction(|| {
        save_version(
            job_id,
            spec,
            &model.config,
            &options,
            n_users,
            (reports.len(), best_report),
            (test_metrics.hr(), test_metrics.ndcg()),
            (&item_ids, &weights),
        )
    })?;
    Ok(saved)
}

fn finish_cancelled(job_id: i64) -> Result<&'static str, String> {
    transaction(|| {
        Spi::run_with_args(
            "UPDATE tfllmer.job_store SET state = 'cancelled', finished_at = now(), updated_at = now(), eta_s = NULL
              WHERE job_id = $1 AND state = 'running'",
            &[job_id.into()],
        )
    })?
    .map_err(|e| e.to_string())?;
    Ok("cancelled")
}

/// Stores the new version and marks the job succeeded, in one transaction;
/// a cancel that arrived meanwhile wins (nothing is stored).
#[allow(clippy::too_many_arguments)]
fn save_version(
    job_id: i64,
    spec: &JobSpec,
    config: &ModelConfig,
    options: &TrainingOptions,
    n_users: i64,
    (epochs, best): (usize, &EpochReport),
    (test_hr, test_ndcg): (f64, f64),
    (item_ids, weights): (&[u8], &[u8]),
) -> &'static str {
    let cancelled = first_value::<bool>(
        "SELECT cancel_requested FROM tfllmer.job_store WHERE job_id = $1 FOR UPDATE",
        &[job_id.into()],
    )
    .unwrap_or(true);
    if cancelled {
        Spi::run_with_args(
            "UPDATE tfllmer.job_store SET state = 'cancelled', finished_at = now(), updated_at = now(), eta_s = NULL
              WHERE job_id = $1",
            &[job_id.into()],
        )
        .unwrap_or_else(|e| crate::postgres::spi::spi_failed(e));
        return "cancelled";
    }
    Spi::run_with_args(
        "INSERT INTO tfllmer.model_names (model_name) VALUES ($1) ON CONFLICT DO NOTHING",
        &[spec.model_name.as_str().into()],
    )
    .unwrap_or_else(|e| crate::postgres::spi::spi_failed(e));
    let version = first_value::<i32>(
        "INSERT INTO tfllmer.model_store (model_name, version, job_id, backbone, normalized, init, n_items, n_users,
                dim, max_len, layers, heads, dropout, options, source_table, source_name, user_column, item_column,
                time_column, epochs, best_epoch, valid_ndcg10, test_hr10, test_ndcg10, item_ids, weights)
         SELECT $1, coalesce((SELECT max(version) FROM tfllmer.model_store WHERE model_name = $1), 0) + 1,
                $2, j.backbone, j.normalize, j.init, $3, $4, $5, $6, $7, $8, $9, j.options, j.source_table,
                j.source_name, j.user_column, j.item_column, j.time_column, $10, $11, $12, $13, $14, $15, $16
           FROM tfllmer.job_store j WHERE j.job_id = $2
         RETURNING version",
        &[
            spec.model_name.as_str().into(),
            job_id.into(),
            (config.n_items as i64).into(),
            n_users.into(),
            (config.dim as i32).into(),
            (config.max_len as i32).into(),
            (config.layers as i32).into(),
            (config.heads as i32).into(),
            options.dropout.into(),
            (epochs as i32).into(),
            (best.epoch as i32).into(),
            best.valid_ndcg10.into(),
            test_hr.into(),
            test_ndcg.into(),
            item_ids.into(),
            weights.into(),
        ],
    )
    .unwrap_or_else(|| {
        crate::postgres::errors::raise(crate::postgres::errors::Code::ERRCODE_INTERNAL_ERROR, "the job row vanished")
    });
    Spi::run_with_args(
        "UPDATE tfllmer.job_store SET state = 'succeeded', model_version = $2, progress = 1, eta_s = NULL,
                finished_at = now(), updated_at = now()
          WHERE job_id = $1",
        &[job_id.into(), version.into()],
    )
    .unwrap_or_else(|e| crate::postgres::spi::spi_failed(e));
    "succeeded"
}
