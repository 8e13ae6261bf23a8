//! Group commit: concurrent callers queue their items; whichever finds no commit in progress
//! becomes the *leader*, takes everything queued so far (up to a cap), commits it in one go
//! without holding the lock, hands every caller of the batch its own result and wakes them.
//! Callers that queue while a commit is running form the next batch.
//!
//! A lone caller leads its own batch of one at once: there is no timer and no waiting for
//! company, so it pays what a plain mutex would cost. No file system here: the commit is a
//! closure, which keeps this module testable with deterministic, blocking commits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

/// A queue of items committed in batches. `S` is the state the commits advance (only the
/// leader changes it, on a copy, so readers see the state as of the last finished batch).
pub(super) struct GroupCommit<S, I, R> {
    inner: Mutex<Inner<S, I, R>>,
    /// Signalled whenever a batch finishes (or is abandoned).
    finished: Condvar,
    max_batch: usize,
}

struct Inner<S, I, R> {
    state: S,
    queue: VecDeque<(u64, I)>,
    next_ticket: u64,
    /// A leader is committing a batch right now.
    committing: bool,
    /// Results of finished batches, waiting for their callers to pick them up.
    results: HashMap<u64, R>,
    /// A leader panicked in the middle of a commit: its batch's fate is unknown, so every
    /// caller from now on is refused.
    broken: bool,
}

impl<S, I, R> std::fmt::Debug for GroupCommit<S, I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, I, R> GroupCommit<S, I, R> {
    /// `max_batch` (at least 1) bounds the items one commit receives.
    pub(super) fn new(state: S, max_batch: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state,
                queue: VecDeque::new(),
                next_ticket: 0,
                committing: false,
                results: HashMap::new(),
                broken: false,
            }),
            finished: Condvar::new(),
            max_batch: max_batch.max(1),
        }
    }

    /// The state as of the last finished batch.
    pub(super) fn state(&self) -> S {
        self.lock().state.clone()
    }

    /// Queues `item` and returns its result once the batch holding it is committed.
    ///
    /// If this caller becomes a leader, it runs `commit` on the batch: the items in queue
    /// order and a copy of the state, which `commit` advances. `commit` returns exactly one
    /// result per item, in the same order. Returns `None` when a leader panicked while
    /// committing this item or before it was queued: the item's fate is unknown.
    pub(super) fn submit<F>(&self, item: I, mut commit: F) -> Option<R>
    where
        F: FnMut(&mut S, Vec<I>) -> Vec<R>,
    {
        let mut inner = self.lock();
        if inner.broken {
            return None;
        }
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        inner.queue.push_back((ticket, item));
        loop {
            if let Some(result) = inner.results.remove(&ticket) {
                return Some(result);
            }
            if inner.broken {
                return None;
            }
            if inner.committing {
                inner = self.finished.wait(inner).unwrap_or_else(|poison| {
                    let mut inner = poison.into_inner();
                    inner.broken = true;
                    inner
                });
                continue;
            }
            // Lead one batch. Our own item is in it unless more than `max_batch` items were
            // queued ahead of it; then we loop and lead (or join) the next one.
            let take = inner.queue.len().min(self.max_batch);
            let (tickets, items): (Vec<u64>, Vec<I>) = inner.queue.drain(..take).unzip();
            let mut state = inner.state.clone();
            inner.committing = true;
            drop(inner);

            let abandon = AbandonOnPanic(self);
            let results = commit(&mut state, items);
            std::mem::forget(abandon);

            inner = self.lock();
            inner.committing = false;
            if results.len() == tickets.len() {
                inner.state = state;
                inner.results.extend(tickets.into_iter().zip(results));
            } else {
                // A broken commit: nobody can tell which item got which result.
                inner.broken = true;
            }
            self.finished.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S, I, R>> {
        // The lock is never held across user code, so a poisoned mutex means a panic inside
        // this module's own bookkeeping: refuse everyone from now on.
        self.inner.lock().unwrap_or_else(|poison| {
            let mut inner = poison.into_inner();
            inner.broken = true;
            inner
        })
    }
}

/// Armed while a leader runs its commit; if the commit unwinds, marks the group broken and
/// wakes every waiter, so nobody waits forever on a batch that will never finish.
struct AbandonOnPanic<'a, S: Clone, I, R>(&'a GroupCommit<S, I, R>);

impl<S: Clone, I, R> Drop for AbandonOnPanic<'_, S, I, R> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.broken = true;
        inner.committing = false;
        drop(inner);
        self.0.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::{Arc, Barrier};
    use std::thread;

    use super::*;

    /// Counts items; each result is (the item, the batch number, the batch size).
    type Counter = GroupCommit<u64, u32, (u32, u64, usize)>;

    fn count(state: &mut u64, items: Vec<u32>) -> Vec<(u32, u64, usize)> {
        *state += 1;
        let n = items.len();
        items.into_iter().map(|i| (i, *state, n)).collect()
    }

    #[test]
    fn a_lone_caller_commits_its_own_batch_at_once() {
        let group = Counter::new(0, 8);
        assert_eq!(group.submit(7, count), Some((7, 1, 1)));
        assert_eq!(group.submit(8, count), Some((8, 2, 1)));
        assert_eq!(group.state(), 2);
    }

    /// While the first leader is blocked inside its commit, the others queue up; the next
    /// leader commits all of them as one batch.
    #[test]
    fn callers_queued_behind_a_commit_share_the_next_batch() {
        const OTHERS: u32 = 5;
        let group = Arc::new(Counter::new(0, 64));
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();

        let first = {
            let group = Arc::clone(&group);
            thread::spawn(move || {
                group.submit(0, move |state, items| {
                    entered_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    count(state, items)
                })
            })
        };
        entered.recv().unwrap();
        let queued = Arc::new(Barrier::new(OTHERS as usize + 1));
        let others: Vec<_> = (1..=OTHERS)
            .map(|i| {
                let group = Arc::clone(&group);
                let queued = Arc::clone(&queued);
                thread::spawn(move || {
                    queued.wait();
                    group.submit(i, count)
                })
            })
            .collect();
        queued.wait();
        // Every other caller is in the queue once the queue holds them all.
        while group.lock().queue.len() < OTHERS as usize {
            thread::yield_now();
        }
        release.send(()).unwrap();

        assert_eq!(first.join().unwrap(), Some((0, 1, 1)));
        for (i, other) in (1..=OTHERS).zip(others) {
            assert_eq!(other.join().unwrap(), Some((i, 2, OTHERS as usize)));
        }
        assert_eq!(group.state(), 2);
    }

    #[test]
    fn batches_are_capped_and_every_caller_gets_its_own_result() {
        const THREADS: u32 = 8;
        const EACH: u32 = 200;
        let group = Arc::new(Counter::new(0, 3));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let group = Arc::clone(&group);
                thread::spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let item = t * EACH + i;
                            let (got, _, size) = group.submit(item, count).unwrap();
                            assert_eq!(got, item);
                            assert!((1..=3).contains(&size), "{size}");
                        })
                        .count()
                })
            })
            .collect();
        let done: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(done, (THREADS * EACH) as usize);
        let batches = group.state();
        assert!(batches <= u64::from(THREADS * EACH));
        assert!(group.lock().results.is_empty());
    }

    #[test]
    fn a_panicking_commit_refuses_its_batch_and_everyone_after() {
        let group = Arc::new(Counter::new(0, 8));
        let panicked = {
            let group = Arc::clone(&group);
            thread::spawn(move || group.submit(1, |_, _| panic!("commit failed badly"))).join()
        };
        assert!(panicked.is_err());
        assert_eq!(group.submit(2, count), None);
        assert_eq!(group.state(), 0);
    }

    #[test]
    fn a_commit_with_the_wrong_number_of_results_breaks_the_group() {
        let group = Counter::new(0, 8);
        assert_eq!(group.submit(1, |_, _| Vec::new()), None);
        assert_eq!(group.submit(2, count), None);
    }
}
