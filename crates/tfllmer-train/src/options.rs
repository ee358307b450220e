//! The `options` of `tfllmer.train()`: a JSON object whose keys are all
//! optional. Unknown keys, wrong types and out-of-range values are errors
//! that name the key and what was expected; nothing is silently ignored.

use serde_json::{Map, Value};

use crate::model::Backbone;
pub use crate::sampling::Sampler;
use crate::train::Loss;

/// Every training option, defaults filled in. The resolved set is stored
/// with the job, so users see exactly what a model was trained with.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub max_len: usize,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub dropout: f64,
    pub patience: usize,
    pub seed: u64,
    /// fixed logit temperature τ (logits = <h, ê>/τ); None: SASRec uses
    /// s = 1, GRU4Rec with normalised items learns s from 1/0.07
    pub temperature: Option<f64>,
    pub threads: usize,
    /// stop after the epoch during which this many seconds of training passed
    pub max_train_seconds: Option<f64>,
    /// the training loss; None: by catalogue size ([`LossChoice::resolve`])
    pub loss: Option<LossKind>,
    /// negatives per step of the sampled softmax
    pub negatives: usize,
    /// how the sampled softmax draws its negatives
    pub sampler: Sampler,
    /// users whose validation (and test) cases are ranked; None: by size
    /// ([`default_eval_users`])
    pub eval_users: Option<usize>,
    /// serve every item of the init embedding that has no interactions as
    /// a cold-start item of the new version
    pub cold_items: bool,
    /// the share of items held out of training entirely (seeded by `seed`:
    /// [`tfllmer_core::cold::held_out`]) and served as cold items, for
    /// evaluate(items => 'cold'); 0: none
    pub cold_holdout: f64,
    /// how cold items get their rows: false (default, "ridge"): the map
    /// fitted from init rows to trained rows; true ("init"): their init rows
    /// as they are (the ablation)
    pub cold_map_init: bool,
    /// continue from the model's newest version (its weights, its items'
    /// rows) instead of starting from `init`; epochs may then be 0
    pub warm_start: bool,
}

/// The values of option "loss".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    Full,
    SampledSoftmax,
}

impl LossKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::SampledSoftmax => "sampled_softmax",
        }
    }
}

/// The most negatives per sequence: a step draws batch_size × K items and
/// gathers their rows (K × dim per sequence, 4 MB at dim 64).
pub const MAX_NEGATIVES: usize = 16_384;

/// The keys users may pass, for messages.
pub const KEYS: &[&str] = &[
    "epochs",
    "batch_size",
    "learning_rate",
    "max_len",
    "dim",
    "layers",
    "heads",
    "dropout",
    "patience",
    "seed",
    "temperature",
    "threads",
    "max_train_seconds",
    "loss",
    "negatives",
    "sampler",
    "eval_users",
    "cold_items",
    "cold_holdout",
    "cold_map",
    "warm_start",
];

/// The options' defaults (those of shared/reference/sasrec_ref.py),
/// written once: parsing and [`crate::train::TrainOptions::default`] use them.
pub mod defaults {
    pub const EPOCHS: usize = 200;
    pub const BATCH_SIZE: usize = 128;
    pub const LEARNING_RATE: f64 = 1e-3;
    pub const MAX_LEN: usize = 50;
    /// without an init embedding (with one, its dimension)
    pub const DIM: usize = 64;
    pub const SASREC_LAYERS: usize = 2;
    pub const GRU4REC_LAYERS: usize = 1;
    pub const HEADS: usize = 1;
    pub const DROPOUT: f64 = 0.2;
    pub const PATIENCE: usize = 10;
    pub const SEED: u64 = 7;
    /// catalogues up to this many items train with the full softmax by
    /// default, larger ones with the sampled softmax
    pub const FULL_SOFTMAX_MAX_ITEMS: usize = 20_000;
    /// per sequence: a step draws batch_size × this many (at 1M items, 256
    /// trains an epoch in half the time of 1,024: BENCHMARKS.md)
    pub const NEGATIVES: usize = 256;
    pub const SAMPLER: super::Sampler = super::Sampler::Uniform;
    /// validation ranks at most about this many (user, item) scores an
    /// epoch by default: all users while users × items stays under it, else
    /// a seeded sample of EVAL_SCORES / items users (at least MIN_EVAL_USERS)
    pub const EVAL_SCORES: f64 = 1e10;
    pub const MIN_EVAL_USERS: usize = 1_000;
}

/// How many users validation and test rank when option eval_users is not
/// given: all of them while users × items ≤ [`defaults::EVAL_SCORES`],
/// else ⌊EVAL_SCORES / items⌋ (at least [`defaults::MIN_EVAL_USERS`]).
pub fn default_eval_users(n_users: usize, n_items: usize) -> usize {
    let budget = (defaults::EVAL_SCORES / n_items.max(1) as f64) as usize;
    n_users.min(budget.max(defaults::MIN_EVAL_USERS))
}

/// A user's mistake in the options, as a message naming the key.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionsError(pub String);

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn integer(map: &Map<String, Value>, key: &str, low: i64, high: i64, default: i64) -> Result<i64, OptionsError> {
    let Some(value) = map.get(key) else { return Ok(default) };
    let n = match value {
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64))
        }
        _ => None,
    };
    match n {
        Some(n) if (low..=high).contains(&n) => Ok(n),
        Some(n) => Err(OptionsError(format!("options.{key} must be between {low} and {high}, got {n}"))),
        None => Err(OptionsError(format!("options.{key} must be an integer, got {value}"))),
    }
}

/// A number in (low, high] or [low, high] (`low_inclusive`).
fn number(
    map: &Map<String, Value>,
    key: &str,
    low: f64,
    low_inclusive: bool,
    high: f64,
    high_inclusive: bool,
) -> Result<Option<f64>, OptionsError> {
    let Some(value) = map.get(key) else { return Ok(None) };
    let Some(x) = value.as_f64() else {
        return Err(OptionsError(format!("options.{key} must be a number, got {value}")));
    };
    let above = if low_inclusive { x >= low } else { x > low };
    let below = if high_inclusive { x <= high } else { x < high };
    if above && below {
        Ok(Some(x))
    } else {
        let (l, h) = (if low_inclusive { "[" } else { "(" }, if high_inclusive { "]" } else { ")" });
        Err(OptionsError(format!("options.{key} must be in {l}{low}, {high}{h}, got {x}")))
    }
}

/// A boolean option.
fn boolean(map: &Map<String, Value>, key: &str, default: bool) -> Result<bool, OptionsError> {
    match map.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(OptionsError(format!("options.{key} must be true or false, got {other}"))),
    }
}

/// A string option that must be one of `allowed`.
fn text<'a>(map: &'a Map<String, Value>, key: &str, allowed: &[&str]) -> Result<Option<&'a str>, OptionsError> {
    let Some(value) = map.get(key) else { return Ok(None) };
    match value.as_str() {
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        _ => Err(OptionsError(format!(
            "options.{key} must be one of {}, got {value}",
            allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

impl TrainingOptions {
    /// Parses `options`. `init_dim` is the dimension of the init embedding
    /// (it sets the model's dim); `default_threads` comes from the session.
    pub fn parse(
        options: &Value,
        backbone: Backbone,
        init_dim: Option<usize>,
        default_threads: usize,
    ) -> Result<Self, OptionsError> {
        let empty = Map::new();
        let map = match options {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => return Err(OptionsError(format!("options must be a JSON object, got {other}"))),
        };
        if let Some(unknown) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(OptionsError(format!("options: unknown key \"{unknown}\" (known keys: {})", KEYS.join(", "))));
        }
        let default_dim = init_dim.unwrap_or(defaults::DIM) as i64;
        let dim = integer(map, "dim", 1, 4096, default_dim)? as usize;
        if let Some(init_dim) = init_dim {
            if dim != init_dim {
                return Err(OptionsError(format!(
                    "options.dim is {dim} but the init embedding has dimension {init_dim}; leave dim out to use the \
                     embedding's"
                )));
            }
        }
        let default_layers =
            if backbone == Backbone::SasRec { defaults::SASREC_LAYERS } else { defaults::GRU4REC_LAYERS };
        let layers = integer(map, "layers", 1, 16, default_layers as i64)? as usize;
        if backbone == Backbone::Gru4Rec && layers != 1 {
            return Err(OptionsError(format!("options.layers must be 1 for gru4rec (one GRU layer), got {layers}")));
        }
        let heads = integer(map, "heads", 1, 64, defaults::HEADS as i64)? as usize;
        // "negatives" or "sampler" without "loss" asks for the sampled softmax
        let sampling_keys = ["negatives", "sampler"];
        let loss = match text(map, "loss", &["full", "sampled_softmax"])? {
            Some("full") => {
                if let Some(key) = sampling_keys.iter().find(|k| map.contains_key(**k)) {
                    return Err(OptionsError(format!(
                        "options.{key} applies to the sampled softmax, but options.loss is \"full\""
                    )));
                }
                Some(LossKind::Full)
            }
            Some(_) => Some(LossKind::SampledSoftmax),
            None if sampling_keys.iter().any(|k| map.contains_key(*k)) => Some(LossKind::SampledSoftmax),
            None => None,
        };
        if map.contains_key("cold_holdout") && map.get("cold_items") == Some(&Value::Bool(false)) {
            return Err(OptionsError(
                "options.cold_holdout serves the held-out items as cold items: it needs cold_items (leave it out)"
                    .into(),
            ));
        }
        if !dim.is_multiple_of(heads) {
            return Err(OptionsError(format!("options.heads ({heads}) must divide dim ({dim})")));
        }
        let warm_start = boolean(map, "warm_start", false)?;
        // a warm start may store the version as it is (0 epochs)
        let epochs = integer(map, "epochs", if warm_start { 0 } else { 1 }, 100_000, defaults::EPOCHS as i64)? as usize;
        Ok(TrainingOptions {
            epochs,
            batch_size: integer(map, "batch_size", 1, 65_536, defaults::BATCH_SIZE as i64)? as usize,
            learning_rate: number(map, "learning_rate", 0.0, false, 1.0, true)?.unwrap_or(defaults::LEARNING_RATE),
            max_len: integer(map, "max_len", 1, 1024, defaults::MAX_LEN as i64)? as usize,
            dim,
            layers,
            heads,
            dropout: number(map, "dropout", 0.0, true, 1.0, false)?.unwrap_or(defaults::DROPOUT),
            patience: integer(map, "patience", 1, 100_000, defaults::PATIENCE as i64)? as usize,
            seed: integer(map, "seed", 0, i64::MAX, defaults::SEED as i64)? as u64,
            temperature: number(map, "temperature", 0.0, false, 100.0, true)?,
            threads: integer(map, "threads", 1, 64, default_threads.clamp(1, 64) as i64)? as usize,
            max_train_seconds: number(map, "max_train_seconds", 0.0, false, 1e9, true)?,
            loss,
            negatives: integer(map, "negatives", 1, MAX_NEGATIVES as i64, defaults::NEGATIVES as i64)? as usize,
            sampler: match text(map, "sampler", &["uniform", "popularity"])? {
                None => defaults::SAMPLER,
                Some("popularity") => Sampler::Popularity,
                Some(_) => Sampler::Uniform,
            },
            eval_users: map
                .contains_key("eval_users")
                .then(|| integer(map, "eval_users", 1, 1_000_000_000, 1).map(|n| n as usize))
                .transpose()?,
            cold_holdout: number(map, "cold_holdout", 0.0, true, 0.5, true)?.unwrap_or(0.0),
            // a hold-out is evaluated as cold items: it implies cold_items
            cold_items: boolean(map, "cold_items", map.contains_key("cold_holdout"))?,
            cold_map_init: text(map, "cold_map", &["ridge", "init"])? == Some("init"),
            warm_start,
        })
    }

    /// The loss to train with on `n_items` items: the option when given,
    /// else the full softmax up to [`defaults::FULL_SOFTMAX_MAX_ITEMS`]
    /// items and the sampled softmax above.
    pub fn resolved_loss(&self, n_items: usize) -> Loss {
        let kind = self.loss.unwrap_or(if n_items <= defaults::FULL_SOFTMAX_MAX_ITEMS {
            LossKind::Full
        } else {
            LossKind::SampledSoftmax
        });
        match kind {
            LossKind::Full => Loss::Full,
            LossKind::SampledSoftmax => Loss::SampledSoftmax { negatives: self.negatives, sampler: self.sampler },
        }
    }

    /// What the training loop needs of these options, for a catalogue of
    /// `n_items` items.
    pub fn train_options(&self, n_items: usize) -> crate::train::TrainOptions {
        crate::train::TrainOptions {
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            patience: self.patience,
            loss: self.resolved_loss(n_items),
        }
    }

    /// The resolved options as a JSON object (stored with the job; parsing
    /// it again gives the same options).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("epochs".into(), self.epochs.into());
        map.insert("batch_size".into(), self.batch_size.into());
        map.insert("learning_rate".into(), self.learning_rate.into());
        map.insert("max_len".into(), self.max_len.into());
        map.insert("dim".into(), self.dim.into());
        map.insert("layers".into(), self.layers.into());
        map.insert("heads".into(), self.heads.into());
        map.insert("dropout".into(), self.dropout.into());
        map.insert("patience".into(), self.patience.into());
        map.insert("seed".into(), self.seed.into());
        if let Some(t) = self.temperature {
            map.insert("temperature".into(), t.into());
        }
        map.insert("threads".into(), self.threads.into());
        if let Some(s) = self.max_train_seconds {
            map.insert("max_train_seconds".into(), s.into());
        }
        if let Some(loss) = self.loss {
            map.insert("loss".into(), loss.as_str().into());
        }
        if self.loss == Some(LossKind::SampledSoftmax) {
            map.insert("negatives".into(), self.negatives.into());
            map.insert("sampler".into(), self.sampler.as_str().into());
        }
        if let Some(n) = self.eval_users {
            map.insert("eval_users".into(), n.into());
        }
        if self.cold_items {
            map.insert("cold_items".into(), true.into());
        }
        if self.cold_holdout > 0.0 {
            map.insert("cold_holdout".into(), self.cold_holdout.into());
        }
        if self.cold_map_init {
            map.insert("cold_map".into(), "init".into());
        }
        if self.warm_start {
            map.insert("warm_start".into(), true.into());
        }
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<TrainingOptions, OptionsError> {
        TrainingOptions::parse(&v, Backbone::SasRec, None, 2)
    }

    #[test]
    fn defaults_follow_the_reference() {
        let o = parse(json!({})).unwrap();
        assert_eq!((o.epochs, o.batch_size, o.max_len, o.dim, o.layers, o.heads), (200, 128, 50, 64, 2, 1));
        assert_eq!((o.learning_rate, o.dropout, o.patience, o.seed, o.threads), (1e-3, 0.2, 10, 7, 2));
        assert_eq!((o.temperature, o.max_train_seconds), (None, None));
        assert_eq!((o.loss, o.negatives, o.sampler, o.eval_users), (None, 256, Sampler::Uniform, None));
        assert_eq!((o.cold_items, o.cold_holdout), (false, 0.0));
        // a hold-out is served as cold items
        let h = parse(json!({"cold_holdout": 0.1})).unwrap();
        assert_eq!((h.cold_items, h.cold_holdout), (true, 0.1));
        assert_eq!(TrainingOptions::parse(&Value::Null, Backbone::SasRec, None, 3).unwrap().threads, 3);
        let gru = TrainingOptions::parse(&json!({}), Backbone::Gru4Rec, Some(32), 2).unwrap();
        assert_eq!((gru.layers, gru.dim), (1, 32));
    }

    #[test]
    fn resolved_options_round_trip() {
        let o = parse(json!({"epochs": 3, "temperature": 0.1, "max_train_seconds": 60, "lr_unused": null}));
        assert!(o.is_err(), "unknown key accepted");
        for given in [
            json!({"epochs": 3, "temperature": 0.1, "max_train_seconds": 60.0, "seed": 0}),
            json!({"loss": "full", "eval_users": 500}),
            json!({"loss": "sampled_softmax", "negatives": 64, "sampler": "popularity"}),
            json!({"negatives": 64}),
            json!({"cold_items": true}),
            json!({"cold_holdout": 0.1}),
            json!({"cold_holdout": 0}),
            json!({"cold_holdout": 0.1, "cold_map": "init"}),
            json!({"warm_start": true, "epochs": 0}),
        ] {
            let o = parse(given).unwrap();
            assert_eq!(parse(o.to_json()).unwrap(), o);
        }
    }

    #[test]
    fn every_mistake_names_its_key() {
        let cases = [
            (json!({"epoch": 3}), "unknown key \"epoch\""),
            (json!({"epochs": 0}), "options.epochs must be between 1 and 100000, got 0"),
            (json!({"epochs": "10"}), "options.epochs must be an integer, got \"10\""),
            (json!({"epochs": 2.5}), "options.epochs must be an integer"),
            (json!({"batch_size": -1}), "options.batch_size must be between 1"),
            (json!({"max_len": 5000}), "options.max_len must be between 1 and 1024"),
            (json!({"learning_rate": 0}), "options.learning_rate must be in (0, 1]"),
            (json!({"learning_rate": "fast"}), "options.learning_rate must be a number"),
            (json!({"dropout": 1.0}), "options.dropout must be in [0, 1)"),
            (json!({"heads": 3}), "options.heads (3) must divide dim (64)"),
            (json!({"temperature": 0}), "options.temperature must be in (0, 100]"),
            (json!({"threads": 0}), "options.threads must be between 1 and 64"),
            (json!([1, 2]), "options must be a JSON object"),
            (json!({"loss": "bpr"}), "options.loss must be one of \"full\", \"sampled_softmax\", got \"bpr\""),
            (json!({"negatives": 0}), "options.negatives must be between 1 and 16384, got 0"),
            (json!({"sampler": "zipf"}), "options.sampler must be one of \"uniform\", \"popularity\""),
            (json!({"loss": "full", "negatives": 8}), "options.negatives applies to the sampled softmax"),
            (json!({"loss": "full", "sampler": "uniform"}), "options.sampler applies to the sampled softmax"),
            (json!({"eval_users": 0}), "options.eval_users must be between 1"),
            (json!({"eval_users": 1.5}), "options.eval_users must be an integer"),
            (json!({"cold_items": 1}), "options.cold_items must be true or false, got 1"),
            (json!({"warm_start": "yes"}), "options.warm_start must be true or false"),
            (json!({"epochs": 0, "warm_start": false}), "options.epochs must be between 1 and 100000, got 0"),
            (json!({"cold_map": "knn"}), "options.cold_map must be one of \"ridge\", \"init\", got \"knn\""),
            (json!({"cold_holdout": 0.6}), "options.cold_holdout must be in [0, 0.5], got 0.6"),
            (json!({"cold_holdout": 0.1, "cold_items": false}), "options.cold_holdout serves the held-out items"),
        ];
        for (value, expected) in cases {
            let err = parse(value.clone()).unwrap_err().0;
            assert!(err.contains(expected), "{value}: got {err:?}, expected {expected:?}");
        }
        let gru = TrainingOptions::parse(&json!({"layers": 2}), Backbone::Gru4Rec, None, 2).unwrap_err().0;
        assert!(gru.contains("options.layers must be 1 for gru4rec"), "{gru}");
    }

    #[test]
    fn the_loss_follows_the_option_or_the_catalogue_size() {
        let auto = parse(json!({})).unwrap();
        assert_eq!(auto.resolved_loss(defaults::FULL_SOFTMAX_MAX_ITEMS), Loss::Full);
        let sampled = Loss::SampledSoftmax { negatives: defaults::NEGATIVES, sampler: defaults::SAMPLER };
        assert_eq!(auto.resolved_loss(defaults::FULL_SOFTMAX_MAX_ITEMS + 1), sampled);
        assert_eq!(parse(json!({"loss": "full"})).unwrap().resolved_loss(10_000_000), Loss::Full);
        let few = parse(json!({"negatives": 16})).unwrap();
        assert_eq!(few.resolved_loss(10), Loss::SampledSoftmax { negatives: 16, sampler: defaults::SAMPLER });
        let popular = parse(json!({"loss": "sampled_softmax", "sampler": "popularity"})).unwrap();
        assert_eq!(
            popular.train_options(5).loss,
            Loss::SampledSoftmax { negatives: defaults::NEGATIVES, sampler: Sampler::Popularity }
        );
    }

    #[test]
    fn evaluation_ranks_every_user_until_the_scores_grow_large() {
        assert_eq!(default_eval_users(6_040, 3_706), 6_040);
        assert_eq!(default_eval_users(1_000_000, 100_000), 100_000);
        assert_eq!(default_eval_users(1_000_000, 1_000_000), 10_000);
        assert_eq!(default_eval_users(1_000_000, 100_000_000), defaults::MIN_EVAL_USERS);
        assert_eq!(default_eval_users(500, 100_000_000), 500);
    }

    #[test]
    fn init_dim_sets_dim_and_must_agree() {
        assert_eq!(TrainingOptions::parse(&json!({}), Backbone::SasRec, Some(16), 2).unwrap().dim, 16);
        assert_eq!(TrainingOptions::parse(&json!({"dim": 16}), Backbone::SasRec, Some(16), 2).unwrap().dim, 16);
        let err = TrainingOptions::parse(&json!({"dim": 64}), Backbone::SasRec, Some(16), 2).unwrap_err().0;
        assert!(err.contains("options.dim is 64 but the init embedding has dimension 16"), "{err}");
    }
}
