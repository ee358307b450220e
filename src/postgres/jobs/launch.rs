//! Starting training workers: a dynamic background worker per job (no
//! `shared_preload_libraries` needed), and the queue of jobs that found
//! every worker slot taken.

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::prelude::*;

use crate::postgres::backend;
use crate::postgres::spi::spi_failed;

/// The exported symbol of the worker's entry point (src/worker.rs).
pub const WORKER_FUNCTION: &str = "tfllmer_training_worker_main";
/// `backend_type` of training workers in pg_stat_activity.
pub const WORKER_TYPE: &str = "tfllmer training";

/// What a worker needs to know before it can read anything: which database
/// to connect to, as whom, which role to act as, and which transaction
/// created its job (the worker waits until that one has ended). Passed as
/// the worker's `bgw_extra` text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerStart {
    pub database: pg_sys::Oid,
    pub login_role: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    /// the creating transaction's xid8, 0 when it is known to be over
    pub creator_xid: u64,
}

impl WorkerStart {
    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {}",
            u32::from(self.database),
            u32::from(self.login_role),
            u32::from(self.owner),
            self.creator_xid
        )
    }

    pub fn decode(extra: &str) -> Option<Self> {
        let mut parts = extra.split_ascii_whitespace();
        let mut oid = || parts.next()?.parse::<u32>().ok().map(pg_sys::Oid::from);
        let (database, login_role, owner) = (oid()?, oid()?, oid()?);
        let creator_xid = parts.next()?.parse().ok()?;
        Some(Self { database, login_role, owner, creator_xid })
    }
}

/// Registers a background worker for `job_id`. False when every worker
/// slot is taken (max_worker_processes): the job stays queued.
pub fn launch_worker(job_id: i64, start: &WorkerStart) -> bool {
    BackgroundWorkerBuilder::new(&format!("tfllmer training job {job_id}"))
        .set_type(WORKER_TYPE)
        .set_library("tfllmer")
        .set_function(WORKER_FUNCTION)
        .set_argument(job_id.into_datum())
        .set_extra(&start.encode())
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic()
        .is_ok()
}

/// Starts workers for up to 4 queued jobs of any role in this database
/// (tfllmer.claim_queued_jobs, the one SECURITY DEFINER function), for a
/// worker that has just finished a job: the oldest queued job of its own login role it keeps
/// and runs itself (its slot is the one that is free; it cannot register a
/// successor while it holds it). Returns that job, if any.
pub fn take_next_queued_job(finished: &WorkerStart) -> Option<(i64, WorkerStart)> {
    let claimed: Vec<(i64, pg_sys::Oid, pg_sys::Oid)> = Spi::connect_mut(|client| {
        let rows = client.update(
            "SELECT job_id, login_role, owner FROM tfllmer.claim_queued_jobs($1)",
            None,
            &[4i32.into()],
        )?;
        let mut out = Vec::new();
        for row in rows {
            if let (Some(job), Some(login), Some(owner)) =
                (row.get::<i64>(1)?, row.get::<pg_sys::Oid>(2)?, row.get::<pg_sys::Oid>(3)?)
            {
                out.push((job, login, owner));
            }
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| spi_failed(e));
    let database = backend::database();
    let mut kept = None;
    for (job_id, login_role, owner) in claimed {
        let start = WorkerStart { database, login_role, owner, creator_xid: 0 };
        if kept.is_none() && login_role == finished.login_role {
            kept = Some((job_id, start));
        } else if !launch_worker(job_id, &start) {
            Spi::run_with_args("SELECT tfllmer.release_queued_job($1)", &[job_id.into()])
                .unwrap_or_else(|e| spi_failed(e));
        }
    }
    kept
}
