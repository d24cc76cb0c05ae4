//! An endpoint's in-memory window of waiting deliveries: what its actor sends next.
//!
//! Invariants:
//! - The window holds at most `window` deliveries that arrived from ingest; more stay on
//!   disk (they are durable before the actor hears of them) and `overflow` says so, until a
//!   refill from storage ([`crate::storage::Ledger::due_window`]) takes them in. Retries of deliveries
//!   the actor already held are always kept, so the window may exceed `window` by what was
//!   in flight.
//! - A delivery is in the window at most once.
//! - Unordered: the next delivery is the one due first. Ordered: the oldest event first,
//!   whatever its due time, so a failing head blocks the ones behind it.

use super::Prepared;
use crate::model::{DeliveryRef, Millis};
use crate::storage::{QueueEntry, Queued};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// One waiting delivery.
#[derive(Debug, Clone)]
pub struct Item {
    pub delivery: DeliveryRef,
    pub due: Millis,
    pub entry: QueueEntry,
    /// The event, when the actor heard of it from ingest; else read from the log on send.
    pub event: Option<Arc<Prepared>>,
}

impl Item {
    pub fn from_log(q: &Queued) -> Self {
        Item { delivery: q.delivery, due: q.due, entry: q.entry, event: None }
    }

    /// Whether its TTL (counted from its latest queueing) is over at `now`.
    pub fn expired(&self, now: Millis, ttl: Duration) -> bool {
        now >= self.entry.queued_at.saturating_add(ttl.as_millis() as u64)
    }
}

#[derive(Debug, Default)]
pub struct Queue {
    ordered: bool,
    window: usize,
    items: BTreeMap<(Millis, DeliveryRef), Item>,
    keys: HashMap<DeliveryRef, Millis>,
    /// More deliveries wait on disk than the window holds.
    overflow: bool,
}

impl Queue {
    pub fn new(ordered: bool, window: usize) -> Self {
        Queue { ordered, window: window.max(1), ..Default::default() }
    }

    fn sort_key(&self, item: &Item) -> Millis {
        if self.ordered {
            0
        } else {
            item.due
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn contains(&self, d: DeliveryRef) -> bool {
        self.keys.contains_key(&d)
    }

    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Keeps `item` (a retry, a re-queue); false if it was already here.
    pub fn push(&mut self, item: Item) -> bool {
        if self.keys.contains_key(&item.delivery) {
            return false;
        }
        let key = self.sort_key(&item);
        self.keys.insert(item.delivery, key);
        self.items.insert((key, item.delivery), item);
        true
    }

    /// Removes and returns delivery `d`'s item, if held.
    pub fn take(&mut self, d: DeliveryRef) -> Option<Item> {
        let key = self.keys.remove(&d)?;
        self.items.remove(&(key, d))
    }

    /// Takes in a new delivery if the window has room; else leaves it on disk for a refill.
    pub fn admit(&mut self, item: Item) {
        if self.items.len() >= self.window {
            self.overflow = true;
        } else {
            self.push(item);
        }
    }

    /// Notes that more deliveries may wait on disk than the window holds.
    pub fn admit_overflow(&mut self) {
        self.overflow = true;
    }

    /// The delivery that goes next, if it is due by `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<Item> {
        let (&key, head) = self.items.first_key_value()?;
        if head.due > now {
            return None;
        }
        self.keys.remove(&key.1);
        self.items.remove(&key)
    }

    /// The waiting deliveries in the order they go out (due order, or event order).
    pub fn upcoming(&self) -> impl Iterator<Item = &Item> + '_ {
        self.items.values()
    }

    /// When the delivery that goes next is due.
    pub fn next_due(&self) -> Option<Millis> {
        self.items.first_key_value().map(|(_, i)| i.due)
    }

    /// Takes out every delivery whose TTL is over.
    pub fn take_expired(&mut self, now: Millis, ttl: Duration) -> Vec<Item> {
        let gone: Vec<(Millis, DeliveryRef)> =
            self.items.iter().filter(|(_, i)| i.expired(now, ttl)).map(|(k, _)| *k).collect();
        gone.into_iter()
            .filter_map(|k| {
                self.keys.remove(&k.1);
                self.items.remove(&k)
            })
            .collect()
    }

    /// Forgets everything (the webhook was disabled: the log killed its deliveries).
    pub fn clear(&mut self) {
        self.items.clear();
        self.keys.clear();
        self.overflow = false;
    }

    /// Switches between due order and event order.
    pub fn set_ordered(&mut self, ordered: bool) {
        if ordered == self.ordered {
            return;
        }
        self.ordered = ordered;
        let items: Vec<Item> = std::mem::take(&mut self.items).into_values().collect();
        self.keys.clear();
        for item in items {
            self.push(item);
        }
    }

    /// Whether the window ran low while more waits on disk.
    pub fn wants_refill(&self) -> bool {
        self.overflow && self.items.len() <= self.window / 2
    }

    /// How many to read from the log for a refill.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Takes in what a read of the log found (`found` holds at most `window` entries, in
    /// due order); `known` says which deliveries the actor already holds elsewhere (in
    /// flight, being recorded).
    pub fn refill(&mut self, found: &[Queued], known: impl Fn(DeliveryRef) -> bool) {
        self.overflow = found.len() >= self.window;
        for q in found {
            if !known(q.delivery) && !self.contains(q.delivery) {
                if self.items.len() >= self.window {
                    self.overflow = true;
                    break;
                }
                self.push(Item::from_log(q));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, due: Millis) -> Item {
        Item {
            delivery: DeliveryRef { seq, index: 0 },
            due,
            entry: QueueEntry { attempts: 0, base_attempts: 0, queued_at: due },
            event: None,
        }
    }

    #[test]
    fn unordered_goes_by_due_time_and_ordered_by_event() {
        let mut q = Queue::new(false, 10);
        q.push(item(1, 500));
        q.push(item(2, 100));
        assert!(!q.push(item(2, 100)), "once only");
        assert_eq!(q.pop_due(50).map(|i| i.delivery.seq), None);
        assert_eq!(q.pop_due(100).map(|i| i.delivery.seq), Some(2));
        q.push(item(2, 100));
        q.set_ordered(true);
        // The oldest event blocks although a later one is due.
        assert_eq!(q.pop_due(100).map(|i| i.delivery.seq), None);
        assert_eq!(q.next_due(), Some(500));
        assert_eq!(q.pop_due(500).map(|i| i.delivery.seq), Some(1));
        assert_eq!(q.pop_due(500).map(|i| i.delivery.seq), Some(2));
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_window_leaves_arrivals_on_disk_until_a_refill() {
        let mut q = Queue::new(false, 4);
        for s in 1..=6 {
            q.admit(item(s, s));
        }
        assert_eq!(q.len(), 4);
        assert!(q.overflowed() && !q.wants_refill());
        q.pop_due(100);
        assert!(!q.wants_refill());
        q.pop_due(100);
        assert!(q.wants_refill(), "half empty");
        q.pop_due(100);
        // The log holds 3..=6; 3 is in flight, 4 still here.
        let found: Vec<Queued> = (3..=6)
            .map(|s| Queued {
                delivery: DeliveryRef { seq: s, index: 0 },
                due: s,
                entry: QueueEntry { attempts: 0, base_attempts: 0, queued_at: s },
            })
            .collect();
        q.refill(&found, |d| d.seq == 3);
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_due(100)).map(|i| i.delivery.seq).collect();
        assert_eq!(order, vec![4, 5, 6]);
        assert!(q.overflowed(), "a full read may have left more behind");
    }

    #[test]
    fn expired_deliveries_are_taken_out() {
        let mut q = Queue::new(false, 10);
        q.push(item(1, 0));
        q.push(item(2, 1_000));
        let gone = q.take_expired(1_500, Duration::from_millis(1_000));
        assert_eq!(gone.iter().map(|i| i.delivery.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(q.len(), 1);
        assert!(!q.contains(DeliveryRef { seq: 1, index: 0 }));
    }
}
