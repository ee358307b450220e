//! Ready-to-score models kept by each backend, so a recommendation costs
//! one catalog lookup, one history read and one forward pass, never a
//! model load.
//!
//! Every call first asks the catalog which version of the model is newest
//! (as the caller, in the statement's snapshot: row-level security applies,
//! and a version committed by another session counts from the next
//! statement on). The cache is keyed by that version, so it never serves a
//! dropped or replaced model; older versions of a name leave the cache when a
//! newer one is loaded. Memory is bounded by tfllmer.model_cache_size, least
//! recently used models leave first.

use std::cell::RefCell;
use std::rc::Rc;

use lru::LruCache;
use pgrx::pg_sys;
use tfllmer_core::vocabulary::Vocabulary;
use tfllmer_train::scorer::Scorer;

use super::errors::{raise, Code};
use super::models::{load_version, newest_version, raise_no_version, VersionKey};
use crate::settings;

/// A model version ready to score, with what recommend() needs to read a
/// user's history.
pub struct ReadyModel {
    pub name: String,
    pub key: VersionKey,
    pub scorer: Scorer,
    /// the item of each token, and the token of each item
    items: Vocabulary,
    pub source_table: pg_sys::Oid,
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
    pub bytes: usize,
}

impl ReadyModel {
    /// The token of an item id; None for items the model was not trained on.
    pub fn token(&self, item_id: i64) -> Option<u32> {
        self.items.token(item_id)
    }

    /// The item id of a token (1..=n_items; scores and rankings only
    /// produce those).
    pub fn item_id(&self, token: u32) -> i64 {
        self.items.item_id(token).unwrap_or_else(|| {
            raise(Code::ERRCODE_INTERNAL_ERROR, format!("model \"{}\": no item has token {token}", self.name))
        })
    }

    pub fn max_len(&self) -> usize {
        self.scorer.config().max_len
    }
}

struct Entry {
    model: Rc<ReadyModel>,
    hits: u64,
}

#[derive(Default)]
struct Cache {
    entries: Option<LruCache<String, Entry>>,
    bytes: usize,
}

impl Cache {
    fn entries(&mut self) -> &mut LruCache<String, Entry> {
        self.entries.get_or_insert_with(LruCache::unbounded)
    }

    /// The cached model if it is `key`; a cached older version is dropped.
    fn get(&mut self, name: &str, key: VersionKey) -> Option<Rc<ReadyModel>> {
        let stale = match self.entries().get_mut(name) {
            Some(entry) if entry.model.key == key => {
                entry.hits += 1;
                return Some(entry.model.clone());
            }
            Some(_) => true,
            None => false,
        };
        if stale {
            self.remove(name);
        }
        None
    }

    fn remove(&mut self, name: &str) {
        if let Some(entry) = self.entries().pop(name) {
            self.bytes -= entry.model.bytes;
        }
    }

    /// Keeps `model` if it fits in `limit` bytes, dropping the least
    /// recently used models to make room.
    fn insert(&mut self, model: Rc<ReadyModel>, limit: usize) {
        self.remove(&model.name);
        if model.bytes > limit {
            return;
        }
        while self.bytes + model.bytes > limit {
            match self.entries().pop_lru() {
                Some((_, old)) => self.bytes -= old.model.bytes,
                None => break,
            }
        }
        self.bytes += model.bytes;
        self.entries().put(model.name.clone(), Entry { model, hits: 0 });
    }

    /// Drops models until they fit in `limit` (after the setting shrank).
    fn shrink_to(&mut self, limit: usize) {
        while self.bytes > limit {
            match self.entries().pop_lru() {
                Some((_, old)) => self.bytes -= old.model.bytes,
                None => break,
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The newest version of `name` the caller can use, ready to score; raises
/// as `load_newest` for an unknown model or one without a trained version.
pub fn ready_model(name: &str) -> Rc<ReadyModel> {
    let Some(key) = newest_version(name) else {
        // dropped, or not the caller's: free the memory, then say why
        CACHE.with(|c| c.borrow_mut().remove(name));
        raise_no_version(name)
    };
    let limit = settings::model_cache_bytes();
    if let Some(model) = CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        cache.shrink_to(limit);
        cache.get(name, key)
    }) {
        return model;
    }
    let loaded = load_version(name, Some(key.version));
    let scorer = Scorer::from_model(&loaded.model).unwrap_or_else(|e| {
        raise(
            Code::ERRCODE_INTERNAL_ERROR,
            format!("model \"{name}\" version {}: {}", key.version, tfllmer_train::error_message(&e)),
        )
    });
    let bytes = scorer.memory_bytes() + loaded.items.memory_bytes();
    let model = Rc::new(ReadyModel {
        name: name.to_string(),
        key,
        scorer,
        items: loaded.items,
        source_table: loaded.source_table,
        user_column: loaded.user_column,
        item_column: loaded.item_column,
        time_column: loaded.time_column,
        bytes,
    });
    CACHE.with(|c| c.borrow_mut().insert(model.clone(), limit));
    model
}

/// What this backend keeps: (model name, version, bytes, hits), most
/// recently used first.
pub fn cached_models() -> Vec<(String, i32, i64, i64)> {
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        cache
            .entries()
            .iter()
            .map(|(name, e)| (name.clone(), e.model.key.version, e.model.bytes as i64, e.hits as i64))
            .collect()
    })
}
