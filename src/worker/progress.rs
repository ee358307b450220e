//! Progress reporting of a running job: after every batch the cancel flag
//! is read (and progress and ETA written at most every 200 ms), after every
//! epoch the job log gets a row. One type follows the whole run; the
//! training loop calls it through `TrainObserver`.

use std::time::{Duration, Instant};

use pgrx::bgworkers::BackgroundWorker;
use tfllmer_train::train::{Control, EpochReport, TrainObserver};

use crate::postgres::jobs::worker::{self as job, EpochRecord};
use crate::postgres::xact::transaction;

/// How often progress is written (the cancel flag is read every batch).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Why training stopped before its end.
pub enum Stop {
    Cancelled,
    Shutdown,
    Error(String),
}

/// Follows one job's training run and writes its progress.
pub struct Progress {
    job_id: i64,
    epochs: usize,
    batches_per_epoch: usize,
    max_seconds: Option<f64>,
    started: Instant,
    epochs_done: usize,
    batch_in_epoch: usize,
    best_valid_ndcg10: f64,
    last_write: Option<Instant>,
    stop: Option<Stop>,
}

impl Progress {
    pub fn new(job_id: i64, epochs: usize, batches_per_epoch: usize, max_seconds: Option<f64>) -> Self {
        Self {
            job_id,
            epochs: epochs.max(1),
            batches_per_epoch: batches_per_epoch.max(1),
            max_seconds,
            started: Instant::now(),
            epochs_done: 0,
            batch_in_epoch: 0,
            best_valid_ndcg10: f64::NEG_INFINITY,
            last_write: None,
            stop: None,
        }
    }

    /// Why the run stopped early, if it did.
    pub fn into_stop(self) -> Option<Stop> {
        self.stop
    }

    /// The fraction of the whole run done, and the seconds left at this pace.
    fn progress_and_eta(&self) -> (f64, f64) {
        let batch = self.batch_in_epoch.min(self.batches_per_epoch) as f64 / self.batches_per_epoch as f64;
        let progress = ((self.epochs_done as f64 + batch) / self.epochs as f64).min(1.0);
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if progress > 0.0 { elapsed / progress * (1.0 - progress) } else { 0.0 };
        (progress, eta)
    }

    fn halt(&mut self, why: Stop) -> Control {
        self.stop = Some(why);
        Control::Stop
    }
}

impl TrainObserver for Progress {
    fn between_batches(&mut self) -> Control {
        self.batch_in_epoch += 1;
        if BackgroundWorker::sigterm_received() {
            return self.halt(Stop::Shutdown);
        }
        let write = self.last_write.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY).then(|| self.progress_and_eta());
        if write.is_some() {
            self.last_write = Some(Instant::now());
        }
        match transaction(|| job::progress_and_cancel(self.job_id, write)) {
            Ok(false) => Control::Continue,
            // cancelled, or the job row is gone
            Ok(true) => self.halt(Stop::Cancelled),
            Err(e) => self.halt(Stop::Error(e)),
        }
    }

    fn on_epoch(&mut self, r: &EpochReport) -> Control {
        self.epochs_done = r.epoch;
        self.batch_in_epoch = 0;
        self.best_valid_ndcg10 = self.best_valid_ndcg10.max(r.valid_ndcg10);
        let (progress, eta_s) = self.progress_and_eta();
        let record = EpochRecord {
            epoch: i32::try_from(r.epoch).unwrap_or(i32::MAX),
            train_loss: r.train_loss,
            valid_hr10: r.valid_hr10,
            valid_ndcg10: r.valid_ndcg10,
            epoch_ms: r.epoch_ms,
            best_valid_ndcg10: self.best_valid_ndcg10,
            progress,
            eta_s,
        };
        if let Err(e) = transaction(|| job::log_epoch(self.job_id, &record)) {
            return self.halt(Stop::Error(e));
        }
        match self.max_seconds {
            Some(limit) if self.started.elapsed().as_secs_f64() >= limit => Control::Stop,
            _ => Control::Continue,
        }
    }
}
