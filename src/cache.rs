//! A small in-process cache whose entries expire: what this process checked against the
//! database a moment ago, trusted for a few seconds.
//!
//! Entries live in a bounded `quick_cache` (which evicts the least useful when full); each
//! keeps the time it was stored, and a read older than the cache's time to live is a miss.

use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries a cache holds by default; past it, the least useful are evicted.
const CAPACITY: usize = 10_000;

pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: quick_cache::sync::Cache<K, (V, Instant)>,
    /// Counts the calls to [`TtlCache::forget`], and is held while one runs: a value read
    /// before a forget is not stored after it ([`TtlCache::insert_read_since`]).
    forgotten: Mutex<u64>,
}

/// When a value about to be read from the database started being read: see
/// [`TtlCache::read_starts`].
#[derive(Debug, Clone, Copy)]
pub struct ReadStart(u64);

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// A cache whose entries live `ttl`; a zero `ttl` keeps nothing.
    pub fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, CAPACITY)
    }

    /// A cache of at most `capacity` entries living `ttl` each.
    pub fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            entries: quick_cache::sync::Cache::new(capacity),
            forgotten: Mutex::new(0),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The value stored under `key` less than `ttl` ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let (value, stored_at) = self.entries.get(key)?;
        (stored_at.elapsed() < self.ttl).then_some(value)
    }

    pub fn insert(&self, key: K, value: V) {
        if self.is_enabled() {
            self.entries.insert(key, (value, Instant::now()));
        }
    }

    /// Marks the start of a read whose value may be stored with
    /// [`TtlCache::insert_read_since`]: take it before reading.
    pub fn read_starts(&self) -> ReadStart {
        ReadStart(*self.forgotten())
    }

    /// Stores a value read since `start`, unless entries were forgotten meanwhile: the value
    /// may predate the change that made them forgotten, and would outlive it.
    pub fn insert_read_since(&self, start: ReadStart, key: K, value: V) {
        let forgotten = self.forgotten();
        if *forgotten == start.0 {
            self.insert(key, value);
        }
    }

    /// Drops the entries `drop` picks.
    pub fn forget(&self, drop: impl Fn(&K, &V) -> bool) {
        let mut forgotten = self.forgotten();
        *forgotten += 1;
        self.entries.retain(|key, (value, _)| !drop(key, value));
    }

    fn forgotten(&self) -> std::sync::MutexGuard<'_, u64> {
        self.forgotten
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_dropped() {
        let cache = TtlCache::new(Duration::from_millis(50));
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.forget(|key, _| *key == "a");
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.get(&"b"), Some(2));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"b"), None);

        let off = TtlCache::new(Duration::ZERO);
        off.insert("a", 1);
        assert_eq!(off.get(&"a"), None);
    }

    #[test]
    fn a_value_read_before_a_forget_is_not_stored_after_it() {
        let cache = TtlCache::new(Duration::from_secs(60));
        // Read, then the change and its forget, then the store: the stale value is dropped.
        let start = cache.read_starts();
        cache.forget(|key, _| *key == "a");
        cache.insert_read_since(start, "a", "before the change");
        assert_eq!(cache.get(&"a"), None);
        // Read after the forget: stored.
        let start = cache.read_starts();
        cache.insert_read_since(start, "a", "after the change");
        assert_eq!(cache.get(&"a"), Some("after the change"));
    }

    #[test]
    fn a_full_cache_evicts_instead_of_growing() {
        let cache = TtlCache::with_capacity(Duration::from_secs(60), 100);
        for n in 0..1000 {
            cache.insert(n, n);
        }
        assert!(cache.entries.len() <= 100, "{}", cache.entries.len());
    }
}
