//! One-way p2p blacklists (单聊黑名单), cached for the send path: when A has
//! blacklisted B, B's p2p messages (from a socket or the push API) never reach A's
//! devices, backlog, history or contacts, and B is not told.
//!
//! The send path asks [`Blacklists::blocks`] for every p2p message: a user's list is
//! read from the store once and kept (`blacklist_cache` users, the longest-loaded
//! evicted first), so a message costs a shared-lock map lookup and no store read. A
//! change writes the store first and then updates the cached list; a list read from
//! the store while a change was being made is not cached, so the cache never keeps a
//! list older than the store's.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::RwLock;

use crate::store::{Store, StoreResult};

/// The cached blacklists of recently active users.
pub struct Blacklists {
    store: Arc<dyn Store>,
    /// Read on every p2p send (a shared lock, no reordering: eviction is by age of
    /// loading); written when a list is loaded or changed.
    lists: RwLock<LruCache<u64, Arc<HashSet<u64>>>>,
    /// Counts changes (under the write lock), so a list read from the store while
    /// a change was made is not cached.
    changes: AtomicU64,
}

impl Blacklists {
    /// A cache of at most `capacity` users' lists.
    pub fn new(store: Arc<dyn Store>, capacity: usize) -> Self {
        Blacklists {
            store,
            lists: RwLock::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            changes: AtomicU64::new(0),
        }
    }

    /// `owner`'s blacklist.
    pub async fn list(&self, owner: u64) -> StoreResult<Arc<HashSet<u64>>> {
        if let Some(list) = self.lists.read().peek(&owner) {
            return Ok(list.clone());
        }
        let before = self.changes.load(Ordering::Acquire);
        let list: Arc<HashSet<u64>> =
            Arc::new(self.store.blacklist_of(owner).await?.into_iter().collect());
        // Checked under the write lock that changes count under: no change can slip
        // in between the check and the insert.
        let mut lists = self.lists.write();
        if self.changes.load(Ordering::Acquire) == before {
            lists.put(owner, list.clone());
        }
        Ok(list)
    }

    /// Whether `owner` has blacklisted `sender`.
    pub async fn blocks(&self, owner: u64, sender: u64) -> StoreResult<bool> {
        Ok(self.list(owner).await?.contains(&sender))
    }

    /// Puts `black` on `owner`'s list.
    pub async fn add(&self, owner: u64, black: u64) -> StoreResult<()> {
        self.store.blacklist_add(owner, black).await?;
        self.update(owner, |list| {
            list.insert(black);
        });
        Ok(())
    }

    /// Takes `black` off `owner`'s list.
    pub async fn remove(&self, owner: u64, black: u64) -> StoreResult<()> {
        self.store.blacklist_remove(owner, black).await?;
        self.update(owner, |list| {
            list.remove(&black);
        });
        Ok(())
    }

    /// Drops `owner`'s cached list (another node changed it in the store): the next
    /// send reads it again. A read under way is not cached either.
    pub fn forget(&self, owner: u64) {
        let mut lists = self.lists.write();
        self.changes.fetch_add(1, Ordering::AcqRel);
        lists.pop(&owner);
    }

    /// Applies a change, already in the store, to the cached list if cached (copy on
    /// write: readers hold the old list until they drop it). A list being read from
    /// the store meanwhile is either cached before this (and changed here) or sees
    /// the count move and is not cached.
    fn update(&self, owner: u64, change: impl FnOnce(&mut HashSet<u64>)) {
        let mut lists = self.lists.write();
        self.changes.fetch_add(1, Ordering::AcqRel);
        if let Some(list) = lists.get_mut(&owner) {
            change(Arc::make_mut(list));
        }
    }
}

impl std::fmt::Debug for Blacklists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blacklists")
            .field("cached", &self.lists.read().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn changes_reach_the_cache_and_the_store() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let lists = Blacklists::new(store.clone(), 2);
        assert!(!lists.blocks(1, 2).await.unwrap());
        lists.add(1, 2).await.unwrap();
        assert!(lists.blocks(1, 2).await.unwrap(), "cached list updated");
        assert_eq!(store.blacklist_of(1).await.unwrap(), vec![2]);
        // Evicted by two other users, then read back from the store.
        lists.list(3).await.unwrap();
        lists.list(4).await.unwrap();
        assert!(lists.blocks(1, 2).await.unwrap());
        lists.remove(1, 2).await.unwrap();
        assert!(!lists.blocks(1, 2).await.unwrap());
        assert!(!lists.blocks(2, 1).await.unwrap(), "one-way");
    }
}
