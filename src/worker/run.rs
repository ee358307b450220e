//! One job from claim to saved version: act as the caller, wait for the
//! creating transaction, claim the job, read the data, train, evaluate on
//! the test split and store the version (or end cancelled / failed).

use std::time::Duration;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use tfllmer_core::cold::{self, ColdMap};
use tfllmer_core::embedding_codec::{self, StoredEmbedding};
use tfllmer_core::sequences::{leave_one_out, Histories};
use tfllmer_core::vocabulary::Vocabulary;
use tfllmer_train::error_message;
use tfllmer_train::init::initial_item_table;
use tfllmer_train::model::{ModelConfig, Recommender};
use tfllmer_train::options::{default_eval_users, LossKind, TrainingOptions};
use tfllmer_train::rng::SplitMix64;
use tfllmer_train::scorer::Scorer;
use tfllmer_train::train::{batches_per_epoch, evaluate, train, training_samples, user_sample, Loss};

use super::progress::{Progress, Stop};
use super::Outcome;
use crate::postgres::backend;
use crate::postgres::catalog::EMBEDDINGS;
use crate::postgres::cold_items::{self, ColdRows};
use crate::postgres::errors::{raise, Code};
use crate::postgres::interactions::InteractionSource;
use crate::postgres::item_index;
use crate::postgres::jobs::launch::WorkerStart;
use crate::postgres::jobs::worker::{self as job, Creator, JobSpec};
use crate::postgres::jobs::JobState;
use crate::postgres::models::{self, parse_backbone, NewVersion};
use crate::postgres::relation::readable_relation;
use crate::postgres::sql_types::{RegClass, SqlName};
use crate::postgres::xact::{subtransaction, transaction};

pub(super) fn run_job(job_id: i64, start: &WorkerStart) -> Outcome {
    // act as the caller; name ourselves so that liveness checks find us
    let setup = transaction(|| {
        Spi::run_with_args(
            "SELECT pg_catalog.set_config('role', (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = $1), false),
                    pg_catalog.set_config('application_name', 'tfllmer job ' || $2, false),
                    pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)",
            &[start.owner.into(), job_id.into()],
        )
        .map_err(|e| e.to_string())
    });
    if let Err(e) | Ok(Err(e)) = setup {
        return Outcome::Failed(format!("could not act as the job's role: {e}"));
    }
    if !wait_for_creator(start.creator_xid) {
        return Outcome::NotMine;
    }
    let spec = match transaction(|| job::claim(job_id)) {
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
        match transaction(|| job::creator_status(xid)) {
            Ok(Creator::InProgress) => {}
            Ok(Creator::Committed) | Err(_) => return true,
            Ok(Creator::Aborted) => return false,
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(100))) {
            return false;
        }
    }
}

/// What the worker reads before training: the histories and the init rows.
struct TrainingData {
    histories: Histories,
    init: Option<Vec<f32>>,
    /// the init embedding as stored (its rows and projection: the cold-item map)
    embedding: Option<StoredEmbedding>,
    detail: Vec<String>,
}

fn read_data(spec: &JobSpec, options: &TrainingOptions, rng: &mut SplitMix64) -> TrainingData {
    let dim = options.dim;
    if !backend::relation_exists(spec.source_table) {
        raise(
            Code::ERRCODE_UNDEFINED_TABLE,
            format!("interactions: table {} was dropped after train() was called", spec.source_name),
        );
    }
    let relation = readable_relation(Some(RegClass(spec.source_table)), "interactions");
    let [user, item, time] = spec.columns.clone().map(|c| Some(SqlName(c)));
    let read = InteractionSource::new(relation, user, item, time).read_events();
    let mut detail = Vec::new();
    if read.null_rows > 0 {
        detail.push(format!("skipped {} interaction(s) with NULL user, item or time", read.null_rows));
    }
    let mut events = read.events;
    if options.cold_holdout > 0.0 {
        // the held-out items' interactions never reach training
        let before = events.len();
        let mut held = std::collections::HashSet::new();
        events.retain(|e| {
            let out = cold::held_out(e.item, options.cold_holdout, options.seed);
            if out {
                held.insert(e.item);
            }
            !out
        });
        detail.push(format!(
            "held out {} item(s) ({} interaction(s)): share {}, seed {}",
            held.len(),
            before - events.len(),
            options.cold_holdout,
            options.seed
        ));
    }
    let histories = Histories::from_events(events);
    let embedding = spec.init.as_ref().map(|name| {
        let stored = embedding_codec::decode(&EMBEDDINGS.load_blob(name))
            .unwrap_or_else(|e| raise(Code::ERRCODE_DATA_CORRUPTED, format!("embedding \"{name}\": {e}")));
        if stored.dim != dim {
            raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("init: embedding \"{name}\" now has dimension {}, the job expects {dim}", stored.dim),
            );
        }
        if options.cold_items && stored.projection.is_none() {
            raise(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "options.cold_items: embedding \"{name}\" was made before tfllmer 0.5.0 and keeps no projection \
                     for new items; run rec_pca again (replace => true)"
                ),
            );
        }
        stored
    });
    let init = embedding.as_ref().map(|stored| {
        let table = initial_item_table(&histories.items, stored, rng);
        if table.missing > 0 {
            detail.push(format!(
                "{} item(s) have no vector in embedding \"{}\" and start random",
                table.missing,
                spec.init.as_deref().unwrap_or_default()
            ));
        }
        table.rows
    });
    if options.cold_items && embedding.is_none() {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "options.cold_items maps items from their LLM embeddings: it needs an init embedding (train(..., init => ...))",
        );
    }
    TrainingData { histories, init, embedding, detail }
}

fn train_job(job_id: i64, spec: &JobSpec) -> Result<JobState, String> {
    let backbone = parse_backbone(&spec.backbone).ok_or_else(|| format!("unknown backbone \"{}\"", spec.backbone))?;
    let options = TrainingOptions::parse(&spec.options, backbone, None, 1).map_err(|e| e.0)?;
    tfllmer_train::threads::init_compute_threads(options.threads);
    let mut rng = SplitMix64::new(options.seed);
    let data = transaction(|| read_data(spec, &options, &mut rng))?;
    let split = leave_one_out(&data.histories);
    if split.train.is_empty() {
        return Err("no user has at least 3 interactions: leave-one-out needs a training, a validation and a \
                    test item per user"
            .into());
    }
    let n_users = split.train.len() as i64;
    let n_items = data.histories.n_items();
    let plan = TrainingPlan::new(&options, split.train.len(), n_items);
    let mut detail = data.detail.clone();
    detail.extend(plan.describe(split.train.len(), n_items));
    transaction(|| job::record_data(job_id, n_users, n_items as i64, Some(detail.join("; "))))?;

    let config = ModelConfig {
        backbone,
        n_items,
        dim: options.dim,
        max_len: options.max_len,
        layers: options.layers,
        heads: options.heads,
        dropout: options.dropout,
        normalize: spec.normalize,
        dtype: tfllmer_train::DType::F32,
        temperature: options.temperature,
    };
    let model = if options.warm_start {
        let (model, note) = transaction(|| warm_start_model(spec, &options, &data, &mut rng))??;
        transaction(|| job::add_detail(job_id, &note))?;
        model
    } else {
        Recommender::new(config, data.init.as_deref(), &mut rng).map_err(|e| error_message(&e))?
    };
    let train_seqs: Vec<&[u32]> = split.train.iter().map(|t| t.1).collect();
    // validation and test on the same users: all, or a seeded sample
    let valid: Vec<(&[u32], u32)> = plan.eval_sample.iter().map(|&u| (split.valid[u].1, split.valid[u].2)).collect();
    let test: Vec<(&[u32], u32)> = plan.eval_sample.iter().map(|&u| (split.test[u].1, split.test[u].2)).collect();
    let batches = batches_per_epoch(training_samples(&train_seqs).len(), options.batch_size);
    let mut progress = Progress::new(job_id, options.epochs, batches, options.max_train_seconds);
    let reports = train(&model, &train_seqs, &valid, &plan.train, &mut rng, &mut progress)
        .map_err(|e| format!("training failed: {}", error_message(&e)))?;
    match progress.into_stop() {
        Some(Stop::Cancelled) => {
            transaction(|| job::finish(job_id, JobState::Cancelled, None))?;
            return Ok(JobState::Cancelled);
        }
        Some(Stop::Shutdown) => {
            return Err("the server shut down (or the worker was terminated) during training".into())
        }
        Some(Stop::Error(e)) => return Err(e),
        None => {}
    }
    let best = match reports.iter().max_by(|a, b| a.valid_ndcg10.total_cmp(&b.valid_ndcg10)) {
        Some(best) => (best.epoch, best.valid_ndcg10),
        // a warm start of 0 epochs stores the version it continued, on today's data
        None if options.epochs == 0 => {
            let valid =
                evaluate(&model, &valid, 10).map_err(|e| format!("evaluation failed: {}", error_message(&e)))?;
            (0, valid.ndcg())
        }
        None => return Err("no epoch finished".into()),
    };
    let test_metrics = evaluate(&model, &test, 10).map_err(|e| format!("evaluation failed: {}", error_message(&e)))?;
    let weights = model.to_safetensors().map_err(|e| format!("saving the model failed: {}", error_message(&e)))?;
    let cold = match &data.embedding {
        Some(embedding) => cold_items_of(&model, &data.histories.items, embedding, &options)?,
        None => ColdPlan::default(),
    };
    if !cold.notes.is_empty() {
        transaction(|| job::add_detail(job_id, &cold.notes.join("; ")))?;
    }
    let version = NewVersion {
        model_name: &spec.model_name,
        job_id,
        config: &model.config,
        dropout: options.dropout,
        n_users,
        epochs: reports.len(),
        best_epoch: best.0,
        valid_ndcg10: best.1,
        test_hr10: test_metrics.hr(),
        test_ndcg10: test_metrics.ndcg(),
        test_users: test.len() as i64,
        options: plan.options.to_json(),
        item_ids: data.histories.items.encode(),
        weights,
        cold_map: cold.map.as_ref().map(ColdMap::encode),
    };
    transaction(|| save(job_id, &version, &model, &data.histories.items, &cold))
}

/// A new version's cold-item map and cold items, and what to say about them.
#[derive(Default)]
struct ColdPlan {
    map: Option<ColdMap>,
    /// items of the init embedding without interactions (option cold_items)
    rows: ColdRows,
    notes: Vec<String>,
}

/// Fits the map from the init embedding's rows to the trained item rows
/// (tfllmer_core::cold) when the embedding keeps its projection, and maps
/// the embedding's items that have no interactions when `cold_items`.
/// The cold items of the new version: those of the plan, and the newest
/// version's cold items that still have no interactions, mapped again by
/// the new version's map (from the same projection only: another one's
/// init rows mean nothing here). Runs in the transaction that stores the
/// version, under the model's lock, so that items added or dropped while
/// training ran are seen. Returns the rows and what to say about them.
fn with_previous_cold_items(
    model_name: &str,
    model: &Recommender,
    items: &Vocabulary,
    plan: &ColdPlan,
) -> (ColdRows, Option<String>) {
    let d = model.config.dim;
    let (Some(map), Some(key)) = (&plan.map, models::newest_version(model_name)) else {
        return (plan.rows.clone(), None);
    };
    let Some(old_map) = cold_items::cold_map(model_name, key.version).filter(|m| m.dim() == d) else {
        return (plan.rows.clone(), None);
    };
    let old = cold_items::read(model_name, key.version, d);
    let still: Vec<usize> = (0..old.len())
        .filter(|&r| items.token(old.ids[r]).is_none() && plan.rows.ids.binary_search(&old.ids[r]).is_err())
        .collect();
    if still.is_empty() {
        return (plan.rows.clone(), None);
    }
    if old_map.projection != map.projection {
        let note = format!(
            "{} cold item(s) of the previous version were not carried over: its init embedding's projection \
             differs from this one's (add them again with add_items)",
            still.len()
        );
        return (plan.rows.clone(), Some(note));
    }
    let mut merged = plan.rows.clone();
    for &r in &still {
        let z = &old.init_rows[r * d..(r + 1) * d];
        merged.ids.push(old.ids[r]);
        merged.rows.extend(map.row_of_init(z));
        merged.init_rows.extend_from_slice(z);
    }
    (merged.sorted(d), Some(format!("{} cold item(s) carried over from the previous version", still.len())))
}

fn cold_items_of(
    model: &Recommender,
    items: &Vocabulary,
    embedding: &StoredEmbedding,
    options: &TrainingOptions,
) -> Result<ColdPlan, String> {
    let Some(projection) = embedding.projection.clone() else {
        return Ok(ColdPlan::default());
    };
    let d = model.config.dim;
    let table = Scorer::item_table_of(model).map_err(|e| error_message(&e))?;
    // warm items with an init row: (init row, trained row)
    let (mut init, mut trained) = (Vec::new(), Vec::new());
    for (t, id) in items.ids().iter().enumerate() {
        if let Ok(r) = embedding.ids.binary_search(id) {
            init.extend_from_slice(embedding.row(r));
            trained.extend_from_slice(&table[(t + 1) * d..(t + 2) * d]);
        }
    }
    let mut plan = ColdPlan::default();
    let map = match cold::fit(projection, &init, &trained, model.config.normalize, options.seed) {
        Ok(map) => map,
        Err(e) if options.cold_items => return Err(format!("options.cold_items: {e}")),
        Err(e) => {
            plan.notes.push(format!("no cold-item map: {e}"));
            return Ok(plan);
        }
    };
    plan.notes.push(format!(
        "cold-item map fitted on {} items: mean cosine to the trained rows {:.3} on a held-out tenth (init rows as \
         they are: {:.3}){}",
        map.fit.items,
        map.fit.cosine,
        map.fit.identity_cosine,
        if options.cold_map_init { "; cold items keep their init rows (cold_map 'init')" } else { "" }
    ));
    let map = if options.cold_map_init { map.identity() } else { map };
    if options.cold_items {
        let mut cold = ColdRows::default();
        for (r, &id) in embedding.ids.iter().enumerate() {
            if items.token(id).is_none() {
                let z = embedding.row(r);
                cold.ids.push(id);
                cold.rows.extend(map.row_of_init(z));
                cold.init_rows.extend_from_slice(z);
            }
        }
        plan.notes.push(format!("{} cold item(s): embedded items without interactions", cold.len()));
        plan.rows = cold;
    }
    plan.map = Some(map);
    Ok(plan)
}

/// The model a warm start continues: the newest version's encoder, and an
/// item table over today's items. An item the version has (trained or
/// cold) keeps its row; a new item with a row in the init embedding is
/// mapped by the version's cold-item map when the embedding has the
/// projection the map was made with, else starts from that row; any other
/// starts at a random unit vector. Returns what the job's detail says.
fn warm_start_model(
    spec: &JobSpec,
    options: &TrainingOptions,
    data: &TrainingData,
    rng: &mut SplitMix64,
) -> Result<(Recommender, String), String> {
    let base = models::load_version(&spec.model_name, None);
    // train() checked the version that was newest then; one stored since
    // must be of the same shape too
    let c = &base.model.config;
    let backbone = parse_backbone(&spec.backbone);
    if Some(c.backbone) != backbone
        || c.normalize != spec.normalize
        || (c.dim, c.layers, c.heads, c.max_len) != (options.dim, options.layers, options.heads, options.max_len)
        || c.temperature != options.temperature
    {
        return Err(format!(
            "warm start: model \"{}\" version {} (newest now) is not of the shape train() checked: its backbone, \
             normalize, dim, layers, heads, max_len or temperature changed; call train() again",
            spec.model_name, base.version
        ));
    }
    let map = cold_items::cold_map(&spec.model_name, base.version);
    let d = base.model.config.dim;
    let base_rows = base.model.item_rows().map_err(|e| error_message(&e))?;
    let embedding = data.embedding.as_ref();
    let map = map.filter(|m| embedding.and_then(|e| e.projection.as_ref()) == Some(&m.projection));
    let unit = |v: &[f32]| -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter().map(|x| x / norm).collect()
        } else {
            v.to_vec()
        }
    };
    let items = &data.histories.items;
    let mut rows = Vec::with_capacity(items.len() * d);
    let [mut kept, mut mapped, mut from_init, mut random] = [0usize; 4];
    for &id in items.ids() {
        if let Some(t) = base.items.token(id) {
            rows.extend_from_slice(&base_rows[(t as usize - 1) * d..t as usize * d]);
            kept += 1;
            continue;
        }
        let z = embedding.and_then(|e| e.ids.binary_search(&id).ok().map(|r| e.row(r)));
        match (z, &map) {
            (Some(z), Some(map)) => {
                rows.extend(map.row_of_init(z));
                mapped += 1;
            }
            (Some(z), None) => {
                rows.extend(unit(z));
                from_init += 1;
            }
            _ => {
                rows.extend(unit(&rng.normals(d, 1.0)));
                random += 1;
            }
        }
    }
    let mut model = base.model.with_item_rows(items.len(), &rows).map_err(|e| error_message(&e))?;
    model.config.dropout = options.dropout;
    let note = format!(
        "warm start from version {}: {kept} item(s) keep their rows, {mapped} new item(s) mapped from the init \
         embedding, {from_init} start from their init rows, {random} at random",
        base.version
    );
    Ok((model, note))
}

/// What the options come to on this data: the loss and the evaluation
/// users resolved by size, and the options with both filled in.
struct TrainingPlan {
    train: tfllmer_train::train::TrainOptions,
    options: TrainingOptions,
    /// indices of the users whose validation and test cases are ranked
    eval_sample: Vec<usize>,
    /// whether the user chose the loss (else: by catalogue size)
    loss_given: bool,
}

impl TrainingPlan {
    fn new(options: &TrainingOptions, n_users: usize, n_items: usize) -> Self {
        let train = options.train_options(n_items);
        let eval_users = options.eval_users.unwrap_or_else(|| default_eval_users(n_users, n_items)).min(n_users);
        let mut resolved = options.clone();
        resolved.loss = Some(match train.loss {
            Loss::Full => LossKind::Full,
            Loss::SampledSoftmax { .. } => LossKind::SampledSoftmax,
        });
        resolved.eval_users = Some(eval_users);
        let eval_sample = user_sample(n_users, eval_users, options.seed);
        Self { train, options: resolved, eval_sample, loss_given: options.loss.is_some() }
    }

    /// For the job's detail: what was chosen, and why.
    fn describe(&self, n_users: usize, n_items: usize) -> Vec<String> {
        let by_size = |given: bool| if given { "" } else { " (by catalogue size)" };
        let mut out = vec![match self.train.loss {
            Loss::Full => format!("loss: full softmax over {n_items} items{}", by_size(self.loss_given)),
            Loss::SampledSoftmax { negatives, sampler } => format!(
                "loss: sampled softmax, {negatives} {} negatives per sequence{}",
                sampler.as_str(),
                by_size(self.loss_given)
            ),
        }];
        if self.eval_sample.len() < n_users {
            out.push(format!(
                "validation and test on a seeded sample of {} of {n_users} users",
                self.eval_sample.len()
            ));
        }
        out
    }
}

/// Stores the new version and marks the job succeeded, in one transaction;
/// a cancel that arrived meanwhile wins (nothing is stored).
/// A model with an item index gets one for the new version in the same
/// transaction: the version and its index appear together.
fn save(job_id: i64, version: &NewVersion<'_>, model: &Recommender, items: &Vocabulary, cold: &ColdPlan) -> JobState {
    if job::lock_for_save(job_id) {
        return JobState::Cancelled;
    }
    // cold items added or dropped meanwhile, an index being built: they
    // wait for this transaction, or it for them
    item_index::lock_model(version.model_name);
    let (cold_rows, carried) = with_previous_cold_items(version.model_name, model, items, cold);
    let number = models::insert_version(version);
    if !cold_rows.is_empty() {
        cold_items::insert(version.model_name, number, &cold_rows, model.config.dim);
        cold_items::adjust_count(version.model_name, number, cold_rows.len() as i64);
    }
    let index_note = index_new_version(version.model_name, number, job_id, model, items, &cold_rows);
    job::mark_succeeded(job_id, number);
    for note in carried.iter().chain(&index_note) {
        job::add_detail(job_id, note);
    }
    JobState::Succeeded
}

/// Builds the item index of a new version when the model has one, in a
/// subtransaction: an index that cannot be built (pgvector dropped, CREATE
/// on tfllmer_items revoked, a full disk) never costs the trained version,
/// which the exact path then serves. Returns what the job's detail should
/// say about it.
fn index_new_version(
    model_name: &str,
    version: i32,
    job_id: i64,
    model: &Recommender,
    items: &Vocabulary,
    cold: &ColdRows,
) -> Option<String> {
    // serialises with a create_item_index of the same model
    item_index::lock_model(model_name);
    let options = item_index::options_of(model_name)?;
    if item_index::pgvector().is_none() {
        return Some("no item index for this version: extension \"vector\" is no longer installed".to_string());
    }
    let built = subtransaction(|| {
        let mut rows = Scorer::item_table_of(model)
            .unwrap_or_else(|e| raise(Code::ERRCODE_INTERNAL_ERROR, tfllmer_train::error_message(&e)));
        rows.extend(Scorer::scoring_rows(&model.config, cold.rows.clone()));
        let all = items
            .clone()
            .with_cold(cold.ids.clone())
            .unwrap_or_else(|e| raise(Code::ERRCODE_INTERNAL_ERROR, e.to_string()));
        item_index::build(model_name, version, job_id, &rows, model.config.dim, &all, &options)
    });
    Some(match built {
        Ok(b) => format!("item index {} built in {:.1} s", b.table, b.build_ms / 1000.0),
        Err(e) => format!("no item index for this version (the exact path serves it): {e}"),
    })
}
