//! The background worker that runs one training job.
//!
//! It connects as the caller's login role and does SET ROLE to the role
//! that called train(), so everything it reads and writes goes through that
//! role's privileges and row-level security. It works in short
//! transactions (`postgres::xact`): claim the job, read the data, one per
//! batch (progress, cancel check, [`progress`]) and per epoch (the job
//! log), and one that stores the model version and marks the job succeeded
//! ([`run`]); no transaction stays open while it trains.
//!
//! Every way a job can end is written to its row: an ERROR or a panic
//! anywhere (candle, a fused op, a kernel's assert) ends it 'failed' with
//! the message. Then the worker hands on its slot: it runs the oldest job
//! queued by its own login role itself (a worker cannot register a
//! successor while it holds the slot), and starts workers for other roles'
//! queued jobs where slots are free.

mod progress;
mod run;

use std::panic::AssertUnwindSafe;

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

use crate::postgres::jobs::launch::{take_next_queued_job, WorkerStart};
use crate::postgres::jobs::{worker as job, JobState};
use crate::postgres::xact::{abort_open_transaction, panic_message, transaction};

/// How a worker's run ended.
enum Outcome {
    /// the job was gone, already claimed, cancelled while queued, or its
    /// creating transaction rolled back: nothing to do
    NotMine,
    Finished(JobState),
    Failed(String),
}

/// Entry point of a training worker (registered by jobs::launch).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn tfllmer_training_worker_main(arg: pg_sys::Datum) {
    // SAFETY: launch_worker passes the job id as a by-value int8 Datum
    let Some(job_id) = (unsafe { i64::from_polymorphic_datum(arg, false, pg_sys::INT8OID) }) else {
        log!("tfllmer: training worker started without a job id; exiting");
        return;
    };
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // test builds only: fault points named in the server's FAILPOINTS
    #[cfg(feature = "failpoints")]
    let _faults = fail::FailScenario::setup();
    let Some(start) = WorkerStart::decode(BackgroundWorker::get_extra()) else {
        log!("tfllmer: training worker for job {job_id} got malformed start data; exiting");
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(start.database), Some(start.login_role));
    let (mut job_id, mut start) = (job_id, start);
    loop {
        let outcome = run_and_record(job_id, &start);
        if matches!(outcome, Outcome::NotMine) || BackgroundWorker::sigterm_received() {
            break;
        }
        // this worker's slot is the free one: it runs the next queued job
        // of its login role itself, and starts workers for other roles'
        // jobs where slots are free
        match transaction(|| take_next_queued_job(&start)) {
            Ok(Some((next, next_start))) => (job_id, start) = (next, next_start),
            Ok(None) => break,
            Err(e) => {
                log!("tfllmer: starting queued jobs failed: {e}");
                break;
            }
        }
    }
}

/// Runs one job; any failure, a panic included, is written to its row.
fn run_and_record(job_id: i64, start: &WorkerStart) -> Outcome {
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| run::run_job(job_id, start))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            abort_open_transaction();
            Outcome::Failed(format!(
                "the training worker stopped on an internal error (please report it): {}",
                panic_message(&*payload)
            ))
        }
    };
    match &outcome {
        Outcome::NotMine => {}
        Outcome::Finished(state) => log!("tfllmer: job {job_id} {state}"),
        Outcome::Failed(message) => {
            log!("tfllmer: job {job_id} failed: {message}");
            if let Err(e) = transaction(|| job::finish(job_id, JobState::Failed, Some(message))) {
                log!("tfllmer: could not record the failure of job {job_id}: {e}");
            }
        }
    }
    outcome
}
