//! Training jobs: every statement on `tfllmer.job_store` and
//! `tfllmer.job_epoch_store` lives in this module (the API functions and
//! the worker call it), and so do the job states.
//!
//! A job is [`JobState::Queued`] until its worker claims it,
//! [`JobState::Running`] while the worker trains, then `Succeeded`,
//! `Failed` or `Cancelled`. A worker that dies without finishing (kill -9,
//! crash, restart) leaves a 'running' row whose worker is gone: the
//! `tfllmer.jobs` view shows it as failed at once, and [`record_lost_jobs`]
//! writes that down.
//!
//! - `mod.rs`: the states, creating a job, and what the SQL functions ask
//!   of a job (state, cancel, log, curves);
//! - [`worker`]: what the training worker writes (claim, progress, epochs,
//!   the end of the job);
//! - [`launch`]: starting background workers and the queue.

pub mod launch;
pub mod worker;

use std::fmt;

use pgrx::prelude::*;
use pgrx::JsonB;

use super::backend;
use super::errors::{raise, Code};
use super::spi::{first_pair, first_value, spi_failed, write_returning};

/// The life of a job, as `job_store.state` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state a stored value names; an ERROR (XX001) for anything else
    /// (the table's CHECK constraint allows nothing else).
    pub fn parse(stored: &str, job_id: i64) -> Self {
        match stored {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            other => raise(Code::ERRCODE_DATA_CORRUPTED, format!("job {job_id} has an unknown state '{other}'")),
        }
    }

    /// Succeeded, failed or cancelled: nothing will change it any more.
    pub const fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What train() records about a new job.
pub struct NewJob<'a> {
    pub model_name: &'a str,
    pub source_table: pg_sys::Oid,
    pub source_name: &'a str,
    pub columns: [&'a str; 3],
    pub init: Option<&'a str>,
    pub backbone: &'a str,
    pub normalize: bool,
    pub options: serde_json::Value,
    pub max_epochs: i32,
}

/// A job row just inserted: its id, and what its worker needs to start.
pub struct CreatedJob {
    pub job_id: i64,
    /// the inserting transaction (xid8): the worker waits for it to end
    pub creator_xid: u64,
    /// the session's login role, the worker connects as it
    pub login_role: pg_sys::Oid,
}

/// Inserts a queued job. login_role and created_xid come from the table's
/// defaults (the caller cannot set them).
pub fn create(job: &NewJob<'_>) -> CreatedJob {
    let row = Spi::connect_mut(|client| {
        let row = client
            .update(
                "INSERT INTO tfllmer.job_store (model_name, source_table, source_name, user_column,
                        item_column, time_column, init, backbone, normalize, options, max_epochs)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 RETURNING job_id, created_xid::text, login_role::oid",
                None,
                &[
                    job.model_name.into(),
                    job.source_table.into(),
                    job.source_name.into(),
                    job.columns[0].into(),
                    job.columns[1].into(),
                    job.columns[2].into(),
                    job.init.into(),
                    job.backbone.into(),
                    job.normalize.into(),
                    JsonB(job.options.clone()).into(),
                    job.max_epochs.into(),
                ],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((row.get::<i64>(1)?, row.get::<String>(2)?, row.get::<pg_sys::Oid>(3)?))
    })
    .unwrap_or_else(|e| spi_failed(e));
    let (Some(job_id), Some(xid), Some(login_role)) = row else {
        raise(Code::ERRCODE_INTERNAL_ERROR, "the new job row came back without its id, xid or login role")
    };
    let creator_xid = xid
        .parse()
        .unwrap_or_else(|_| raise(Code::ERRCODE_INTERNAL_ERROR, format!("the new job's xid '{xid}' is not a number")));
    CreatedJob { job_id, creator_xid, login_role }
}

/// Notes that a worker was registered for the job (a waiting wait_job()
/// does not start another one for a minute).
pub fn mark_launched(job_id: i64) {
    Spi::run_with_args("UPDATE tfllmer.job_store SET launched_at = now() WHERE job_id = $1", &[job_id.into()])
        .unwrap_or_else(|e| spi_failed(e));
}

/// The caller's job's state, or 42704 "does not exist" (also for other
/// roles' jobs, which the caller cannot see).
pub fn state(job_id: i64) -> JobState {
    let stored = first_value::<String>("SELECT state FROM tfllmer.job_store WHERE job_id = $1", &[job_id.into()])
        .unwrap_or_else(|| raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("job {job_id} does not exist")));
    JobState::parse(&stored, job_id)
}

/// Whether the job was created by the calling transaction (its worker
/// cannot start before that transaction commits).
pub fn created_in_this_transaction(job_id: i64) -> bool {
    first_value::<bool>(
        "SELECT created_xid = pg_catalog.pg_current_xact_id_if_assigned() FROM tfllmer.job_store WHERE job_id = $1",
        &[job_id.into()],
    )
    .unwrap_or(false)
}

/// A queued job that no worker has been registered for in the last minute:
/// the roles to start one with.
pub fn stalled_queued_job(job_id: i64) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    match first_pair::<pg_sys::Oid, pg_sys::Oid>(
        "SELECT login_role::oid, owner::oid FROM tfllmer.job_store
          WHERE job_id = $1 AND state = 'queued'
            AND (launched_at IS NULL OR launched_at < now() - interval '1 minute')",
        &[job_id.into()],
    ) {
        Some((Some(login_role), Some(owner))) => Some((login_role, owner)),
        _ => None,
    }
}

/// Asks a job to stop: a queued job is cancelled at once, a running one
/// when its worker next looks. False when the job had already ended.
pub fn request_cancel(job_id: i64) -> bool {
    write_returning::<String>(
        "UPDATE tfllmer.job_store
            SET cancel_requested = true, updated_at = now(),
                state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END
          WHERE job_id = $1 AND state IN ('queued', 'running')
      RETURNING state",
        &[job_id.into()],
    )
    .is_some()
}

/// The oldest queued or running job of a model, if any.
pub fn active_job_of_model(model_name: &str) -> Option<(i64, JobState)> {
    match first_pair::<i64, String>(
        "SELECT job_id, state FROM tfllmer.job_store
          WHERE model_name = $1 AND state IN ('queued', 'running') ORDER BY job_id LIMIT 1",
        &[model_name.into()],
    ) {
        Some((Some(job), Some(state))) => Some((job, JobState::parse(&state, job))),
        _ => None,
    }
}

/// The newest job of a model and its state as the `jobs` view shows it
/// (a lost worker's job is failed).
pub fn latest_job_of_model(model_name: &str) -> Option<(i64, JobState)> {
    match first_pair::<i64, String>(
        "SELECT job_id, state FROM tfllmer.jobs WHERE model_name = $1 ORDER BY job_id DESC LIMIT 1",
        &[model_name.into()],
    ) {
        Some((Some(job), Some(state))) => Some((job, JobState::parse(&state, job))),
        _ => None,
    }
}

/// Marks the caller's jobs whose worker is gone as failed, with the reason
/// the `jobs` view shows. Nothing on a hot standby: it cannot write, and
/// the primary's workers are not in its pg_stat_activity.
pub fn record_lost_jobs() {
    if backend::in_recovery() {
        return;
    }
    Spi::run(
        "UPDATE tfllmer.job_store s
            SET state = 'failed', finished_at = now(), updated_at = now(),
                error = 'the training worker (PID ' || s.worker_pid || ') ended without finishing the job: '
                        || 'it was killed, crashed, or the server restarted'
          WHERE s.state = 'running' AND NOT tfllmer.job_worker_alive(s.worker_pid, s.job_id)",
    )
    .unwrap_or_else(|e| spi_failed(e));
}

/// One finished epoch, as `job_log` returns it.
pub struct EpochRow {
    pub epoch: i32,
    pub train_loss: f64,
    pub valid_hr10: f64,
    pub valid_ndcg10: f64,
    pub epoch_ms: f64,
}

/// The job's finished epochs, in order. A NULL in a NOT NULL column is a
/// corrupt row (XX001).
pub fn epoch_log(job_id: i64) -> Vec<EpochRow> {
    let rows = Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            "SELECT epoch, train_loss, valid_hr10, valid_ndcg10, epoch_ms FROM tfllmer.job_epoch_store
              WHERE job_id = $1 ORDER BY epoch",
            None,
            &[job_id.into()],
        )? {
            out.push((
                row.get::<i32>(1)?,
                row.get::<f64>(2)?,
                row.get::<f64>(3)?,
                row.get::<f64>(4)?,
                row.get::<f64>(5)?,
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| spi_failed(e));
    rows.into_iter()
        .map(|row| match row {
            (Some(epoch), Some(train_loss), Some(valid_hr10), Some(valid_ndcg10), Some(epoch_ms)) => {
                EpochRow { epoch, train_loss, valid_hr10, valid_ndcg10, epoch_ms }
            }
            _ => raise(Code::ERRCODE_DATA_CORRUPTED, format!("job {job_id}: an epoch row has a NULL value")),
        })
        .collect()
}

/// A one-line description of the job for chart legends.
pub fn label(job_id: i64) -> String {
    first_value::<String>(
        "SELECT format('job %s: %s (%s, %s, %s)', job_id, model_name, backbone,
                       coalesce('init ' || init, 'random init'),
                       CASE WHEN normalize THEN 'normalised' ELSE 'not normalised' END)
           FROM tfllmer.job_store WHERE job_id = $1",
        &[job_id.into()],
    )
    .unwrap_or_else(|| raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("job {job_id} does not exist")))
}
