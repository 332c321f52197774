//! Memory stays flat over a long training run: the active memory (bytes held
//! by live array buffers) after step 2,000 is within 5% of the active memory
//! after step 100, for the compiled [`TrainStep`] and for the eager path
//! (value_and_grad + optimizer update). A leak in the compile cache, the
//! graph, the optimizer state or the buffer cache shows up as growth here,
//! and the compiled step may hold little more than the eager one.
//!
//! Active memory is process-wide, so this file holds a single test that runs
//! the two paths one after the other.

use kiln_core::{get_active_memory, Array};
use kiln_models::gpt::{Gpt, GptConfig};
use kiln_nn::ModuleExt;
use kiln_optim::{AdamW, Optimizer, TrainStep};

const CONFIG: GptConfig = GptConfig { vocab_size: 32, context: 16, d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64 };
const BATCH: usize = 4;
const STEPS: usize = 2_000;

/// A few fixed batches `(inputs, targets)` of token ids, cycled through.
fn batches() -> Vec<Vec<Array>> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % CONFIG.vocab_size as u64) as i32
    };
    (0..4)
        .map(|_| {
            let n = BATCH * CONFIG.context;
            let ids: Vec<i32> = (0..n + 1).map(|_| next()).collect();
            let x = Array::from_slice(&ids[..n], &[BATCH, CONFIG.context]).unwrap();
            let y = Array::from_slice(&ids[1..], &[BATCH, CONFIG.context]).unwrap();
            vec![x, y]
        })
        .collect()
}

/// Trains for [`STEPS`] steps and returns `(active bytes after step 100,
/// active bytes after the last step, first loss, last loss)`. After each
/// step the parameters, optimizer state and loss are evaluated and the
/// step's other arrays are dropped.
fn run(compiled: bool) -> (usize, usize, f32, f32) {
    kiln_core::random::seed(7);
    let mut model = Gpt::new(CONFIG).unwrap();
    let mut opt = AdamW::with(1e-3, (0.9, 0.999), 1e-8, 0.01, true).unwrap();
    let loss = |m: &Gpt, a: &[Array]| m.loss(&a[0], &a[1]);
    let step = compiled.then(|| TrainStep::new(&model, &opt, loss, Some(1.0)).unwrap());
    let vg = kiln_nn::value_and_grad(loss);
    let data = batches();
    let (mut at100, mut first, mut last) = (0, 0.0, 0.0);
    for i in 1..=STEPS {
        let batch = &data[i % data.len()];
        let l = match &step {
            Some(s) => s.run(&mut model, &mut opt, batch).unwrap(),
            None => {
                let (l, grads) = vg(&model, batch).unwrap();
                let grads = kiln_optim::clip_grad_norm(&grads, 1.0).unwrap().0;
                opt.update(&mut model, &grads).unwrap();
                l
            }
        };
        let mut live: Vec<Array> = model.named_parameters().into_iter().map(|(_, a)| a).collect();
        live.extend(kiln_core::tree_flatten(&opt.state().unwrap()).into_iter().map(|(_, a)| a));
        live.push(l.clone());
        kiln_core::eval(&live.iter().collect::<Vec<_>>()).unwrap();
        drop(live);
        let v = l.item::<f32>().unwrap();
        drop(l);
        if i == 1 {
            first = v;
        }
        last = v;
        if i == 100 {
            at100 = get_active_memory();
        }
    }
    (at100, get_active_memory(), first, last)
}

#[test]
fn active_memory_is_flat_over_2000_steps() {
    let mut ends = Vec::new();
    for compiled in [true, false] {
        let (at100, at_end, first, last) = run(compiled);
        let what = if compiled { "compiled TrainStep" } else { "eager step" };
        eprintln!("{what}: active after step 100 = {at100} B, after step {STEPS} = {at_end} B, loss {first} -> {last}");
        assert!(at100 > 0, "{what}: no active memory measured");
        let growth = (at_end as f64 - at100 as f64) / at100 as f64;
        assert!(
            growth.abs() <= 0.05,
            "{what}: active memory after step {STEPS} ({at_end} B) is not within 5% of step 100 ({at100} B)"
        );
        assert!(last < first, "{what}: the loss did not decrease ({first} -> {last})");
        ends.push(at_end);
    }
    // The compiled step keeps no more than the live parameters and state plus
    // its small constants: not the initial values nor a stale trace's zeros.
    assert!(
        ends[0] as f64 <= ends[1] as f64 * 1.25,
        "the compiled step holds {} B after the run, the eager one {} B",
        ends[0],
        ends[1]
    );
}
