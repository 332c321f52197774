//! Stream workers, events and deferred errors: the machinery behind
//! [`crate::async_eval`], [`synchronize`] and cross-stream dependencies.
//!
//! * Every stream gets a worker thread, started the first time work is queued
//!   on it, that runs jobs (lists of nodes in topological order) from a FIFO.
//! * A node scheduled by an eval is *claimed*: its state holds a ticket, the
//!   [`Event`] of the executor (a stream worker, or the thread running a
//!   synchronous eval) that will compute it. Anyone needing the node — a
//!   consumer on another stream, or a later eval — waits on that event, which
//!   its executor signals after each node (no busy waiting).
//! * Scheduling and queueing happen under one global lock, so jobs are queued
//!   in a single total order and a node only ever waits for work queued before
//!   it: two streams depending on each other's earlier work cannot deadlock.
//! * A kernel error (or panic) on a worker during [`crate::async_eval`] is stored
//!   on the failed node (and the nodes depending on it) and in the stream's
//!   error slot. It is returned by the next eval of an array that depends on it,
//!   by the next eval or [`synchronize`] touching the stream, and is never lost;
//!   waiters are always woken.

use crate::array::Array;
use crate::device::Stream;
use crate::error::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// Why a node is not evaluated although an eval has reached it.
pub(crate) enum Pending {
    /// Claimed by an executor, which signals this event when it is done with it.
    Ticket(Arc<Event>),
    /// Its computation failed on a stream worker during an asynchronous eval.
    Failed(Arc<Failure>),
}

/// An error raised on a stream worker, kept until someone receives it.
pub(crate) struct Failure {
    /// Identifies this failure in its stream's error slot.
    pub(crate) id: u64,
    /// The error.
    pub(crate) error: Error,
    /// The stream whose worker raised it.
    pub(crate) stream: Stream,
}

static NEXT_FAILURE: AtomicU64 = AtomicU64::new(1);

impl Failure {
    pub(crate) fn new(error: Error, stream: Stream) -> Arc<Failure> {
        Arc::new(Failure { id: NEXT_FAILURE.fetch_add(1, Ordering::Relaxed), error, stream })
    }
}

/// Completion signal of an executor: waiters block on the condvar until the
/// node they need is no longer claimed by this event.
pub(crate) struct Event {
    /// The thread of a synchronous eval computing the claimed nodes itself.
    pub(crate) owner: Option<std::thread::ThreadId>,
    waiters: AtomicUsize,
    /// The nodes the blocked waiters wait for: a signal wakes them only when
    /// one of these has left this event's claim, so a thread waiting for the
    /// last node of a long job sleeps through the job instead of waking for
    /// every node.
    lock: Mutex<Vec<Array>>,
    cv: Condvar,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Event {
    pub(crate) fn new() -> Arc<Event> {
        Arc::new(Event { owner: None, waiters: AtomicUsize::new(0), lock: Mutex::new(Vec::new()), cv: Condvar::new() })
    }

    /// The event of the nodes the calling thread computes itself.
    pub(crate) fn new_inline() -> Arc<Event> {
        Arc::new(Event {
            owner: Some(std::thread::current().id()),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(Vec::new()),
            cv: Condvar::new(),
        })
    }

    /// Wakes the waiters (after the executor changed some node's state). Costs
    /// one atomic load when nobody waits.
    #[inline]
    pub(crate) fn signal(self: &Arc<Self>) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let targets = relock(&self.lock);
            if targets.iter().any(|t| !claimed_by(t, self)) {
                self.cv.notify_all();
            }
        }
    }

    /// Blocks until `node` is no longer claimed by this event (computed,
    /// failed, or released).
    pub(crate) fn wait_for(self: &Arc<Self>, node: &Array) {
        // The increment is ordered before the check of the node's state, and
        // the executor changes the state before it reads `waiters`: either it
        // sees this waiter and notifies under the lock, or this check sees the
        // new state.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = relock(&self.lock);
        g.push(node.clone());
        while claimed_by(node, self) {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(i) = g.iter().position(|t| Arc::ptr_eq(&t.0, &node.0)) {
            g.swap_remove(i);
        }
        drop(g);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) fn claimed_by(node: &Array, ev: &Arc<Event>) -> bool {
    matches!(&node.0.lock().pending, Some(Pending::Ticket(e)) if Arc::ptr_eq(e, ev))
}

/// Shared state of a synchronous eval that also queued work on workers: the
/// first error cancels the rest, and the caller waits for every job.
pub(crate) struct SyncBatch {
    pub(crate) cancelled: AtomicBool,
    error: Mutex<Option<Error>>,
    remaining: Mutex<usize>,
    done: Condvar,
}

impl SyncBatch {
    pub(crate) fn new(jobs: usize) -> Arc<SyncBatch> {
        Arc::new(SyncBatch {
            cancelled: AtomicBool::new(false),
            error: Mutex::new(None),
            remaining: Mutex::new(jobs),
            done: Condvar::new(),
        })
    }
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
    /// Records the first error and cancels the nodes not yet run.
    pub(crate) fn fail(&self, e: Option<Error>) {
        if let Some(e) = e {
            let mut slot = relock(&self.error);
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        self.cancelled.store(true, Ordering::Release);
    }
    pub(crate) fn take_error(&self) -> Option<Error> {
        relock(&self.error).take()
    }
    fn finish_job(&self) {
        let mut r = relock(&self.remaining);
        *r -= 1;
        if *r == 0 {
            self.done.notify_all();
        }
    }
    /// Blocks until every job of the batch has run or been cancelled.
    pub(crate) fn wait_jobs(&self) {
        let mut r = relock(&self.remaining);
        while *r > 0 {
            r = self.done.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One node for a worker to compute.
pub(crate) struct Task {
    pub(crate) node: Array,
    pub(crate) expr: Arc<crate::array::Expr>,
    /// Some input is computed elsewhere: wait for the inputs first.
    pub(crate) wait: bool,
}

/// The nodes one eval queues on one stream, in topological order.
pub(crate) struct Job {
    pub(crate) tasks: Vec<Task>,
    pub(crate) event: Arc<Event>,
    /// Set for a synchronous eval (errors cancel the batch and are returned by
    /// that eval); `None` for an asynchronous one (errors are stored).
    pub(crate) batch: Option<Arc<SyncBatch>>,
}

struct Queue {
    jobs: VecDeque<Job>,
    enqueued: u64,
    completed: u64,
    error: Option<Arc<Failure>>,
}

pub(crate) struct Worker {
    stream: Stream,
    q: Mutex<Queue>,
    work: Condvar,
    idle: Condvar,
}

/// Streams whose error slot holds an error (a fast check for evals).
static ERRORS_PENDING: AtomicUsize = AtomicUsize::new(0);

fn workers() -> &'static Mutex<HashMap<Stream, Arc<Worker>>> {
    static W: OnceLock<Mutex<HashMap<Stream, Arc<Worker>>>> = OnceLock::new();
    W.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The lock under which evals claim nodes and queue jobs (one total order).
pub(crate) fn schedule_lock() -> MutexGuard<'static, ()> {
    static L: Mutex<()> = Mutex::new(());
    relock(&L)
}

thread_local! {
    static IS_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is a stream worker (its evals run everything inline).
pub(crate) fn on_worker() -> bool {
    IS_WORKER.with(|w| w.get())
}

fn existing_worker(stream: Stream) -> Option<Arc<Worker>> {
    relock(workers()).get(&stream).cloned()
}

/// The worker of `stream`, started if needed.
pub(crate) fn worker(stream: Stream) -> Result<Arc<Worker>> {
    let mut map = relock(workers());
    if let Some(w) = map.get(&stream) {
        return Ok(w.clone());
    }
    let w = Arc::new(Worker {
        stream,
        q: Mutex::new(Queue { jobs: VecDeque::new(), enqueued: 0, completed: 0, error: None }),
        work: Condvar::new(),
        idle: Condvar::new(),
    });
    let w2 = w.clone();
    std::thread::Builder::new()
        .name(format!("kiln-stream-{}", stream.index))
        .spawn(move || worker_loop(w2))
        .map_err(|e| Error::runtime("eval", format!("Could not start the worker thread of {stream}: {e}.")))?;
    map.insert(stream, w.clone());
    Ok(w)
}

impl Worker {
    pub(crate) fn enqueue(&self, job: Job) {
        let mut q = relock(&self.q);
        q.jobs.push_back(job);
        q.enqueued += 1;
        self.work.notify_one();
    }
}

/// Takes the stored error of `stream`, if any.
pub(crate) fn take_stream_error(stream: Stream) -> Option<Error> {
    if ERRORS_PENDING.load(Ordering::Acquire) == 0 {
        return None;
    }
    let w = existing_worker(stream)?;
    let mut q = relock(&w.q);
    let f = q.error.take()?;
    ERRORS_PENDING.fetch_sub(1, Ordering::AcqRel);
    Some(f.error.clone())
}

/// Clears `f` from its stream's error slot (it has just been returned to a user).
pub(crate) fn clear_failure(f: &Failure) {
    if ERRORS_PENDING.load(Ordering::Acquire) == 0 {
        return;
    }
    if let Some(w) = existing_worker(f.stream) {
        let mut q = relock(&w.q);
        if q.error.as_ref().is_some_and(|e| e.id == f.id) {
            q.error = None;
            ERRORS_PENDING.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn store_failure(w: &Worker, f: &Arc<Failure>) {
    let mut q = relock(&w.q);
    if q.error.is_none() {
        q.error = Some(f.clone());
        ERRORS_PENDING.fetch_add(1, Ordering::AcqRel);
    }
}

fn worker_loop(w: Arc<Worker>) {
    IS_WORKER.with(|x| x.set(true));
    crate::device::set_default_stream(w.stream);
    loop {
        let job = {
            let mut q = relock(&w.q);
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                q = w.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        run_job(&w, job);
        let mut q = relock(&w.q);
        q.completed += 1;
        w.idle.notify_all();
    }
}

/// Runs the nodes of a job in order. Nothing here unwinds: kernel panics are
/// caught and become errors, and every claimed node is either computed,
/// marked failed or released, then its event signalled.
fn run_job(w: &Worker, job: Job) {
    let Job { tasks, event, batch } = job;
    // After a failure in an asynchronous job, later nodes check their inputs
    // (one of them may be the failed node).
    let mut failed = false;
    for Task { node, expr, wait } in tasks {
        let wait = wait || failed;
        if batch.as_ref().is_some_and(|b| b.is_cancelled()) {
            crate::eval::release(&node, &event);
            event.signal();
            continue;
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::eval::compute_claimed(&node, expr, wait, false, batch.as_deref())
        }))
        .unwrap_or_else(|p| Err(crate::eval::NodeError::Original(crate::eval::panic_error("eval", p))));
        if let Err(e) = r {
            failed = true;
            match &batch {
                Some(b) => {
                    b.fail(e.into_error());
                    crate::eval::release(&node, &event);
                }
                None => {
                    let f = match e {
                        crate::eval::NodeError::Propagated(f) => f,
                        crate::eval::NodeError::Original(err) => {
                            let f = Failure::new(err, w.stream);
                            store_failure(w, &f);
                            f
                        }
                        crate::eval::NodeError::Cancelled => Failure::new(
                            Error::runtime("eval", "An input was cancelled by a failed synchronous eval."),
                            w.stream,
                        ),
                    };
                    crate::eval::mark_failed(&node, &event, &f);
                }
            }
        }
        event.signal();
    }
    if let Some(b) = batch {
        b.finish_job();
    }
}

/// Waits until every job queued on `stream` so far has run, then returns the
/// first error a job raised there since the last time it was returned.
pub fn synchronize(stream: Stream) -> Result<()> {
    let Some(w) = existing_worker(stream) else { return Ok(()) };
    sync_worker(&w)
}

fn sync_worker(w: &Worker) -> Result<()> {
    let mut q = relock(&w.q);
    let target = q.enqueued;
    while q.completed < target {
        q = w.idle.wait(q).unwrap_or_else(|e| e.into_inner());
    }
    match q.error.take() {
        Some(f) => {
            ERRORS_PENDING.fetch_sub(1, Ordering::AcqRel);
            Err(f.error.clone())
        }
        None => Ok(()),
    }
}

/// [`synchronize`] on every stream that has a worker; returns the first error
/// (the slots of all streams are cleared).
pub fn synchronize_all() -> Result<()> {
    let mut all: Vec<Arc<Worker>> = relock(workers()).values().cloned().collect();
    all.sort_by_key(|w| w.stream.index);
    let mut first = Ok(());
    for w in all {
        let r = sync_worker(&w);
        if first.is_ok() {
            first = r;
        }
    }
    first
}
