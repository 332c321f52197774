//! Graph evaluation: a topological schedule of the unevaluated nodes, run in
//! order, detaching each evaluated node from its inputs so intermediates are
//! freed as soon as their last consumer has run.
//!
//! Each node runs on its stream: [`eval`] computes the nodes of the calling
//! thread's default stream on the calling thread (no hand-off, so small graphs
//! stay cheap) and queues the nodes of other streams on their workers, then
//! waits; [`async_eval`] queues everything and returns at once. See
//! [`crate::stream`] for the workers, events and error handling.

use crate::array::{in_tracing, Array, Expr};
use crate::backend::backend_for;
use crate::device::{default_stream, default_stream_for, Device, Stream};
use crate::error::{Error, Result};
use crate::primitive::OutSpec;
use crate::stream::{self, Event, Failure, Job, Pending, SyncBatch, Task};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Hasher for node ids (addresses): one multiply, no SipHash rounds.
#[derive(Default)]
#[allow(dead_code)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A set of node ids.
#[allow(dead_code)]
pub(crate) type IdSet = HashSet<usize, BuildHasherDefault<IdHasher>>;

/// Evaluates `arrays` and everything they depend on, and waits for them.
///
/// The traversal is iterative, so graphs of any depth evaluate without
/// recursion. Nodes created outside transforms are detached once computed
/// (they become leaves), which releases the graph behind them. Nodes on the
/// calling thread's default stream run on the calling thread; nodes on other
/// streams run on those streams' workers. An array already queued by
/// [`async_eval`] is waited for, not computed again. Errors: the first kernel
/// error of this eval, or an error stored by an earlier [`async_eval`] on an
/// array this one depends on or on a stream it queues work on.
pub fn eval(arrays: &[&Array]) -> Result<()> {
    evaluate(arrays, false)
}

/// Queues `arrays` (and the unevaluated graph behind them) on the workers of
/// their streams and returns at once.
///
/// Read the results with [`eval`] (or any read such as `to_vec`), which waits
/// for them; [`crate::synchronize`] waits for a whole stream. A kernel error
/// raised on a worker is stored and returned by the next eval of an array that
/// depends on the failed node, or the next eval or synchronize of the stream.
/// It fails if an earlier error of one of these streams has not been returned
/// yet, or when called on arrays being traced by a transform.
pub fn async_eval(arrays: &[&Array]) -> Result<()> {
    if in_tracing() && arrays.iter().any(|a| a.is_tracer()) {
        return Err(Error::invalid("async_eval", "Not allowed inside a graph transformation."));
    }
    evaluate(arrays, true)
}

/// Why a claimed node could not be computed.
pub(crate) enum NodeError {
    /// A kernel (or nested eval) error raised while computing it.
    Original(Error),
    /// An input failed on a stream worker earlier.
    Propagated(Arc<Failure>),
    /// Its synchronous eval was cancelled by an error elsewhere.
    Cancelled,
}

impl NodeError {
    pub(crate) fn into_error(self) -> Option<Error> {
        match self {
            NodeError::Original(e) => Some(e),
            NodeError::Propagated(f) => Some(f.error.clone()),
            NodeError::Cancelled => None,
        }
    }
}

/// Turns a caught panic into a runtime error of `op`.
pub(crate) fn panic_error(op: &str, p: Box<dyn std::any::Any + Send>) -> Error {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".to_string());
    Error::runtime(op, format!("The kernel panicked: {msg}"))
}

/// Executor of the nodes that run on the calling thread.
const INLINE: usize = usize::MAX;

#[derive(Default)]
struct Plan {
    inline: Vec<Option<(Array, Arc<Expr>, bool)>>,
    inline_ev: Option<Arc<Event>>,
    jobs: Vec<(Stream, Arc<Event>, Vec<Task>)>,
    /// Requested arrays claimed by an earlier eval.
    foreign: Vec<Array>,
}

impl Plan {
    fn exec_of(&self, ev: &Arc<Event>) -> Option<usize> {
        if self.inline_ev.as_ref().is_some_and(|e| Arc::ptr_eq(e, ev)) {
            return Some(INLINE);
        }
        self.jobs.iter().position(|(_, e, _)| Arc::ptr_eq(e, ev))
    }
    fn event(&mut self, exec: usize) -> &Arc<Event> {
        if exec == INLINE {
            self.inline_ev.get_or_insert_with(Event::new_inline)
        } else {
            &self.jobs[exec].1
        }
    }
    fn job_for(&mut self, s: Stream) -> usize {
        match self.jobs.iter().position(|(js, _, _)| *js == s) {
            Some(i) => i,
            None => {
                self.jobs.push((s, Event::new(), Vec::new()));
                self.jobs.len() - 1
            }
        }
    }
    /// Releases every claim of this plan (an aborted eval).
    fn release_all(&mut self, stack: Vec<Frame>) {
        for f in stack {
            let ev = self.event(f.exec).clone();
            release(&f.node, &ev);
        }
        if let Some(ev) = &self.inline_ev {
            for (a, _, _) in self.inline.iter().flatten() {
                release(a, ev);
            }
            ev.signal();
        }
        for (_, ev, tasks) in &self.jobs {
            for t in tasks {
                release(&t.node, ev);
            }
            ev.signal();
        }
    }
}

struct Frame {
    node: Array,
    expr: Arc<Expr>,
    next: usize,
    exec: usize,
    wait: bool,
}

enum Visit {
    /// Evaluated already.
    Done,
    /// Claimed by this eval, for the given executor.
    Claimed(usize),
    /// Claimed by an earlier eval.
    Foreign,
    /// Newly claimed and pushed on the stack.
    Pushed,
}

enum Abort {
    Failed(Arc<Failure>),
    Err(Error),
}

/// Decides where this eval runs a node: here, or on its stream's worker.
struct Placement {
    asynchronous: bool,
    all_inline: bool,
    current: Stream,
    thread_cpu: Stream,
}

impl Placement {
    fn inline(&self, s: Stream) -> bool {
        !self.asynchronous
            && (self.all_inline || s == self.current || s == self.thread_cpu || s.device != Device::cpu())
    }
}

fn visit(a: &Array, plan: &mut Plan, stack: &mut Vec<Frame>, place: &Placement) -> std::result::Result<Visit, Abort> {
    let mut st = a.0.lock();
    if st.data.is_some() {
        return Ok(Visit::Done);
    }
    match &st.pending {
        Some(Pending::Ticket(ev)) => return Ok(plan.exec_of(ev).map_or(Visit::Foreign, Visit::Claimed)),
        Some(Pending::Failed(f)) => return Err(Abort::Failed(f.clone())),
        None => {}
    }
    let Some((expr, _)) = st.expr.clone() else {
        return Err(Abort::Err(Error::runtime(
            "eval",
            "Attempting to eval an array without a primitive: it is a transform placeholder (eval inside vmap is not supported).",
        )));
    };
    let exec = if place.inline(expr.stream) { INLINE } else { plan.job_for(expr.stream) };
    let ev = plan.event(exec).clone();
    st.pending = Some(Pending::Ticket(ev.clone()));
    drop(st);
    if let Some(sibs) = expr.siblings.get() {
        for n in sibs.iter().filter_map(|w| w.upgrade()) {
            let mut s = n.lock();
            if s.data.is_none() && s.pending.is_none() {
                s.pending = Some(Pending::Ticket(ev.clone()));
            }
        }
    }
    stack.push(Frame { node: a.clone(), expr, next: 0, exec, wait: false });
    Ok(Visit::Pushed)
}

/// Claims the unevaluated nodes reachable from `arrays` in post-order.
fn schedule(arrays: &[&Array], plan: &mut Plan, place: &Placement) -> std::result::Result<(), Abort> {
    let mut stack: Vec<Frame> = Vec::new();
    let r = (|| {
        for a in arrays {
            if let Visit::Foreign = visit(a, plan, &mut stack, place)? {
                plan.foreign.push((*a).clone());
            }
            while let Some(top) = stack.last_mut() {
                if top.next < top.expr.inputs.len() {
                    let next = top.expr.inputs[top.next].clone();
                    top.next += 1;
                    let exec = top.exec;
                    let v = visit(&next, plan, &mut stack, place)?;
                    if matches!(v, Visit::Foreign) || matches!(v, Visit::Claimed(e) if e != exec) {
                        // `visit` pushed nothing: the top is still the consumer.
                        stack.last_mut().expect("consumer frame").wait = true;
                    }
                } else {
                    let f = stack.pop().expect("non-empty stack");
                    if let Some(parent) = stack.last_mut() {
                        if parent.exec != f.exec {
                            parent.wait = true;
                        }
                    }
                    if f.exec == INLINE {
                        plan.inline.push(Some((f.node, f.expr, f.wait)));
                    } else {
                        plan.jobs[f.exec].2.push(Task { node: f.node, expr: f.expr, wait: f.wait });
                    }
                }
            }
        }
        Ok(())
    })();
    if r.is_err() {
        plan.release_all(stack);
    }
    r
}

fn abort_error(a: Abort) -> Error {
    match a {
        Abort::Failed(f) => {
            stream::clear_failure(&f);
            f.error.clone()
        }
        Abort::Err(e) => e,
    }
}

fn node_error(e: NodeError, batch: Option<&SyncBatch>) -> Error {
    match e {
        NodeError::Original(e) => e,
        NodeError::Propagated(f) => {
            stream::clear_failure(&f);
            f.error.clone()
        }
        NodeError::Cancelled => batch
            .and_then(|b| b.take_error())
            .unwrap_or_else(|| Error::runtime("eval", "The eval was cancelled by an error on another stream.")),
    }
}

fn evaluate(arrays: &[&Array], asynchronous: bool) -> Result<()> {
    let place = Placement {
        asynchronous,
        all_inline: stream::on_worker() || in_tracing(),
        current: default_stream(),
        thread_cpu: default_stream_for(Device::cpu()),
    };
    let mut plan = Plan::default();
    let guard = stream::schedule_lock();
    schedule(arrays, &mut plan, &place).map_err(abort_error)?;
    // Errors stored on the streams this eval queues on are returned first.
    let mut stored = None;
    if !plan.inline.is_empty() {
        stored = stream::take_stream_error(place.current);
    }
    for (s, _, _) in &plan.jobs {
        if stored.is_none() {
            stored = stream::take_stream_error(*s);
        }
    }
    let workers: Result<Vec<_>> = match stored {
        Some(e) => Err(e),
        None => plan.jobs.iter().map(|(s, _, _)| stream::worker(*s)).collect(),
    };
    let workers = match workers {
        Ok(w) => w,
        Err(e) => {
            plan.release_all(Vec::new());
            return Err(e);
        }
    };
    let batch = if asynchronous || plan.jobs.is_empty() { None } else { Some(SyncBatch::new(plan.jobs.len())) };
    for (w, (_, event, tasks)) in workers.iter().zip(plan.jobs.drain(..)) {
        w.enqueue(Job { tasks, event, batch: batch.clone() });
    }
    drop(guard);
    if asynchronous {
        return Ok(());
    }
    let batch = batch.as_deref();
    if let Some(ev) = plan.inline_ev.take() {
        run_inline(&mut plan.inline, &ev, batch)?;
    }
    if let Some(b) = batch {
        b.wait_jobs();
        if let Some(e) = b.take_error() {
            return Err(e);
        }
    }
    for a in &plan.foreign {
        ensure_ready(a, None).map_err(|e| node_error(e, None))?;
    }
    Ok(())
}

/// Runs the nodes this eval computes on the calling thread, in order.
fn run_inline(
    order: &mut [Option<(Array, Arc<Expr>, bool)>],
    ev: &Arc<Event>,
    batch: Option<&SyncBatch>,
) -> Result<()> {
    for i in 0..order.len() {
        let (arr, expr, wait) = order[i].take().expect("each node is scheduled once");
        let r = if batch.is_some_and(|b| b.is_cancelled()) {
            Err(NodeError::Cancelled)
        } else {
            let tracer = arr.is_tracer();
            compute_claimed(&arr, expr, wait, tracer, batch)
        };
        if let Err(e) = r {
            release(&arr, ev);
            for (a, _, _) in order[i + 1..].iter_mut().filter_map(|s| s.take()) {
                release(&a, ev);
            }
            ev.signal();
            let err = node_error(e, batch);
            if let Some(b) = batch {
                b.fail(None);
                b.wait_jobs();
            }
            return Err(err);
        }
        ev.signal();
    }
    Ok(())
}

/// Blocks until `a` is computed (by whoever claimed it, or here if nobody has).
pub(crate) fn ensure_ready(a: &Array, batch: Option<&SyncBatch>) -> std::result::Result<(), NodeError> {
    loop {
        let st = a.0.lock();
        if st.data.is_some() {
            return Ok(());
        }
        match &st.pending {
            Some(Pending::Ticket(ev)) => {
                let ev = ev.clone();
                drop(st);
                if ev.owner.is_some() && ev.owner == Some(std::thread::current().id()) {
                    // An outer eval on this very thread claimed it (a kernel
                    // that evaluates part of the graph being evaluated):
                    // waiting would never end.
                    return Err(NodeError::Original(Error::runtime(
                        "eval",
                        "An eval inside a kernel needs an array that the enclosing eval on this thread has not computed yet.",
                    )));
                }
                ev.wait_for(a);
            }
            Some(Pending::Failed(f)) => return Err(NodeError::Propagated(f.clone())),
            None => {
                drop(st);
                if batch.is_some_and(|b| b.is_cancelled()) {
                    return Err(NodeError::Cancelled);
                }
                // Released by an eval that failed: compute it here.
                eval(&[a]).map_err(NodeError::Original)?;
            }
        }
    }
}

/// Computes a node claimed by the caller: waits for inputs computed elsewhere
/// (when `wait`), runs the kernel and publishes the outputs.
pub(crate) fn compute_claimed(
    arr: &Array,
    expr: Arc<Expr>,
    wait: bool,
    tracer: bool,
    batch: Option<&SyncBatch>,
) -> std::result::Result<(), NodeError> {
    if wait {
        for inp in &expr.inputs {
            ensure_ready(inp, batch)?;
        }
    }
    run_node(arr, expr, tracer).map_err(NodeError::Original)
}

/// Calls the kernel of `expr`, turning a panic into an error.
fn guarded(expr: &Expr, specs: &[OutSpec<'_>]) -> Result<Vec<crate::array::Data>> {
    let backend = backend_for(expr.stream.device)?;
    let start = crate::profile::enabled().then(std::time::Instant::now);
    let datas = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| expr.prim.eval(backend, &expr.inputs, specs)))
        .unwrap_or_else(|p| Err(panic_error(expr.prim.name(), p)))?;
    if let Some(t) = start {
        crate::profile::record(expr.prim.name(), specs[0].shape, t.elapsed().as_nanos() as u64);
    }
    if datas.len() != specs.len() {
        return Err(Error::runtime(
            expr.prim.name(),
            format!("The kernel returned {} outputs instead of {}.", datas.len(), specs.len()),
        ));
    }
    Ok(datas)
}

fn run_node(arr: &Array, expr: Arc<Expr>, tracer: bool) -> Result<()> {
    // A tracer's inputs stay referenced by its graph and must not be
    // overwritten: holding an extra handle blocks donation.
    let _pin: Vec<Array> = if tracer { expr.inputs.clone() } else { Vec::new() };
    if expr.siblings.get().is_none() {
        let spec = [OutSpec { shape: arr.shape(), dtype: arr.dtype() }];
        let d = guarded(&expr, &spec)?.pop().expect("one output");
        drop(expr);
        let mut st = arr.0.lock();
        st.data = Some(d);
        st.pending = None;
        if !tracer {
            st.expr = None;
        }
        return Ok(());
    }
    let (outputs, _) = arr.siblings();
    let specs: Vec<OutSpec<'_>> = outputs.iter().map(|o| OutSpec { shape: o.shape(), dtype: o.dtype() }).collect();
    let datas = guarded(&expr, &specs)?;
    drop(specs);
    drop(expr);
    for (o, d) in outputs.iter().zip(datas) {
        let mut st = o.0.lock();
        st.data = Some(d);
        st.pending = None;
        if !tracer {
            st.expr = None;
        }
    }
    Ok(())
}

/// Every output of `node`'s primitive that is still alive (itself for single-output ops).
fn for_each_output(node: &Array, mut f: impl FnMut(&Array)) {
    let sibs = node.0.lock().expr.as_ref().and_then(|(e, _)| e.siblings.get().cloned());
    match sibs {
        Some(s) => {
            for n in s.iter().filter_map(|w| w.upgrade()) {
                f(&Array(n));
            }
        }
        None => f(node),
    }
}

/// Releases the claim of `ev` on `node` and its siblings (not computed; a
/// later eval computes them).
pub(crate) fn release(node: &Array, ev: &Arc<Event>) {
    for_each_output(node, |o| {
        let mut st = o.0.lock();
        if matches!(&st.pending, Some(Pending::Ticket(e)) if Arc::ptr_eq(e, ev)) {
            st.pending = None;
        }
    });
}

/// Marks `node` and its siblings as failed with `f` (asynchronous evals).
pub(crate) fn mark_failed(node: &Array, ev: &Arc<Event>, f: &Arc<Failure>) {
    for_each_output(node, |o| {
        let mut st = o.0.lock();
        if matches!(&st.pending, Some(Pending::Ticket(e)) if Arc::ptr_eq(e, ev)) {
            st.pending = Some(Pending::Failed(f.clone()));
        }
    });
}
