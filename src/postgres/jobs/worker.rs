//! What a training worker reads and writes about its own job: the claim,
//! the data summary, progress and the cancel flag, the epoch log, and the
//! job's end. Each function runs inside the worker's short transactions
//! (`postgres::xact::transaction`).

use pgrx::prelude::*;
use pgrx::JsonB;

use super::JobState;
use crate::postgres::errors::{raise, Code};
use crate::postgres::spi::{first_value, spi_failed, write_returning};

/// The job as train() stored it.
pub struct JobSpec {
    pub model_name: String,
    pub source_table: pg_sys::Oid,
    pub source_name: String,
    /// user, item and time columns
    pub columns: [String; 3],
    pub init: Option<String>,
    pub backbone: String,
    pub normalize: bool,
    pub options: serde_json::Value,
}

/// Where the transaction that created a job is.
pub enum Creator {
    InProgress,
    Committed,
    /// rolled back: there is no job
    Aborted,
}

/// The status of the transaction that called train() (its xid8).
pub fn creator_status(xid: u64) -> Creator {
    let status = first_value::<String>("SELECT pg_catalog.pg_xact_status($1::text::xid8)", &[xid.to_string().into()]);
    match status.as_deref() {
        Some("in progress") => Creator::InProgress,
        Some("aborted") => Creator::Aborted,
        // committed, or too old to look up: long over
        _ => Creator::Committed,
    }
}

/// Takes the job if it is still queued and not cancelled; None otherwise.
/// A stored row with a NULL where train() always writes a value is corrupt
/// (XX001).
pub fn claim(job_id: i64) -> Option<JobSpec> {
    let row = Spi::connect_mut(|client| {
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
        Ok::<_, pgrx::spi::Error>(Some((
            [row.get::<String>(1)?, row.get::<String>(3)?, row.get::<String>(4)?, row.get::<String>(5)?],
            row.get::<pg_sys::Oid>(2)?,
            row.get::<String>(6)?,
            row.get::<String>(7)?,
            row.get::<bool>(8)?,
            row.get::<JsonB>(9)?,
            row.get::<String>(10)?,
        )))
    })
    .unwrap_or_else(|e| spi_failed(e))?;
    let corrupt = |what: &str| -> ! {
        raise(Code::ERRCODE_DATA_CORRUPTED, format!("job {job_id}: the stored job has no {what}"))
    };
    let ([model_name, user, item, time], table, init, backbone, normalize, options, source_name) = row;
    Some(JobSpec {
        model_name: model_name.unwrap_or_else(|| corrupt("model name")),
        source_table: table.unwrap_or_else(|| corrupt("interaction table")),
        source_name: source_name.unwrap_or_else(|| corrupt("interaction table name")),
        columns: [
            user.unwrap_or_else(|| corrupt("user column")),
            item.unwrap_or_else(|| corrupt("item column")),
            time.unwrap_or_else(|| corrupt("time column")),
        ],
        init,
        backbone: backbone.unwrap_or_else(|| corrupt("backbone")),
        normalize: normalize.unwrap_or_else(|| corrupt("normalize flag")),
        options: options.map(|j| j.0).unwrap_or_else(|| corrupt("options")),
    })
}

/// Records what the data holds (users and items trained on) and notes
/// about it (rows skipped, items without an initial vector).
pub fn record_data(job_id: i64, n_users: i64, n_items: i64, detail: Option<String>) {
    Spi::run_with_args(
        "UPDATE tfllmer.job_store SET n_users = $2, n_items = $3, detail = $4, updated_at = now() WHERE job_id = $1",
        &[job_id.into(), n_users.into(), n_items.into(), detail.into()],
    )
    .unwrap_or_else(|e| spi_failed(e));
}

/// Writes progress (a fraction of the whole run) and the ETA when `write`,
/// and returns whether the job should stop: a cancel was requested, or the
/// row is gone.
pub fn progress_and_cancel(job_id: i64, write: Option<(f64, f64)>) -> bool {
    let cancel = match write {
        Some((progress, eta_s)) => write_returning::<bool>(
            "UPDATE tfllmer.job_store SET progress = $2, eta_s = $3, updated_at = now()
              WHERE job_id = $1 RETURNING cancel_requested",
            &[job_id.into(), progress.into(), eta_s.into()],
        ),
        None => {
            first_value::<bool>("SELECT cancel_requested FROM tfllmer.job_store WHERE job_id = $1", &[job_id.into()])
        }
    };
    cancel.unwrap_or(true)
}

/// One finished epoch, and where the whole run stands after it.
pub struct EpochRecord {
    pub epoch: i32,
    pub train_loss: f64,
    pub valid_hr10: f64,
    pub valid_ndcg10: f64,
    pub epoch_ms: f64,
    pub best_valid_ndcg10: f64,
    pub progress: f64,
    pub eta_s: f64,
}

/// Appends an epoch to the job's log and updates the job row.
pub fn log_epoch(job_id: i64, r: &EpochRecord) {
    Spi::run_with_args(
        "INSERT INTO tfllmer.job_epoch_store (job_id, epoch, train_loss, valid_hr10, valid_ndcg10, epoch_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            job_id.into(),
            r.epoch.into(),
            r.train_loss.into(),
            r.valid_hr10.into(),
            r.valid_ndcg10.into(),
            r.epoch_ms.into(),
        ],
    )
    .unwrap_or_else(|e| spi_failed(e));
    Spi::run_with_args(
        "UPDATE tfllmer.job_store SET epoch = $2, progress = $3, train_loss = $4, valid_ndcg10 = $5,
                best_valid_ndcg10 = $6, eta_s = $7, updated_at = now()
          WHERE job_id = $1",
        &[
            job_id.into(),
            r.epoch.into(),
            r.progress.into(),
            r.train_loss.into(),
            r.valid_ndcg10.into(),
            r.best_valid_ndcg10.into(),
            r.eta_s.into(),
        ],
    )
    .unwrap_or_else(|e| spi_failed(e));
}

/// Ends a job that is still queued or running with `state` (cancelled or
/// failed, with the message for failed).
pub fn finish(job_id: i64, state: JobState, error: Option<&str>) {
    Spi::run_with_args(
        "UPDATE tfllmer.job_store SET state = $2, error = $3, finished_at = now(), updated_at = now(), eta_s = NULL
          WHERE job_id = $1 AND state IN ('queued', 'running')",
        &[job_id.into(), state.as_str().into(), error.into()],
    )
    .unwrap_or_else(|e| spi_failed(e));
}

/// Locks the job row for the final save and tells whether a cancel
/// arrived meanwhile (then the job ends cancelled and nothing is stored).
pub fn lock_for_save(job_id: i64) -> bool {
    let cancelled = write_returning::<bool>(
        "SELECT cancel_requested FROM tfllmer.job_store WHERE job_id = $1 FOR UPDATE",
        &[job_id.into()],
    )
    .unwrap_or(true);
    if cancelled {
        finish(job_id, JobState::Cancelled, None);
    }
    cancelled
}

/// Marks the job succeeded with the version it stored.
pub fn mark_succeeded(job_id: i64, version: i32) {
    Spi::run_with_args(
        "UPDATE tfllmer.job_store SET state = 'succeeded', model_version = $2, progress = 1, eta_s = NULL,
                finished_at = now(), updated_at = now()
          WHERE job_id = $1",
        &[job_id.into(), version.into()],
    )
    .unwrap_or_else(|e| spi_failed(e));
}

/// Appends a sentence to the job's detail (what the job chose or did).
pub fn add_detail(job_id: i64, note: &str) {
    Spi::run_with_args(
        "UPDATE tfllmer.job_store SET detail = coalesce(detail || '; ', '') || $2 WHERE job_id = $1",
        &[job_id.into(), note.into()],
    )
    .unwrap_or_else(|e| spi_failed(e));
}
