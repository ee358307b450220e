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

use super::errors::notice_with_hint;
use super::errors::{raise, Code};
use super::item_index::{self, IndexTable, ServingIndex};
use super::models::{load_encoder, load_version, newest_version, raise_no_version, VersionKey};
use crate::settings;

/// A model version ready to score, with what recommend() needs to read a
/// user's history.
pub struct ReadyModel {
    pub name: String,
    pub key: VersionKey,
    /// the whole model, or (served through an item index) its encoder alone
    pub scorer: Scorer,
    /// how items are found: the whole item table here, or an index table
    pub items: Items,
    pub source_table: pg_sys::Oid,
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
    pub bytes: usize,
}

/// Where a ready model's items are.
pub enum Items {
    /// the item table is in `scorer`; the item of each token, and the token
    /// of each item
    Here(Vocabulary),
    /// in an item index table (create_item_index); `scorer` holds the
    /// encoder only
    Indexed(ServingIndex),
}

impl ReadyModel {
    /// The token of an item id; None for items the model was not trained on
    /// (and always for a model served through an index: it has no tokens).
    pub fn token(&self, item_id: i64) -> Option<u32> {
        match &self.items {
            Items::Here(items) => items.token(item_id),
            Items::Indexed(_) => None,
        }
    }

    /// The item id of a token (1..=n_items; scores and rankings only
    /// produce those).
    pub fn item_id(&self, token: u32) -> i64 {
        let id = match &self.items {
            Items::Here(items) => items.item_id(token),
            Items::Indexed(_) => None,
        };
        id.unwrap_or_else(|| {
            raise(Code::ERRCODE_INTERNAL_ERROR, format!("model \"{}\": no item has token {token}", self.name))
        })
    }

    pub fn max_len(&self) -> usize {
        self.scorer.config().max_len
    }

    /// The item index that serves this model, if one does.
    pub fn index(&self) -> Option<&ServingIndex> {
        match &self.items {
            Items::Indexed(index) => Some(index),
            Items::Here(_) => None,
        }
    }

    /// What the cache compares: the index table and its search list (an
    /// UPDATE of the index's ef_search counts from the next call).
    fn index_key(&self) -> Option<(pg_sys::Oid, usize)> {
        self.index().map(|i| (i.table.oid, i.table.ef_search))
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

    /// The cached model if it is `key` served by index table `index`; a
    /// cached other one is dropped.
    fn get(&mut self, name: &str, key: VersionKey, index: Option<(pg_sys::Oid, usize)>) -> Option<Rc<ReadyModel>> {
        let stale = match self.entries().get_mut(name) {
            Some(entry) if entry.model.key == key && entry.model.index_key() == index => {
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
/// as `load_version` for an unknown model or one without a trained version.
pub fn ready_model(name: &str) -> Rc<ReadyModel> {
    let Some(key) = newest_version(name) else {
        // dropped, or not the caller's: free the memory, then say why
        CACHE.with(|c| c.borrow_mut().remove(name));
        raise_no_version(name)
    };
    let index = item_index::index_of(name, key.version);
    let limit = settings::model_cache_bytes();
    if let Some(model) = CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        cache.shrink_to(limit);
        cache.get(name, key, index.as_ref().map(|i| (i.oid, i.ef_search)))
    }) {
        return model;
    }
    let model = Rc::new(match index {
        Some(index) => load_indexed(name, key, index),
        None => load_whole(name, key),
    });
    CACHE.with(|c| c.borrow_mut().insert(model.clone(), limit));
    model
}

/// A version with its whole item table and vocabulary.
fn load_whole(name: &str, key: VersionKey) -> ReadyModel {
    let loaded = load_version(name, Some(key.version));
    let scorer = Scorer::from_model(&loaded.model).unwrap_or_else(|e| unloadable(name, key, &e));
    drop(loaded.model);
    advise_index(name, &scorer);
    let bytes = scorer.memory_bytes() + loaded.items.memory_bytes();
    ReadyModel {
        name: name.to_string(),
        key,
        scorer,
        items: Items::Here(loaded.items),
        source_table: loaded.source_table,
        user_column: loaded.user_column,
        item_column: loaded.item_column,
        time_column: loaded.time_column,
        bytes,
    }
}

/// A version served through its item index table: the encoder alone.
fn load_indexed(name: &str, key: VersionKey, index: IndexTable) -> ReadyModel {
    let (meta, encoder) = load_encoder(name, key.version);
    let serving = ServingIndex::new(index, name, meta.config.dim);
    let scorer = Scorer::from_model(&encoder).unwrap_or_else(|e| unloadable(name, key, &e));
    ReadyModel {
        name: name.to_string(),
        key,
        bytes: scorer.memory_bytes(),
        scorer,
        items: Items::Indexed(serving),
        source_table: meta.source_table,
        user_column: meta.user_column,
        item_column: meta.item_column,
        time_column: meta.time_column,
    }
}

fn unloadable(name: &str, key: VersionKey, e: &tfllmer_train::Error) -> ! {
    raise(
        Code::ERRCODE_INTERNAL_ERROR,
        format!("model \"{name}\" version {}: {}", key.version, tfllmer_train::error_message(e)),
    )
}

thread_local! {
    /// Models this backend has said it holds whole (once per connection).
    static ADVISED: RefCell<std::collections::HashSet<String>> = RefCell::new(Default::default());
}

/// Says once per connection and model when a large model is held whole by
/// this backend.
fn advise_index(name: &str, scorer: &Scorer) {
    if (scorer.n_items() as i64) < item_index::ADVISE_ITEMS
        || !ADVISED.with(|a| a.borrow_mut().insert(name.to_string()))
    {
        return;
    }
    notice_with_hint(
        format!(
            "model \"{name}\" has {} items and no item index: this connection holds its whole item table ({} MB)",
            scorer.n_items(),
            scorer.memory_bytes() / 1_000_000
        ),
        format!(
            "With pgvector installed, SELECT tfllmer.create_item_index('{}'); serves it from an HNSW index \
             that every connection shares.",
            name.replace('\'', "''")
        ),
    );
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
