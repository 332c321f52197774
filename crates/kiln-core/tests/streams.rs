//! Streams and asynchronous evaluation: per-stream workers, cross-stream
//! dependencies, `async_eval`, `synchronize`, error propagation from workers,
//! default streams per thread, and DOT export. Every test runs under a
//! timeout so a scheduling bug fails instead of hanging CI.

mod common;

use common::Rng;
use kiln_core::backend::Backend;
use kiln_core::device::{self, default_stream, new_stream, with_stream, Device, Stream};
use kiln_core::primitive::{OutSpec, Primitive};
use kiln_core::{async_eval, eval, ops, synchronize, synchronize_all, Array, Data, ErrorKind, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Runs `f` on a helper thread and fails the test if it does not finish in `secs`.
fn with_timeout<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().expect("test body panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out after {secs} s: a waiter hung"),
    }
}

/// `synchronize_all` returns (and clears) the stored errors of every stream,
/// so tests that call it do not run while a test expects a stored error.
static SLOTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn slots() -> std::sync::MutexGuard<'static, ()> {
    SLOTS.lock().unwrap_or_else(|e| e.into_inner())
}

fn f32s(v: &[f32], shape: &[usize]) -> Array {
    Array::from_slice(v, shape).unwrap()
}

// ------------------------------------------------------------ test kernels

/// What the test primitive does when it runs.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Behaviour {
    /// Copies its input after sleeping this many milliseconds.
    Slow(u64),
    /// Returns an error.
    Fail,
    /// Panics.
    Panic,
}

/// A copy-like primitive with a controllable kernel that counts its runs.
/// It borrows the registered name "Copy" (transform rules are not used here).
struct Probe {
    behaviour: Behaviour,
    runs: Arc<AtomicUsize>,
}

impl Primitive for Probe {
    fn name(&self) -> &'static str {
        "Copy"
    }
    fn eval(&self, _backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        match self.behaviour {
            Behaviour::Slow(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                let _ = outputs;
                Ok(vec![inputs[0].data()])
            }
            Behaviour::Fail => Err(kiln_core::Error::runtime("Probe", "the probe kernel failed on purpose")),
            Behaviour::Panic => panic!("the probe kernel panicked on purpose"),
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn probe(x: &Array, behaviour: Behaviour) -> (Array, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = Array::from_op(x.shape().to_vec(), x.dtype(), Probe { behaviour, runs: runs.clone() }, vec![x.clone()]);
    (a, runs)
}

// ------------------------------------------------------------ random graphs

/// A random graph of `n` nodes over two inputs; node `i` is recorded on
/// `streams[pick]` (the same picks for any `streams` of equal length).
fn random_graph(seed: u64, n: usize, streams: &[Stream]) -> Vec<Array> {
    let mut rng = Rng::new(seed);
    let x = f32s(&rng.vec(12, -1.0, 1.0).iter().map(|&v| v as f32).collect::<Vec<_>>(), &[3, 4]);
    let y = f32s(&rng.vec(12, -1.0, 1.0).iter().map(|&v| v as f32).collect::<Vec<_>>(), &[3, 4]);
    let mut nodes = vec![x, y];
    for _ in 0..n {
        let s = streams[(rng.next_u64() % streams.len() as u64) as usize];
        let a = nodes[(rng.next_u64() % nodes.len() as u64) as usize].clone();
        let b = nodes[(rng.next_u64() % nodes.len() as u64) as usize].clone();
        let op = rng.next_u64() % 7;
        let out = with_stream(s, || match op {
            0 => ops::add(&a, &b),
            1 => ops::multiply(&a, &b),
            2 => ops::subtract(&a, &b),
            3 => ops::tanh(&a),
            4 => ops::maximum(&a, &b),
            5 => ops::sum(&a, 1, true).and_then(|r| ops::add(&r, &b)),
            _ => ops::transpose(&a).and_then(|t| ops::transpose(&ops::sin(&t)?)),
        })
        .unwrap();
        nodes.push(out);
    }
    nodes
}

fn bits(a: &Array) -> Vec<u32> {
    a.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn random_graphs_across_streams_match_synchronous_eval() {
    let _serial = slots();
    with_timeout(120, || {
        let s1 = new_stream(Device::cpu());
        let s2 = new_stream(Device::cpu());
        for seed in 0..12u64 {
            let nodes = 40;
            let reference = random_graph(seed, nodes, &[default_stream(); 3]);
            let outs: Vec<&Array> = reference[reference.len() - 4..].iter().collect();
            eval(&outs).unwrap();
            let want: Vec<Vec<u32>> = outs.iter().map(|a| bits(a)).collect();
            for mode in 0..3 {
                let streams = [default_stream(), s1, s2];
                let g = random_graph(seed, nodes, if mode == 2 { &streams[1..] } else { &streams });
                let outs: Vec<&Array> = g[g.len() - 4..].iter().collect();
                match mode {
                    0 => eval(&outs).unwrap(),
                    _ => {
                        async_eval(&outs).unwrap();
                        // Read one result before the rest.
                        outs[1].eval().unwrap();
                        eval(&outs).unwrap();
                    }
                }
                let got: Vec<Vec<u32>> = outs.iter().map(|a| bits(a)).collect();
                assert_eq!(got, want, "seed {seed}, mode {mode}");
                for o in &outs {
                    assert!(o.is_evaluated() && o.inputs().is_empty(), "evaluated nodes are detached");
                }
            }
        }
        synchronize_all().unwrap();
    });
}

#[test]
fn cross_stream_ping_pong_does_not_deadlock() {
    with_timeout(60, || {
        let s1 = new_stream(Device::cpu());
        let s2 = new_stream(Device::cpu());
        let x = f32s(&[1.0, 2.0, 3.0], &[3]);
        // Each stream consumes the other's previous result.
        let mut a = with_stream(s1, || &x + 1.0);
        let mut b = with_stream(s2, || &a * 0.5);
        let mut expect: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v + 1.0).collect();
        let mut expect_b: Vec<f32> = expect.iter().map(|v| v * 0.5).collect();
        for _ in 0..50 {
            let na = with_stream(s1, || ops::add(&b, &a).unwrap());
            let nb = with_stream(s2, || ops::subtract(&na, &b).unwrap());
            expect = expect.iter().zip(&expect_b).map(|(a, b)| b + a).collect();
            expect_b = expect.iter().zip(&expect_b).map(|(a, b)| a - b).collect();
            a = na;
            b = nb;
        }
        assert_eq!(a.stream(), s1);
        assert_eq!(b.stream(), s2);
        async_eval(&[&b]).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), expect);
        assert_eq!(b.to_vec::<f32>().unwrap(), expect_b);
        // A consumer on the default stream of work done on two workers.
        let c = &a + &b;
        assert_eq!(c.stream(), default_stream());
        let want: Vec<f32> = expect.iter().zip(&expect_b).map(|(a, b)| a + b).collect();
        assert_eq!(c.to_vec::<f32>().unwrap(), want);
        synchronize(s1).unwrap();
        synchronize(s2).unwrap();
    });
}

#[test]
fn async_eval_returns_at_once_and_eval_waits_without_recomputing() {
    with_timeout(60, || {
        let s = new_stream(Device::cpu());
        let x = f32s(&[1.0, 2.0], &[2]);
        let (slow, runs) = with_stream(s, || probe(&x, Behaviour::Slow(300)));
        let y = with_stream(s, || &slow * 2.0);
        let t = Instant::now();
        async_eval(&[&y]).unwrap();
        assert!(t.elapsed() < Duration::from_millis(200), "async_eval blocked for {:?}", t.elapsed());
        assert!(!y.is_evaluated());
        // A consumer on this thread's default stream waits for the worker.
        let z = &y + 1.0;
        assert_eq!(z.to_vec::<f32>().unwrap(), vec![3.0, 5.0]);
        assert!(t.elapsed() >= Duration::from_millis(250));
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
        // Scheduling it again (async or sync) does not run the kernel again.
        async_eval(&[&y, &z]).unwrap();
        eval(&[&y]).unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        // eval of an array queued by async_eval waits for it.
        let (slow2, runs2) = with_stream(s, || probe(&x, Behaviour::Slow(100)));
        async_eval(&[&slow2]).unwrap();
        slow2.eval().unwrap();
        assert!(slow2.is_evaluated());
        assert_eq!(runs2.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn synchronize_waits_for_queued_work() {
    let _serial = slots();
    with_timeout(60, || {
        let s = new_stream(Device::cpu());
        let x = f32s(&[1.0], &[1]);
        let arrays: Vec<Array> = (0..4).map(|_| with_stream(s, || probe(&x, Behaviour::Slow(30)).0)).collect();
        for a in &arrays {
            async_eval(&[a]).unwrap();
        }
        synchronize(s).unwrap();
        assert!(arrays.iter().all(|a| a.is_evaluated()));
        // Nothing queued: returns at once; an unused stream has nothing to wait for.
        synchronize(s).unwrap();
        synchronize(new_stream(Device::cpu())).unwrap();
        let s2 = new_stream(Device::cpu());
        let b = with_stream(s2, || probe(&x, Behaviour::Slow(30)).0);
        async_eval(&[&b]).unwrap();
        synchronize_all().unwrap();
        assert!(b.is_evaluated());
    });
}

#[test]
fn many_user_threads_share_streams() {
    let _serial = slots();
    with_timeout(120, || {
        let s1 = new_stream(Device::cpu());
        let s2 = new_stream(Device::cpu());
        let base = f32s(&[1.0, 2.0, 3.0, 4.0], &[4]);
        // A shared array queued once and consumed by every thread.
        let shared = with_stream(s1, || ops::exp(&(&base * 0.1)).unwrap());
        async_eval(&[&shared]).unwrap();
        let want_shared: Vec<f32> = shared.to_vec::<f32>().unwrap();
        let host: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|v| (v * 0.1).exp()).collect();
        assert!(want_shared.iter().zip(&host).all(|(a, b)| (a - b).abs() < 1e-6));
        let shared = with_stream(s1, || &shared + 0.0); // pending again while threads start
        async_eval(&[&shared]).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let shared = shared.clone();
                let want_shared = want_shared.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let k = (t * 100 + i) as f32;
                        let a = with_stream(if i % 2 == 0 { s1 } else { s2 }, || &shared + k as f64);
                        let b = ops::multiply(&a, &shared).unwrap(); // this thread's default stream
                        let c = with_stream(s2, || &b - 1.0);
                        if i % 3 == 0 {
                            async_eval(&[&c]).unwrap();
                        }
                        let got = c.to_vec::<f32>().unwrap();
                        let want: Vec<f32> = want_shared.iter().map(|s| (s + k) * s - 1.0).collect();
                        assert_eq!(got, want, "thread {t} iteration {i}");
                    }
                    // Each thread keeps its own default stream.
                    default_stream()
                })
            })
            .collect();
        let mut defaults: Vec<Stream> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        defaults.sort_by_key(|s| s.index);
        defaults.dedup();
        assert_eq!(defaults.len(), 4, "default streams differ between threads");
        synchronize_all().unwrap();
    });
}

#[test]
fn default_stream_is_per_thread_and_scoped() {
    let mine = default_stream();
    assert_eq!(default_stream(), mine, "stable within a thread");
    assert_eq!(mine.device, Device::cpu());
    let other = std::thread::spawn(default_stream).join().unwrap();
    assert_ne!(other, mine);
    let s = new_stream(Device::cpu());
    assert_ne!(s, mine);
    let inner = with_stream(s, || {
        let x = f32s(&[1.0], &[1]);
        let y = &x + 1.0;
        assert_eq!(y.stream(), s);
        default_stream()
    });
    assert_eq!(inner, s);
    assert_eq!(default_stream(), mine, "with_stream restores the default");
    std::thread::spawn(move || {
        device::set_default_stream(s);
        assert_eq!(default_stream(), s);
        let x = f32s(&[2.0], &[1]);
        let y = &x * 3.0;
        assert_eq!(y.stream(), s);
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![6.0]);
    })
    .join()
    .unwrap();
    assert_eq!(default_stream(), mine, "set_default_stream is per thread");
}

#[test]
fn worker_error_is_returned_once_per_stream_and_later_evals_work() {
    let _serial = slots();
    with_timeout(60, || {
        let s = new_stream(Device::cpu());
        let x = f32s(&[1.0, 2.0, 3.0], &[3]);
        let idx = Array::from_slice(&[0i32, 7], &[2]).unwrap();
        let bad = with_stream(s, || ops::take(&x, &idx, Some(0)).unwrap());
        let dependent = with_stream(s, || &bad + 1.0);
        let independent = with_stream(s, || &x * 2.0);
        async_eval(&[&dependent, &independent]).unwrap();
        // The failed array and everything depending on it report the error...
        let e = dependent.eval().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfRange, "{e}");
        let e2 = bad.eval().unwrap_err();
        assert_eq!(e2, e);
        let consumer = &dependent * 2.0;
        assert_eq!(consumer.eval().unwrap_err(), e);
        // ...nodes that do not depend on it were computed...
        assert_eq!(independent.to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
        // ...and, returned once, the error no longer blocks the stream.
        synchronize(s).unwrap();
        let good = with_stream(s, || &x - 1.0);
        assert_eq!(good.to_vec::<f32>().unwrap(), vec![0.0, 1.0, 2.0]);

        // Not read through the array: synchronize returns it, once.
        let bad2 = with_stream(s, || ops::take(&x, &idx, Some(0)).unwrap());
        async_eval(&[&bad2]).unwrap();
        assert_eq!(synchronize(s).unwrap_err().kind(), ErrorKind::OutOfRange);
        synchronize(s).unwrap();

        // Not read at all: the next eval queueing work on the stream returns it.
        let bad4 = with_stream(s, || ops::take(&x, &idx, Some(0)).unwrap());
        async_eval(&[&bad4]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let later = with_stream(s, || &x + 5.0);
        let r = later.eval();
        // bad4's error is either reported here or, if the worker had not run it
        // yet, by synchronize.
        match r {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::OutOfRange);
                later.eval().unwrap();
            }
            Ok(()) => assert_eq!(synchronize(s).unwrap_err().kind(), ErrorKind::OutOfRange),
        }
        assert_eq!(later.to_vec::<f32>().unwrap(), vec![6.0, 7.0, 8.0]);
        synchronize_all().unwrap();
    });
}

#[test]
fn synchronous_eval_reports_worker_errors_directly() {
    with_timeout(60, || {
        let s = new_stream(Device::cpu());
        let x = f32s(&[1.0, 2.0, 3.0], &[3]);
        let idx = Array::from_slice(&[5i32], &[1]).unwrap();
        // Fails on the worker of s; the consumer runs on this thread.
        let bad = with_stream(s, || ops::take(&x, &idx, Some(0)).unwrap());
        let y = &bad + 1.0;
        assert_eq!(y.eval().unwrap_err().kind(), ErrorKind::OutOfRange);
        // Returned by eval already: not stored for the stream.
        synchronize(s).unwrap();
        // The graph is left unevaluated, so a retry reports the same error.
        assert_eq!(y.eval().unwrap_err().kind(), ErrorKind::OutOfRange);
        // Fails on this thread while a worker waits for it.
        let bad_here = ops::take(&x, &idx, Some(0)).unwrap();
        let on_worker = with_stream(s, || &bad_here * 2.0);
        let fine = with_stream(s, || &x * 3.0);
        assert_eq!(eval(&[&on_worker, &fine]).unwrap_err().kind(), ErrorKind::OutOfRange);
        assert_eq!(on_worker.eval().unwrap_err().kind(), ErrorKind::OutOfRange);
        synchronize(s).unwrap();
        assert_eq!(fine.to_vec::<f32>().unwrap(), vec![3.0, 6.0, 9.0]);
    });
}

#[test]
fn panicking_kernels_become_errors() {
    let _serial = slots();
    with_timeout(60, || {
        let s = new_stream(Device::cpu());
        let x = f32s(&[1.0, 2.0], &[2]);
        // On a worker, asynchronously.
        let (p, _) = with_stream(s, || probe(&x, Behaviour::Panic));
        let q = with_stream(s, || &p + 1.0);
        async_eval(&[&q]).unwrap();
        let e = q.eval().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Runtime);
        assert!(e.to_string().contains("panicked on purpose"), "{e}");
        // On this thread, synchronously.
        let (p2, _) = probe(&x, Behaviour::Panic);
        let e = (&p2 * 2.0).eval().unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
        // Error returns: the worker survives and still runs work.
        let (f, _) = with_stream(s, || probe(&x, Behaviour::Fail));
        async_eval(&[&f]).unwrap();
        assert!(f.eval().unwrap_err().to_string().contains("failed on purpose"));
        let ok = with_stream(s, || &x + 1.0);
        assert_eq!(ok.to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
        synchronize_all().unwrap();
    });
}

#[test]
fn waiters_on_other_threads_never_hang() {
    let _serial = slots();
    with_timeout(60, || {
        let s1 = new_stream(Device::cpu());
        let s2 = new_stream(Device::cpu());
        let x = f32s(&[1.0, 2.0], &[2]);
        for behaviour in [Behaviour::Fail, Behaviour::Panic, Behaviour::Slow(20)] {
            let (p, _) = with_stream(s1, || probe(&x, behaviour));
            let slow = with_stream(s1, || probe(&p, Behaviour::Slow(50)).0);
            let mid = with_stream(s2, || &slow + 1.0);
            async_eval(&[&mid]).unwrap();
            let waiters: Vec<_> = (0..3)
                .map(|i| {
                    let mid = mid.clone();
                    std::thread::spawn(move || {
                        let y = if i == 0 { mid.clone() } else { &mid * i as f64 };
                        y.eval().map(|_| ())
                    })
                })
                .collect();
            for w in waiters {
                let r = w.join().unwrap();
                assert_eq!(r.is_ok(), behaviour == Behaviour::Slow(20), "{behaviour:?}: {r:?}");
            }
            let _ = synchronize_all();
        }
    });
}

#[test]
fn multi_output_ops_on_streams() {
    with_timeout(60, || {
        let s = new_stream(Device::cpu());
        let a = f32s(&[7.0, -7.0, 5.5], &[3]);
        let (q, r) = with_stream(s, || ops::divmod(&a, 2.0).unwrap());
        let consumer = &r + 0.0;
        async_eval(&[&q]).unwrap();
        assert_eq!(consumer.to_vec::<f32>().unwrap(), vec![1.0, 1.0, 1.5]);
        assert_eq!(q.to_vec::<f32>().unwrap(), vec![3.0, -4.0, 2.0]);
        assert!(r.is_evaluated());
    });
}

#[test]
fn tracers_are_rejected_by_async_eval_and_transforms_still_work() {
    let x = f32s(&[1.0, 2.0], &[2]);
    let s = new_stream(Device::cpu());
    let g = kiln_core::grad(
        |a: &[Array]| {
            let y = with_stream(s, || ops::sum(&ops::multiply(&a[0], &a[0])?, None, false))?;
            assert!(async_eval(&[&y]).is_err());
            Ok(vec![y])
        },
        &[0],
    );
    let d = g(&[x]).unwrap();
    assert_eq!(d[0].to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
}

#[test]
fn arrays_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Array>();
    check::<Stream>();
}

#[test]
fn dot_export_is_deterministic() {
    let s = new_stream(Device::cpu());
    let d = default_stream();
    let x = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let y = ops::exp(&(&x * 2.0)).unwrap();
    let z = with_stream(s, || ops::sum(&ops::add(&y, &x).unwrap(), 1, false).unwrap());
    let (q, _r) = ops::divmod(&z, 3.0).unwrap();
    let dot = kiln_core::export_to_dot(&[&q, &y], &[("x", &x)]);
    let (si, di) = (s.index, d.index);
    let want = format!(
        r#"digraph kiln {{
  rankdir=TB;
  n0 [label="x\n(2,3) float32", shape=ellipse];
  n1 [label="2\n() float32", shape=ellipse, style=dashed];
  n2 [label="Multiply\n(2,3) float32\ncpu:{di}", shape=box];
  n3 [label="Exp\n(2,3) float32\ncpu:{di}", shape=box, peripheries=2];
  n4 [label="Add\n(2,3) float32\ncpu:{si}", shape=box];
  n5 [label="Sum\n(2,1) float32\ncpu:{si}", shape=box];
  n6 [label="Reshape\n(2) float32\ncpu:{si}", shape=box];
  n7 [label="3\n() float32", shape=ellipse, style=dashed];
  n8 [label="DivMod[0]\n(2) float32\ncpu:{di}", shape=box, peripheries=2];
  n0 -> n2 [label="0"];
  n1 -> n2 [label="1"];
  n2 -> n3;
  n3 -> n4 [label="0"];
  n0 -> n4 [label="1"];
  n4 -> n5;
  n5 -> n6;
  n6 -> n8 [label="0"];
  n7 -> n8 [label="1"];
}}
"#
    );
    assert_eq!(dot, want);
    // Same graph, same text; evaluated nodes become leaves.
    assert_eq!(kiln_core::export_to_dot(&[&q, &y], &[("x", &x)]), want);
    let mut buf = Vec::new();
    kiln_core::write_dot(&mut buf, &[&q, &y], &[("x", &x)]).unwrap();
    assert_eq!(String::from_utf8(buf).unwrap(), want);
    y.eval().unwrap();
    let after = kiln_core::export_to_dot(&[&y], &[]);
    assert_eq!(after, "digraph kiln {\n  rankdir=TB;\n  n0 [label=\"(2,3) float32\", shape=ellipse, style=dashed, peripheries=2];\n}\n");
}

/// CPU time of this thread in nanoseconds.
#[cfg(target_os = "linux")]
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_ns() -> Option<u64> {
    None
}

/// Eval overhead of a 1000-add chain on the default stream (run with
/// `--ignored --nocapture`): the synchronous path stays on the calling thread.
#[test]
#[ignore]
fn chain_overhead() {
    let x = f32s(&[1.0; 16], &[16]);
    let mut best = f64::MAX;
    let mut best_cpu = f64::MAX;
    for _ in 0..200 {
        let mut y = x.clone();
        for _ in 0..1000 {
            y = &y + &x;
        }
        let c0 = thread_cpu_ns().unwrap_or(0);
        let t = Instant::now();
        eval(&[&y]).unwrap();
        let wall = t.elapsed().as_nanos() as f64 / 1000.0;
        let cpu = (thread_cpu_ns().unwrap_or(0) - c0) as f64 / 1000.0;
        best = best.min(wall);
        best_cpu = best_cpu.min(cpu);
    }
    println!("eval of a 1000-add chain: {best:.1} ns/op wall, {best_cpu:.1} ns/op thread CPU (best of 200)");
    let s = new_stream(Device::cpu());
    let mut best = f64::MAX;
    for _ in 0..50 {
        let mut y = x.clone();
        for _ in 0..1000 {
            y = with_stream(s, || &y + &x);
        }
        let t = Instant::now();
        async_eval(&[&y]).unwrap();
        y.eval().unwrap();
        best = best.min(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    println!("async_eval + eval of a 1000-add chain on a worker: {best:.1} ns/op wall (best of 50)");
}
