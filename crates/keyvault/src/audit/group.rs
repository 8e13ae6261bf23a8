//! Group commit: callers queue items and get a `Ticket` at once; one committer (a thread of
//! its own, running `GroupCommit::run`) takes everything queued so far (up to a cap), commits
//! it in one go without holding the lock, and resolves every ticket of the batch with the
//! result for its own item. Items queued while a commit runs form the next batch.
//!
//! A ticket can be waited for by blocking (`Ticket::wait`) or awaited as a future, so a caller
//! on an async runtime needs no thread while its item waits for its batch.
//!
//! A lone item never waits for company: unless the last two batches each held several items,
//! the committer starts the next batch as soon as it finds the queue non-empty. Two batches
//! of several in a row show a steady concurrent load; then it waits until as many items are
//! queued as the last batch held (callers that each wait for their item before queuing the
//! next are all back), or until `gather` has passed since that batch started, whichever comes
//! first. Under a steady load, each commit so covers the items of up to `gather` instead of
//! commits coming back to back, each for the one or two items that arrived during the last.
//! No file system here: the commit is a closure, which keeps this module testable with
//! deterministic, blocking commits.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A queue of items committed in batches. `S` is the state the commits advance (only the
/// committer changes it, on a copy, so readers see the state as of the last finished batch).
pub(super) struct GroupCommit<S, I, R> {
    inner: Mutex<Inner<S, I, R>>,
    /// Signalled when an item is queued (while gathering: when `Inner::gathering` are) or the
    /// group is closed.
    queued: Condvar,
    max_batch: usize,
    /// Under a steady concurrent load, the longest time from the start of a batch to the start
    /// of the next.
    gather: Duration,
}

struct Inner<S, I, R> {
    state: S,
    queue: VecDeque<(I, Arc<Slot<R>>)>,
    /// No more items are accepted; the committer returns once the queue is empty.
    closed: bool,
    /// The committer is letting items gather for the next batch until this many are queued.
    gathering: Option<usize>,
    /// A commit panicked or returned the wrong number of results: the fate of its batch is
    /// unknown, so every item from now on is refused.
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
    /// `max_batch` (at least 1) bounds the items one commit receives; `gather` bounds the
    /// wait for company under a steady concurrent load.
    pub(super) fn new(state: S, max_batch: usize, gather: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state,
                queue: VecDeque::new(),
                closed: false,
                gathering: None,
                broken: false,
            }),
            queued: Condvar::new(),
            max_batch: max_batch.max(1),
            gather,
        }
    }

    /// The state as of the last finished batch.
    pub(super) fn state(&self) -> S {
        self.lock().state.clone()
    }

    /// Queues `item` for the next batch. The ticket resolves to the item's result once its
    /// batch is committed, or to `None` when its fate is unknown (a commit panicked or broke
    /// its contract) or it was never queued (the group was broken or closed already).
    pub(super) fn submit(&self, item: I) -> Ticket<R> {
        let slot = Arc::new(Slot::default());
        let mut inner = self.lock();
        if inner.broken || inner.closed {
            drop(inner);
            slot.resolve(None);
        } else {
            inner.queue.push_back((item, Arc::clone(&slot)));
            let wake = inner
                .gathering
                .is_none_or(|enough| inner.queue.len() >= enough);
            drop(inner);
            if wake {
                self.queued.notify_one();
            }
        }
        Ticket { slot }
    }

    /// Refuses new items; `run` commits what is queued and then returns.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.queued.notify_all();
    }

    /// The committer: until the group is closed and its queue drained, takes the queued items
    /// (at most `max_batch`, in queue order), runs `commit` on them and a copy of the state,
    /// which `commit` advances, and resolves their tickets. `commit` returns exactly one result
    /// per item, in the same order; otherwise the group breaks. If `commit` panics, the group
    /// breaks, every queued ticket resolves to `None`, and the panic goes on unwinding.
    pub(super) fn run<F>(&self, mut commit: F)
    where
        F: FnMut(&mut S, Vec<I>) -> Vec<R>,
    {
        // Under a steady load: until when, and for how many items, to wait.
        let mut company: Option<(Instant, usize)> = None;
        let mut last_take = 0;
        loop {
            let mut inner = self.lock();
            while inner.queue.is_empty() && !inner.closed && !inner.broken {
                inner = self.queued.wait(inner).unwrap_or_else(broken);
            }
            if let Some((until, enough)) = company {
                inner.gathering = Some(enough);
                while inner.queue.len() < enough && !inner.closed && !inner.broken {
                    let Some(left) = until.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    inner = match self.queued.wait_timeout(inner, left) {
                        Ok((inner, _)) => inner,
                        Err(poison) => broken(PoisonError::new(poison.into_inner().0)),
                    };
                }
                inner.gathering = None;
            }
            if inner.broken {
                drop(inner);
                self.break_all(&[]);
                return;
            }
            if inner.queue.is_empty() {
                // Closed and drained.
                return;
            }
            let take = inner.queue.len().min(self.max_batch);
            let (items, slots): (Vec<I>, Vec<Arc<Slot<R>>>) = inner.queue.drain(..take).unzip();
            let mut state = inner.state.clone();
            drop(inner);
            company = (take > 1 && last_take > 1).then(|| (Instant::now() + self.gather, take));
            last_take = take;

            let abandon = AbandonOnPanic {
                group: self,
                batch: &slots,
            };
            let results = commit(&mut state, items);
            std::mem::forget(abandon);

            if results.len() != slots.len() {
                // A broken commit: nobody can tell which item got which result.
                self.break_all(&slots);
                return;
            }
            self.lock().state = state;
            for (slot, result) in slots.iter().zip(results) {
                slot.resolve(Some(result));
            }
        }
    }

    /// Marks the group broken and resolves `batch` and everything queued to `None`.
    fn break_all(&self, batch: &[Arc<Slot<R>>]) {
        let queued: Vec<_> = {
            let mut inner = self.lock();
            inner.broken = true;
            inner.queue.drain(..).map(|(_, slot)| slot).collect()
        };
        for slot in batch.iter().chain(&queued) {
            slot.resolve(None);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S, I, R>> {
        self.inner.lock().unwrap_or_else(broken)
    }
}

/// The lock is never held across user code, so a poisoned mutex means a panic inside this
/// module's own bookkeeping: refuse everyone from now on.
fn broken<S, I, R>(
    poison: PoisonError<MutexGuard<'_, Inner<S, I, R>>>,
) -> MutexGuard<'_, Inner<S, I, R>> {
    let mut inner = poison.into_inner();
    inner.broken = true;
    inner
}

/// Armed while the committer runs a commit; if the commit unwinds, breaks the group and
/// resolves every ticket, so nobody waits forever on a batch that will never finish.
struct AbandonOnPanic<'a, S: Clone, I, R> {
    group: &'a GroupCommit<S, I, R>,
    batch: &'a [Arc<Slot<R>>],
}

impl<S: Clone, I, R> Drop for AbandonOnPanic<'_, S, I, R> {
    fn drop(&mut self) {
        self.group.break_all(self.batch);
    }
}

/// Where the committer leaves one item's result for its caller.
struct Slot<R> {
    outcome: Mutex<Outcome<R>>,
    resolved: Condvar,
}

enum Outcome<R> {
    /// Not committed yet; the waker of the task awaiting it, if any.
    Pending(Option<Waker>),
    /// `None`: the item's fate is unknown.
    Ready(Option<R>),
    /// The caller took the result.
    Taken,
}

impl<R> Default for Slot<R> {
    fn default() -> Self {
        Self {
            outcome: Mutex::new(Outcome::Pending(None)),
            resolved: Condvar::new(),
        }
    }
}

impl<R> Slot<R> {
    fn lock(&self) -> MutexGuard<'_, Outcome<R>> {
        // Every critical section only moves values in or out: a poisoned lock still holds a
        // consistent outcome.
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the result (the first one wins) and wakes the caller.
    fn resolve(&self, result: Option<R>) {
        let waker = {
            let mut outcome = self.lock();
            match std::mem::replace(&mut *outcome, Outcome::Ready(result)) {
                Outcome::Pending(waker) => waker,
                done => {
                    *outcome = done;
                    return;
                }
            }
        };
        self.resolved.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes the result if it is there.
    fn take(outcome: &mut Outcome<R>) -> Option<Option<R>> {
        match std::mem::replace(outcome, Outcome::Taken) {
            Outcome::Ready(result) => Some(result),
            Outcome::Taken => Some(None),
            pending => {
                *outcome = pending;
                None
            }
        }
    }
}

/// One queued item's claim on its result: `wait` for it, or `.await` it.
pub(super) struct Ticket<R> {
    slot: Arc<Slot<R>>,
}

impl<R> Ticket<R> {
    /// Blocks until the item's batch is committed. `None`: the item's fate is unknown.
    pub(super) fn wait(self) -> Option<R> {
        let mut outcome = self.slot.lock();
        loop {
            if let Some(result) = Slot::take(&mut outcome) {
                return result;
            }
            outcome = self
                .slot
                .resolved
                .wait(outcome)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<R> Future for Ticket<R> {
    type Output = Option<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<R>> {
        let mut outcome = self.slot.lock();
        if let Some(result) = Slot::take(&mut outcome) {
            return Poll::Ready(result);
        }
        match &mut *outcome {
            Outcome::Pending(Some(waker)) if waker.will_wake(cx.waker()) => {}
            other => *other = Outcome::Pending(Some(cx.waker().clone())),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::{Arc, Barrier};
    use std::task::Wake;
    use std::thread;

    use super::*;

    /// Counts items; each result is (the item, the batch number, the batch size).
    type Counter = GroupCommit<u64, u32, (u32, u64, usize)>;

    fn count(state: &mut u64, items: Vec<u32>) -> Vec<(u32, u64, usize)> {
        *state += 1;
        let n = items.len();
        items.into_iter().map(|i| (i, *state, n)).collect()
    }

    /// Runs `group`'s committer with `commit` on a thread of its own.
    fn committer<F>(group: &Arc<Counter>, commit: F) -> thread::JoinHandle<()>
    where
        F: FnMut(&mut u64, Vec<u32>) -> Vec<(u32, u64, usize)> + Send + 'static,
    {
        let group = Arc::clone(group);
        thread::spawn(move || group.run(commit))
    }

    #[test]
    fn a_lone_item_is_committed_as_a_batch_of_one() {
        let group = Arc::new(Counter::new(0, 8, Duration::ZERO));
        let committer = committer(&group, count);
        assert_eq!(group.submit(7).wait(), Some((7, 1, 1)));
        assert_eq!(group.submit(8).wait(), Some((8, 2, 1)));
        assert_eq!(group.state(), 2);
        group.close();
        committer.join().unwrap();
    }

    /// While the committer is blocked inside a commit, the others queue up; the next batch
    /// holds all of them.
    #[test]
    fn items_queued_behind_a_commit_share_the_next_batch() {
        const OTHERS: u32 = 5;
        let group = Arc::new(Counter::new(0, 64, Duration::ZERO));
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let committer = committer(&group, move |state, items| {
            if *state == 0 {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            }
            count(state, items)
        });
        let first = group.submit(0);
        entered.recv().unwrap();
        let others: Vec<_> = (1..=OTHERS).map(|i| group.submit(i)).collect();
        release.send(()).unwrap();

        assert_eq!(first.wait(), Some((0, 1, 1)));
        for (i, other) in (1..=OTHERS).zip(others) {
            assert_eq!(other.wait(), Some((i, 2, OTHERS as usize)));
        }
        assert_eq!(group.state(), 2);
        group.close();
        committer.join().unwrap();
    }

    #[test]
    fn batches_are_capped_and_every_caller_gets_its_own_result() {
        const THREADS: u32 = 8;
        const EACH: u32 = 200;
        let group = Arc::new(Counter::new(0, 3, Duration::ZERO));
        let committer = committer(&group, count);
        let start = Arc::new(Barrier::new(THREADS as usize));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let group = Arc::clone(&group);
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    (0..EACH)
                        .map(|i| {
                            let item = t * EACH + i;
                            let (got, _, size) = group.submit(item).wait().unwrap();
                            assert_eq!(got, item);
                            assert!((1..=3).contains(&size), "{size}");
                        })
                        .count()
                })
            })
            .collect();
        let done: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(done, (THREADS * EACH) as usize);
        assert!(group.state() <= u64::from(THREADS * EACH));
        group.close();
        committer.join().unwrap();
    }

    #[test]
    fn closing_commits_what_is_queued_then_refuses() {
        let group = Arc::new(Counter::new(0, 8, Duration::ZERO));
        let queued: Vec<_> = (0..3).map(|i| group.submit(i)).collect();
        group.close();
        // The committer starts after the close and still commits the queue.
        committer(&group, count).join().unwrap();
        for (i, ticket) in (0..3).zip(queued) {
            assert_eq!(ticket.wait(), Some((i, 1, 3)));
        }
        assert_eq!(group.submit(9).wait(), None);
    }

    #[test]
    fn a_panicking_commit_refuses_its_batch_and_everyone_after() {
        let group = Arc::new(Counter::new(0, 8, Duration::ZERO));
        let ticket = group.submit(1);
        let panicked = committer(&group, |_, _| panic!("commit failed badly")).join();
        assert!(panicked.is_err());
        assert_eq!(ticket.wait(), None);
        assert_eq!(group.submit(2).wait(), None);
        assert_eq!(group.state(), 0);
    }

    #[test]
    fn a_commit_with_the_wrong_number_of_results_breaks_the_group() {
        let group = Arc::new(Counter::new(0, 8, Duration::ZERO));
        let ticket = group.submit(1);
        committer(&group, |_, _| Vec::new()).join().unwrap();
        assert_eq!(ticket.wait(), None);
        assert_eq!(group.submit(2).wait(), None);
    }

    /// After two batches of several, the next batch waits for company: until as many items
    /// are queued as the last batch held, `gather` has passed, or the group closes.
    #[test]
    fn under_load_the_next_batch_gathers_company() {
        const HOUR: Duration = Duration::from_secs(3600);
        let group = Arc::new(Counter::new(0, 8, HOUR));
        // Each commit says it started and waits for a release, so the test decides what each
        // batch holds.
        let (started_tx, started) = mpsc::channel::<()>();
        let (release, released) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel::<u64>();
        let first: Vec<_> = (0..2).map(|i| group.submit(i)).collect();
        let committer = committer(&group, move |state, items| {
            started_tx.send(()).unwrap();
            released.recv().unwrap();
            let results = count(state, items);
            done_tx.send(*state).unwrap();
            results
        });
        // The first batch is being committed while two more items queue.
        started.recv().unwrap();
        let second: Vec<_> = (10..12).map(|i| group.submit(i)).collect();
        release.send(()).unwrap();
        assert_eq!(done.recv().unwrap(), 1);
        // One batch of several is no steady load: the second batch starts at once.
        release.send(()).unwrap();
        assert_eq!(done.recv().unwrap(), 2);
        for (i, ticket) in (0..2).zip(first) {
            assert_eq!(ticket.wait(), Some((i, 1, 2)));
        }
        for (i, ticket) in (10..12).zip(second) {
            assert_eq!(ticket.wait(), Some((i, 2, 2)));
        }
        // Two in a row are: a lone item waits for a second one...
        release.send(()).unwrap();
        let mut lone = group.submit(20);
        thread::sleep(Duration::from_millis(50));
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut lone).poll(&mut cx).is_pending());
        // ...until the group closes.
        group.close();
        committer.join().unwrap();
        assert_eq!(lone.wait(), Some((20, 3, 1)));
    }

    #[test]
    fn after_a_batch_of_one_the_next_item_does_not_wait() {
        let group = Arc::new(Counter::new(0, 8, Duration::from_secs(3600)));
        let committer = committer(&group, count);
        assert_eq!(group.submit(1).wait(), Some((1, 1, 1)));
        assert_eq!(group.submit(2).wait(), Some((2, 2, 1)));
        group.close();
        committer.join().unwrap();
    }

    /// Counts wake-ups.
    #[derive(Default)]
    struct Wakes(Mutex<u32>);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() += 1;
        }
    }

    #[test]
    fn an_awaited_ticket_is_woken_when_its_batch_is_committed() {
        let group = Arc::new(Counter::new(0, 8, Duration::ZERO));
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut ticket = group.submit(5);
        assert!(Pin::new(&mut ticket).poll(&mut cx).is_pending());
        assert_eq!(*wakes.0.lock().unwrap(), 0);
        group.close();
        committer(&group, count).join().unwrap();
        assert_eq!(*wakes.0.lock().unwrap(), 1);
        assert_eq!(
            Pin::new(&mut ticket).poll(&mut cx),
            Poll::Ready(Some((5, 1, 1)))
        );
    }
}
