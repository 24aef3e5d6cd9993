//! A TTL cache over the secret store, for values read on the request path (provider keys).
//!
//! A value is served from memory for `ttl` after it was read; then the next caller fetches it again,
//! and callers arriving meanwhile wait for that one fetch (single flight) instead of each calling the
//! store. A failed fetch after the TTL is an error (the caller answers 503): a stale key is never
//! served past its TTL, and no other name's value is ever substituted. `refresh` forces a fetch (a
//! provider answered 401: the key was rotated). Values stay `SecretString` (redacted, zeroized);
//! this module must not log or format one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::{SecretError, SecretName, SecretStore};

#[derive(Debug)]
struct Slot {
    value: RwLock<Option<(SecretString, Instant)>>,
    /// Held while one caller fetches this name.
    fetch: tokio::sync::Mutex<()>,
}

/// Cached reads of one secret store.
#[derive(Debug)]
pub struct SecretCache {
    store: SecretStore,
    ttl: Duration,
    slots: RwLock<HashMap<SecretName, Arc<Slot>>>,
    fetches: std::sync::atomic::AtomicU64,
    hits: std::sync::atomic::AtomicU64,
}

impl SecretCache {
    pub fn new(store: SecretStore, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            slots: RwLock::new(HashMap::new()),
            fetches: std::sync::atomic::AtomicU64::new(0),
            hits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The store behind the cache.
    pub fn store(&self) -> &SecretStore {
        &self.store
    }

    /// How many times the store was read (tests use it to prove single flight).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads answered from memory, and reads that went to the store (for metrics).
    pub fn hits_and_fetches(&self) -> (u64, u64) {
        (
            self.hits.load(std::sync::atomic::Ordering::Relaxed),
            self.fetches(),
        )
    }

    fn slot(&self, name: &SecretName) -> Arc<Slot> {
        if let Some(slot) = self.slots.read().ok().and_then(|s| s.get(name).cloned()) {
            return slot;
        }
        let mut slots = match self.slots.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    value: RwLock::new(None),
                    fetch: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    fn fresh(&self, slot: &Slot, newer_than: Option<Instant>) -> Option<SecretString> {
        let guard = slot.value.read().ok()?;
        let (value, at) = guard.as_ref()?;
        let fresh = at.elapsed() < self.ttl && newer_than.is_none_or(|t| *at > t);
        fresh.then(|| value.clone())
    }

    /// The value of `name`: from memory within its TTL, else from the store (one fetch at a time).
    pub async fn get(&self, name: &SecretName) -> Result<SecretString, SecretError> {
        let slot = self.slot(name);
        if let Some(value) = self.fresh(&slot, None) {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(value);
        }
        self.fetch(&slot, name, None).await
    }

    /// Reads `name` from the store now (a provider refused the cached value), unless another caller
    /// already did so after `since`.
    pub async fn refresh(
        &self,
        name: &SecretName,
        since: Instant,
    ) -> Result<SecretString, SecretError> {
        let slot = self.slot(name);
        self.fetch(&slot, name, Some(since)).await
    }

    async fn fetch(
        &self,
        slot: &Slot,
        name: &SecretName,
        newer_than: Option<Instant>,
    ) -> Result<SecretString, SecretError> {
        let _one = slot.fetch.lock().await;
        // Whoever held the lock before may have fetched it for us.
        if let Some(value) = self.fresh(slot, newer_than) {
            return Ok(value);
        }
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let value = self.store.get(name).await?;
        if let Ok(mut guard) = slot.value.write() {
            *guard = Some((value.clone(), Instant::now()));
        }
        Ok(value)
    }

    /// Forgets every cached value (after `secret delete`, or in tests).
    pub fn clear(&self) {
        if let Ok(mut slots) = self.slots.write() {
            slots.clear();
        }
    }
}
