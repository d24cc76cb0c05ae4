//! Events lately read back from the log to be delivered, shared by every actor.
//!
//! A backlog fanned out to many webhooks has each event read by each of their actors; with
//! this cache the first one reads and decodes it (and builds its body, once, in
//! [`Prepared`]) and the others take the same `Arc`. Events from ingest never come here:
//! the dispatcher hands them to their actors already shared.
//!
//! Invariants: bounded by an estimate of the bytes it holds ([`RecentEvents::new`]), the
//! oldest insertion evicted first; a hit is the very record stored under that sequence
//! number (records are never rewritten, so nothing here goes stale).

use super::Prepared;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub struct RecentEvents {
    by_seq: HashMap<u64, Arc<Prepared>>,
    /// Insertion order, for eviction.
    order: VecDeque<u64>,
    bytes: usize,
    limit: usize,
}

/// What one event is reckoned to hold: its data, the body built from it, and the rest.
fn weight(p: &Prepared) -> usize {
    2 * p.event.data.len() + p.event.event.len() + 512
}

impl RecentEvents {
    /// A cache holding about `limit` bytes at most.
    pub fn new(limit: usize) -> Self {
        RecentEvents { by_seq: HashMap::new(), order: VecDeque::new(), bytes: 0, limit }
    }

    pub fn get(&self, seq: u64) -> Option<Arc<Prepared>> {
        self.by_seq.get(&seq).cloned()
    }

    pub fn insert(&mut self, p: Arc<Prepared>) {
        let w = weight(&p);
        if w > self.limit {
            return;
        }
        let seq = p.seq;
        match self.by_seq.insert(seq, p) {
            Some(old) => self.bytes -= weight(&old),
            None => self.order.push_back(seq),
        }
        self.bytes += w;
        while self.bytes > self.limit {
            let Some(seq) = self.order.pop_front() else { break };
            if let Some(gone) = self.by_seq.remove(&seq) {
                self.bytes -= weight(&gone);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;
    use crate::storage::EventIngested;

    fn event(seq: u64, data_len: usize) -> Arc<Prepared> {
        let e = EventIngested::unkeyed(AccountId::default_account(), "a.b".into(), vec![b'x'; data_len], vec![], 1);
        Arc::new(Prepared::new(seq, Arc::new(e)))
    }

    #[test]
    fn keeps_the_newest_within_its_bound() {
        // Each event weighs 2 * 244 + 3 + 512 = 1,003 bytes: three fit in 3,100.
        let mut cache = RecentEvents::new(3_100);
        for seq in 1..=5 {
            cache.insert(event(seq, 244));
        }
        let held: Vec<u64> = (1..=5).filter(|s| cache.get(*s).is_some()).collect();
        assert_eq!(held, vec![3, 4, 5]);
        assert!(cache.bytes <= 3_100);
        // Inserting a held event again does not count it twice.
        cache.insert(event(5, 244));
        assert_eq!((1..=5).filter(|s| cache.get(*s).is_some()).count(), 3);
        // An event larger than the whole cache is not kept (and evicts nothing).
        cache.insert(event(6, 10_000));
        assert!(cache.get(6).is_none() && cache.get(3).is_some());
    }
}
