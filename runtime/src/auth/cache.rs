//! The verified-token cache: a token verified once is not verified again until it expires or its key
//! changes.
//!
//! Keyed by the SHA-256 of the whole token; an entry holds the typed claims, the issuer, and the exact
//! key that verified it. A hit is honoured only while the issuer still has that same key (same `kid`,
//! same key material) and the token is unexpired, so removing or rotating a key revokes its cached
//! tokens as soon as the key set changes. Bounded: when full, expired entries are dropped, then the
//! oldest half.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::jwks::Jwk;
use super::jwt::Claims;

/// A cached verification.
#[derive(Debug, Clone)]
pub struct Entry {
    pub issuer: usize,
    pub kid: String,
    pub key: Arc<Jwk>,
    pub claims: Arc<Claims>,
    inserted: u64,
}

#[derive(Debug)]
pub struct VerifiedCache {
    map: Mutex<(HashMap<[u8; 32], Entry>, u64)>,
    capacity: usize,
}

pub fn token_hash(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new((HashMap::with_capacity(capacity.min(4096)), 0)),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<Entry> {
        self.map.lock().ok()?.0.get(hash).cloned()
    }

    pub fn remove(&self, hash: &[u8; 32]) {
        if let Ok(mut m) = self.map.lock() {
            m.0.remove(hash);
        }
    }

    pub fn insert(
        &self,
        hash: [u8; 32],
        issuer: usize,
        kid: String,
        key: Arc<Jwk>,
        claims: Arc<Claims>,
        now: i64,
    ) {
        let Ok(mut guard) = self.map.lock() else {
            return;
        };
        let (map, counter) = &mut *guard;
        if map.len() >= self.capacity {
            map.retain(|_, e| e.claims.exp >= now);
            if map.len() >= self.capacity {
                let mut ages: Vec<u64> = map.values().map(|e| e.inserted).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                map.retain(|_, e| e.inserted > cutoff);
            }
        }
        *counter += 1;
        map.insert(
            hash,
            Entry {
                issuer,
                kid,
                key,
                claims,
                inserted: *counter,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.0.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
