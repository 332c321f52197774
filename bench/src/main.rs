//! Kiln benchmark harness, Kiln side.
//!
//! ```text
//! cargo run --release -p kiln-bench -- [--only NAME,...] [--quick] [--list]
//! ```
//!
//! Prints one JSON object per line on stdout, in the same schema as
//! `bench/peers.py` (progress goes to stderr):
//!
//! ```text
//! {"framework":"kiln","workload",...,"params",...,"median_ms","min_ms","repeats",
//!  "metric","value","cpu_util",...extras}
//! ```
//!
//! The timing rule is the peers' one: optional wait for a quiet machine, one
//! warm-up call (more while cheap), then timed calls until at least `repeats`
//! calls and `min_window` seconds of timed work, stopping once `budget` seconds
//! were timed (never fewer than 3); the median is reported. Each call builds the
//! lazy graph and evaluates it, so the time covers graph construction and eval.
//!
//! Adding a workload: add an entry to [`workloads`] with the same name, params
//! and metric as in `bench/peers.py`'s `WORKLOADS`.

mod llm;

use kiln::Array;
use std::time::Instant;

type R<T> = std::result::Result<T, Box<dyn std::error::Error>>;
/// One run of a workload, to completion (everything evaluated).
type Thunk = Box<dyn FnMut() -> R<()>>;

thread_local! {
    /// Set by a thunk that times only part of its call (e.g. decoding after an
    /// untimed prompt); `bench` then uses it instead of the call's wall time.
    static OWN_SECONDS: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

// ---------------------------------------------------------------------------
// Workload registry (keep names, params and metrics in sync with peers.py)
// ---------------------------------------------------------------------------

const ELEM_N: usize = 16 * 1024 * 1024;
const RED_ROWS: usize = 4096;
const RED_COLS: usize = 4096;
const CHAIN_N: usize = 16;
const CHAIN_LEN: usize = 1000;
const CONV: [usize; 6] = [8, 56, 56, 64, 64, 3]; // n, h, w, cin, cout, k (padding 1)
const SORT_N: usize = 1 << 20;
const GATHER_TABLE: [usize; 2] = [1 << 16, 64];
const GATHER_ROWS: usize = 1 << 20;
/// sqrt(2 / pi)
const GELU_C: f64 = 0.797_884_560_802_865_4;

struct Workload {
    name: &'static str,
    /// Unit of `value`; report.py knows which units are lower-is-better.
    metric: &'static str,
    /// Must equal the peers' params for the same workload.
    params: Json,
    /// How Kiln runs it (the record's "impl").
    desc: &'static str,
    warmup: usize,
    budget_scale: f64,
    /// Median seconds per call -> metric value.
    value: fn(f64) -> f64,
    /// Builds the inputs and returns the timed call.
    setup: fn(&mut Rng) -> R<Thunk>,
}

fn gbs(bytes: usize, s: f64) -> f64 {
    bytes as f64 / s / 1e9
}

fn gflops(flops: usize, s: f64) -> f64 {
    flops as f64 / s / 1e9
}

fn ints(v: &[usize]) -> Json {
    Json::Arr(v.iter().map(|&x| x.into()).collect())
}

fn mm_params(m: usize, k: usize, n: usize, dtype: &str) -> Json {
    obj(vec![("m", m.into()), ("k", k.into()), ("n", n.into()), ("dtype", dtype.into())])
}

fn mm_workload(name: &'static str, n: usize, setup: fn(&mut Rng) -> R<Thunk>, value: fn(f64) -> f64) -> Workload {
    let dtype = if name.contains("bf16") { "bfloat16" } else { "float32" };
    Workload {
        name,
        metric: "GFLOP/s",
        params: mm_params(n, n, n, dtype),
        desc: "kiln::ops::matmul",
        warmup: 3,
        budget_scale: 1.0,
        value,
        setup,
    }
}

fn workloads() -> Vec<Workload> {
    let gelu_params = |mode: &str| {
        obj(vec![
            ("n", ELEM_N.into()),
            ("dtype", "float32".into()),
            ("expr", "gelu_tanh(x*1.5+0.5)".into()),
            ("mode", mode.into()),
        ])
    };
    let red_params = || {
        obj(vec![
            ("shape", Json::Arr(vec![RED_ROWS.into(), RED_COLS.into()])),
            ("axis", (-1i64).into()),
            ("dtype", "float32".into()),
        ])
    };
    vec![
        Workload {
            name: "elementwise_gelu_unfused",
            metric: "GB/s",
            params: gelu_params("eager"),
            desc: "lazy graph of 11 elementwise ops, one eval",
            warmup: 2,
            budget_scale: 1.0,
            value: |s| gbs(2 * 4 * ELEM_N, s),
            setup: setup_gelu,
        },
        // Peers run their compiler here (jax.jit, torch.compile, mx.compile).
        Workload {
            name: "elementwise_gelu_compiled",
            metric: "GB/s",
            params: gelu_params("compiled"),
            desc: "kiln::compile of the 11-op chain (traced once, replayed; fused when fusion is on)",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| gbs(2 * 4 * ELEM_N, s),
            setup: setup_gelu_compiled,
        },
        Workload {
            name: "mlp_value_and_grad_784_512_512_10_b256",
            metric: "ms/step",
            params: mlp_params("eager"),
            desc: "kiln::value_and_grad of a 3-layer relu MLP + cross-entropy, one eval",
            warmup: 2,
            budget_scale: 1.0,
            value: |s| s * 1e3,
            setup: |r| setup_mlp(r, false),
        },
        Workload {
            name: "mlp_value_and_grad_784_512_512_10_b256_compiled",
            metric: "ms/step",
            params: mlp_params("compiled"),
            desc: "kiln::compile(value_and_grad(...)) of the same MLP loss",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| s * 1e3,
            setup: |r| setup_mlp(r, true),
        },
        Workload {
            name: "sum_lastaxis_4096x4096",
            metric: "GB/s",
            params: red_params(),
            desc: "kiln::ops::sum(x, -1, false)",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| gbs(4 * RED_ROWS * RED_COLS + 4 * RED_ROWS, s),
            setup: setup_sum,
        },
        Workload {
            name: "softmax_lastaxis_4096x4096",
            metric: "GB/s",
            params: red_params(),
            desc: "kiln::ops::softmax(x, -1, false)",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| gbs(2 * 4 * RED_ROWS * RED_COLS, s),
            setup: setup_softmax,
        },
        Workload {
            name: "smallop_chain1000_add16",
            metric: "us/op",
            params: obj(vec![
                ("n", CHAIN_N.into()),
                ("chain", CHAIN_LEN.into()),
                ("dtype", "float32".into()),
                ("op", "y = y + x (chain), then one eval/sync".into()),
            ]),
            desc: "lazy graph of 1000 adds, one eval",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| s / CHAIN_LEN as f64 * 1e6,
            setup: setup_chain,
        },
        mm_workload("matmul_f32_256", 256, |r| setup_matmul(r, 256, false), |s| gflops(2 * 256usize.pow(3), s)),
        mm_workload("matmul_f32_1024", 1024, |r| setup_matmul(r, 1024, false), |s| gflops(2 * 1024usize.pow(3), s)),
        mm_workload("matmul_f32_2048", 2048, |r| setup_matmul(r, 2048, false), |s| gflops(2 * 2048usize.pow(3), s)),
        Workload {
            name: "matmul_f32_batched_32x128x64x128",
            metric: "GFLOP/s",
            params: obj(vec![
                ("batch", 32usize.into()),
                ("m", 128usize.into()),
                ("k", 64usize.into()),
                ("n", 128usize.into()),
                ("dtype", "float32".into()),
            ]),
            desc: "kiln::ops::matmul (batched)",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| gflops(2 * 32 * 128 * 64 * 128, s),
            setup: setup_matmul_batched,
        },
        mm_workload("matmul_bf16_1024", 1024, |r| setup_matmul(r, 1024, true), |s| gflops(2 * 1024usize.pow(3), s)),
        Workload {
            name: "conv2d_b8_64to64_56x56_k3",
            metric: "GFLOP/s",
            params: obj(vec![
                ("n", CONV[0].into()),
                ("h", CONV[1].into()),
                ("w", CONV[2].into()),
                ("cin", CONV[3].into()),
                ("cout", CONV[4].into()),
                ("k", CONV[5].into()),
                ("padding", 1usize.into()),
                ("dtype", "float32".into()),
                ("layout", "NHWC in, (Cout,kh,kw,Cin) weights; torch: best of NCHW/channels_last".into()),
            ]),
            desc: "kiln::ops::conv2d (NHWC)",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| gflops(2 * CONV[0] * CONV[1] * CONV[2] * CONV[4] * CONV[3] * CONV[5] * CONV[5], s),
            setup: setup_conv2d,
        },
        Workload {
            name: "sort_1m_f32",
            metric: "Melem/s",
            params: obj(vec![("n", SORT_N.into()), ("dtype", "float32".into()), ("axis", (-1i64).into())]),
            desc: "kiln::ops::sort(x, Some(-1))",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| SORT_N as f64 / s / 1e6,
            setup: setup_sort,
        },
        Workload {
            name: "gather_1m_rows",
            metric: "GB/s",
            params: obj(vec![
                ("table", ints(&GATHER_TABLE)),
                ("rows", GATHER_ROWS.into()),
                ("dtype", "float32".into()),
                ("index_dtype", "int32".into()),
            ]),
            desc: "kiln::ops::take(table, idx, Some(0))",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| gbs(2 * 4 * GATHER_ROWS * GATHER_TABLE[1] + 4 * GATHER_ROWS, s),
            setup: setup_gather,
        },
        Workload {
            name: "mlp_train_step_784_512_512_10_b256_sgd",
            metric: "steps/s",
            params: train_mlp_params(),
            desc: "kiln-nn Linear MLP + cross_entropy, kiln-optim SGD, compiled TrainStep, one eval",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| 1.0 / s,
            setup: |rng| setup_train_mlp(rng, true),
        },
        Workload {
            name: "mlp_train_step_784_512_512_10_b256_sgd_eager",
            metric: "steps/s",
            params: train_mlp_params(),
            desc: "kiln-nn Linear MLP + cross_entropy, kiln-optim SGD, op by op, one eval",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| 1.0 / s,
            setup: |rng| setup_train_mlp(rng, false),
        },
        Workload {
            name: "transformer_lm_train_step",
            metric: "tokens/s",
            params: lm_params(),
            desc: "kiln-models Gpt (LayerNorm, causal MHA, GELU MLP, tied head), AdamW, compiled TrainStep",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| (LM_BATCH * LM.context) as f64 / s,
            setup: |rng| setup_lm(rng, true),
        },
        Workload {
            name: "transformer_lm_train_step_eager",
            metric: "tokens/s",
            params: lm_params(),
            desc: "kiln-models Gpt, AdamW, op by op",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| (LM_BATCH * LM.context) as f64 / s,
            setup: |rng| setup_lm(rng, false),
        },
        Workload {
            name: "per_example_grads_vmap",
            metric: "examples/s",
            params: peg_params("vmap"),
            desc: "kiln::vmap(kiln::grad(loss, [0,1,2,3]), [None x4, Some(0), Some(0)])",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| PEG[0] as f64 / s,
            setup: |rng| setup_peg(rng, true),
        },
        Workload {
            name: "per_example_grads_loop",
            metric: "examples/s",
            params: peg_params("loop"),
            desc: "loop of kiln::grad(loss) calls over the rows, one eval",
            warmup: 3,
            budget_scale: 1.0,
            value: |s| PEG[0] as f64 / s,
            setup: |rng| setup_peg(rng, false),
        },
    ]
}

// ---------------------------------------------------------------------------
// Training steps with kiln-nn / kiln-optim
// ---------------------------------------------------------------------------

/// The transformer LM of the train-step workload and its batch.
const LM: kiln_models::gpt::GptConfig =
    kiln_models::gpt::GptConfig { vocab_size: 1000, context: 128, d_model: 256, n_layers: 4, n_heads: 4, d_ff: 1024 };
const LM_BATCH: usize = 16;

fn lm_params() -> Json {
    obj(vec![
        ("layers", LM.n_layers.into()),
        ("d_model", LM.d_model.into()),
        ("heads", LM.n_heads.into()),
        ("ffn", LM.d_ff.into()),
        ("vocab", LM.vocab_size.into()),
        ("seq", LM.context.into()),
        ("batch", LM_BATCH.into()),
        ("dtype", "float32".into()),
        ("optimizer", "AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)".into()),
        (
            "model",
            "pre-norm GPT: learned positions, LayerNorm, causal MHA without bias, GELU(tanh) MLP, tied head".into(),
        ),
    ])
}

fn train_mlp_params() -> Json {
    obj(vec![
        ("sizes", ints(&MLP)),
        ("batch", MLP_BATCH.into()),
        ("dtype", "float32".into()),
        ("optimizer", "SGD(lr=0.01)".into()),
        ("loss", "cross_entropy(relu MLP logits, integer labels), mean over batch".into()),
    ])
}

/// Random integer array in `[0, n)` (int32).
fn ints_below(rng: &mut Rng, shape: &[usize], n: usize) -> R<Array> {
    let v: Vec<i32> = (0..shape.iter().product::<usize>()).map(|_| (rng.next_u64() % n as u64) as i32).collect();
    Ok(Array::from_slice(&v, shape)?)
}

/// One training step per call: `step` advances `model` and `opt`, then the
/// new parameters, optimizer state and loss are evaluated.
fn train_thunk<M, O>(
    mut model: M,
    mut opt: O,
    batch: Vec<Array>,
    loss: fn(&M, &[Array]) -> kiln::Result<Array>,
    compiled: bool,
) -> R<Thunk>
where
    M: kiln_nn::Module + Clone + 'static,
    O: kiln_optim::Optimizer + Clone + 'static,
{
    use kiln_nn::ModuleExt;
    let step = if compiled { Some(kiln_optim::TrainStep::new(&model, &opt, loss, None)?) } else { None };
    let vg = kiln_nn::value_and_grad(loss);
    Ok(Box::new(move || {
        let l = match &step {
            Some(s) => s.run(&mut model, &mut opt, &batch)?,
            None => {
                let (l, grads) = vg(&model, &batch)?;
                opt.update(&mut model, &grads)?;
                l
            }
        };
        let mut live: Vec<Array> = model.named_parameters().into_iter().map(|(_, a)| a).collect();
        live.extend(kiln::tree_flatten(&opt.state()?).into_iter().map(|(_, a)| a));
        live.push(l);
        kiln::eval(&live.iter().collect::<Vec<_>>())?;
        Ok(())
    }))
}

fn setup_lm(rng: &mut Rng, compiled: bool) -> R<Thunk> {
    kiln::random::seed(0);
    let model = kiln_models::gpt::Gpt::new(LM)?;
    let opt = kiln_optim::AdamW::with(1e-3, (0.9, 0.999), 1e-8, 0.01, true)?;
    let batch = vec![
        ints_below(rng, &[LM_BATCH, LM.context], LM.vocab_size)?,
        ints_below(rng, &[LM_BATCH, LM.context], LM.vocab_size)?,
    ];
    train_thunk(model, opt, batch, |m, a| m.loss(&a[0], &a[1]), compiled)
}

/// `--train-memory STEPS`: trains the transformer workload's model for
/// `steps` steps (compiled TrainStep or eager) and reports the active memory
/// (live array buffers, after each step's arrays are dropped) after step 100
/// and after the last step, their relative change and the peak.
fn train_memory(rng: &mut Rng, compiled: bool, steps: usize) -> R<Vec<(&'static str, Json)>> {
    let mb = |b: usize| rnd(b as f64 / 1e6);
    let mut step = setup_lm(rng, compiled)?;
    kiln::reset_peak_memory();
    let t0 = Instant::now();
    let mut at100 = None;
    for i in 1..=steps {
        step()?;
        if i == 100.min(steps) {
            at100 = Some(kiln::get_active_memory());
        }
    }
    let (a, b) = (at100.unwrap_or(0), kiln::get_active_memory());
    eprintln!(
        "[kiln] train memory ({}): active {:.2} MB after step 100, {:.2} MB after step {steps}, peak {:.1} MB, {:.1} s",
        if compiled { "compiled" } else { "eager" },
        a as f64 / 1e6,
        b as f64 / 1e6,
        kiln::get_peak_memory() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(vec![
        ("active_mb_step100", mb(a)),
        ("active_mb_last", mb(b)),
        ("active_change_pct", rnd(if a > 0 { (b as f64 - a as f64) / a as f64 * 100.0 } else { 0.0 })),
        ("peak_active_mb", mb(kiln::get_peak_memory())),
        ("seconds", rnd(t0.elapsed().as_secs_f64())),
    ])
}

/// The MLP of the train-step workload.
#[derive(Clone, kiln_nn::Module)]
struct Mlp {
    layers: Vec<kiln_nn::Linear>,
}

fn mlp_train_loss(m: &Mlp, a: &[Array]) -> kiln::Result<Array> {
    use kiln_nn::Forward;
    let mut h = a[0].clone();
    for (i, l) in m.layers.iter().enumerate() {
        h = l.forward(&h)?;
        if i + 1 < m.layers.len() {
            h = kiln_nn::relu(&h)?;
        }
    }
    kiln_nn::losses::cross_entropy(&h, &a[1], None, -1, 0.0, kiln_nn::losses::Reduction::Mean)
}

fn setup_train_mlp(rng: &mut Rng, compiled: bool) -> R<Thunk> {
    kiln::random::seed(0);
    let layers = MLP.windows(2).map(|w| kiln_nn::Linear::new(w[0], w[1], true)).collect::<kiln::Result<_>>()?;
    let batch = vec![rng.normal_array(&[MLP_BATCH, MLP[0]])?, ints_below(rng, &[MLP_BATCH], MLP[3])?];
    train_thunk(Mlp { layers }, kiln_optim::Sgd::new(0.01), batch, mlp_train_loss, compiled)
}

/// Per-example gradients: batch, input, hidden and output sizes of a 2-layer MLP.
const PEG: [usize; 4] = [128, 64, 128, 10];

fn peg_params(mode: &str) -> Json {
    obj(vec![
        ("batch", PEG[0].into()),
        ("d_in", PEG[1].into()),
        ("hidden", PEG[2].into()),
        ("d_out", PEG[3].into()),
        ("dtype", "float32".into()),
        ("mode", mode.into()),
        ("loss", "mean((tanh(x@W1+b1)@W2+b2 - y)^2) per example, grads of W1,b1,W2,b2".into()),
    ])
}

/// Squared error of a tanh MLP on one example: `[w1, b1, w2, b2, x, y]`.
fn peg_loss(a: &[Array]) -> kiln::Result<Vec<Array>> {
    use kiln::ops;
    let h = ops::tanh(&ops::add(&ops::matmul(&a[4], &a[0])?, &a[1])?)?;
    let d = ops::subtract(&ops::add(&ops::matmul(&h, &a[2])?, &a[3])?, &a[5])?;
    Ok(vec![ops::mean(&ops::multiply(&d, &d)?, kiln::Axes::All, false)?])
}

fn setup_peg(rng: &mut Rng, vmapped: bool) -> R<Thunk> {
    let [b, din, hid, dout] = PEG;
    let small = |a: Array| kiln::ops::multiply(&a, 0.1);
    let w = vec![
        small(rng.normal_array(&[din, hid])?)?,
        small(rng.normal_array(&[hid])?)?,
        small(rng.normal_array(&[hid, dout])?)?,
        small(rng.normal_array(&[dout])?)?,
    ];
    let (x, y) = (rng.normal_array(&[b, din])?, rng.normal_array(&[b, dout])?);
    let all: Vec<&Array> = w.iter().chain([&x, &y]).collect();
    kiln::eval(&all)?;
    let g = kiln::grad(peg_loss, &[0, 1, 2, 3]);
    if vmapped {
        let vg = kiln::vmap(g, &[None, None, None, None, Some(0), Some(0)], &[0]);
        let args: Vec<Array> = w.iter().cloned().chain([x, y]).collect();
        return Ok(Box::new(move || {
            let out = vg(&args)?;
            kiln::eval(&out.iter().collect::<Vec<_>>())?;
            Ok(())
        }));
    }
    Ok(Box::new(move || {
        let mut out = Vec::with_capacity(4 * b);
        for i in 0..b as i32 {
            let row = |a: &Array| kiln::ops::take(a, &Array::scalar(i), Some(0));
            let mut args = w.clone();
            args.push(row(&x)?);
            args.push(row(&y)?);
            out.extend(g(&args)?);
        }
        kiln::eval(&out.iter().collect::<Vec<_>>())?;
        Ok(())
    }))
}

fn setup_matmul(rng: &mut Rng, n: usize, bf16: bool) -> R<Thunk> {
    let (mut a, mut b) = (rng.normal_array(&[n, n])?, rng.normal_array(&[n, n])?);
    if bf16 {
        a = kiln::ops::astype(&a, kiln::Dtype::BF16)?;
        b = kiln::ops::astype(&b, kiln::Dtype::BF16)?;
        kiln::eval(&[&a, &b])?;
    }
    Ok(Box::new(move || {
        kiln::ops::matmul(&a, &b)?.eval()?;
        Ok(())
    }))
}

fn setup_matmul_batched(rng: &mut Rng) -> R<Thunk> {
    let (a, b) = (rng.normal_array(&[32, 128, 64])?, rng.normal_array(&[32, 64, 128])?);
    Ok(Box::new(move || {
        kiln::ops::matmul(&a, &b)?.eval()?;
        Ok(())
    }))
}

fn setup_conv2d(rng: &mut Rng) -> R<Thunk> {
    let [n, h, w, cin, cout, k] = CONV;
    let x = rng.normal_array(&[n, h, w, cin])?;
    let wt = rng.normal_array(&[cout, k, k, cin])?;
    Ok(Box::new(move || {
        kiln::ops::conv2d(&x, &wt, [1, 1], [1, 1], [1, 1], 1)?.eval()?;
        Ok(())
    }))
}

fn setup_sort(rng: &mut Rng) -> R<Thunk> {
    let x = rng.normal_array(&[SORT_N])?;
    Ok(Box::new(move || {
        kiln::ops::sort(&x, Some(-1))?.eval()?;
        Ok(())
    }))
}

fn setup_gather(rng: &mut Rng) -> R<Thunk> {
    let t = rng.normal_array(&GATHER_TABLE)?;
    let idx: Vec<i32> = (0..GATHER_ROWS).map(|_| (rng.next_u64() % GATHER_TABLE[0] as u64) as i32).collect();
    let idx = Array::from_vec(idx, &[GATHER_ROWS])?;
    Ok(Box::new(move || {
        kiln::ops::take(&t, &idx, Some(0))?.eval()?;
        Ok(())
    }))
}

/// `gelu_tanh(x*1.5+0.5)` spelled as the same 11 elementwise ops as the peers:
/// `z = x*1.5+0.5; 0.5*z*(1+tanh(c*(z + 0.044715*z*z*z)))`.
fn gelu_chain(x: &Array) -> R<Array> {
    let z = &(x * 1.5) + 0.5;
    let z3 = &(&(0.044715 * &z) * &z) * &z;
    let inner = GELU_C * &(&z + &z3);
    let t = kiln::ops::tanh(&inner)?;
    Ok(&(0.5 * &z) * &(1.0 + &t))
}

fn setup_gelu(rng: &mut Rng) -> R<Thunk> {
    let x = rng.normal_array(&[ELEM_N])?;
    Ok(Box::new(move || {
        let y = gelu_chain(&x)?;
        y.eval()?;
        Ok(())
    }))
}

fn setup_gelu_compiled(rng: &mut Rng) -> R<Thunk> {
    let x = rng.normal_array(&[ELEM_N])?;
    let g = kiln::compile(|v: &[Array]| {
        Ok(vec![gelu_chain(&v[0]).map_err(|e| kiln::Error::runtime("gelu", e.to_string()))?])
    });
    Ok(Box::new(move || {
        let y = g(std::slice::from_ref(&x))?;
        y[0].eval()?;
        Ok(())
    }))
}

/// Layer sizes and batch of the MLP workloads.
const MLP: [usize; 4] = [784, 512, 512, 10];
const MLP_BATCH: usize = 256;

fn mlp_params(mode: &str) -> Json {
    obj(vec![
        ("sizes", ints(&MLP)),
        ("batch", MLP_BATCH.into()),
        ("dtype", "float32".into()),
        ("loss", "cross_entropy(relu MLP logits, one-hot), mean over batch".into()),
        ("mode", mode.into()),
    ])
}

/// `xs = [x, onehot, w1, b1, w2, b2, w3, b3]` -> mean cross-entropy.
fn mlp_loss(xs: &[Array]) -> kiln::Result<Vec<Array>> {
    use kiln::ops;
    let mut h = xs[0].clone();
    for l in 0..3 {
        h = ops::add(&ops::matmul(&h, &xs[2 + 2 * l])?, &xs[3 + 2 * l])?;
        if l < 2 {
            h = ops::maximum(&h, 0.0)?;
        }
    }
    let lse = ops::logsumexp(&h, -1, false)?;
    let picked = ops::sum(&ops::multiply(&h, &xs[1])?, -1, false)?;
    Ok(vec![ops::mean(&ops::subtract(&lse, &picked)?, None::<i32>, false)?])
}

/// A value-and-grad step: inputs -> [loss, grads...].
type StepFn = Box<dyn Fn(&[Array]) -> kiln::Result<Vec<Array>>>;

fn setup_mlp(rng: &mut Rng, compiled: bool) -> R<Thunk> {
    let mut xs = vec![rng.normal_array(&[MLP_BATCH, MLP[0]])?];
    let labels: Vec<f32> =
        (0..MLP_BATCH * MLP[3]).map(|i| if i % MLP[3] == (i / MLP[3]) % MLP[3] { 1.0 } else { 0.0 }).collect();
    xs.push(Array::from_slice(&labels, &[MLP_BATCH, MLP[3]])?);
    for w in MLP.windows(2) {
        let scale = 1.0 / (w[0] as f64).sqrt();
        xs.push(kiln::ops::multiply(&rng.normal_array(&[w[0], w[1]])?, scale)?);
        xs.push(kiln::ops::zeros(&[w[1]], kiln::Dtype::F32)?);
    }
    kiln::eval(&xs.iter().collect::<Vec<_>>())?;
    let argnums: Vec<usize> = (2..8).collect();
    let step: StepFn = if compiled {
        let vg = kiln::value_and_grad(mlp_loss, &argnums);
        Box::new(kiln::compile(move |a: &[Array]| {
            let (mut v, g) = vg(a)?;
            v.extend(g);
            Ok(v)
        }))
    } else {
        let vg = kiln::value_and_grad(mlp_loss, &argnums);
        Box::new(move |a: &[Array]| {
            let (mut v, g) = vg(a)?;
            v.extend(g);
            Ok(v)
        })
    };
    Ok(Box::new(move || {
        let outs = step(&xs)?;
        kiln::eval(&outs.iter().collect::<Vec<_>>())?;
        Ok(())
    }))
}

fn setup_sum(rng: &mut Rng) -> R<Thunk> {
    let x = rng.normal_array(&[RED_ROWS, RED_COLS])?;
    Ok(Box::new(move || {
        let y = kiln::ops::sum(&x, -1, false)?;
        y.eval()?;
        Ok(())
    }))
}

fn setup_softmax(rng: &mut Rng) -> R<Thunk> {
    let x = rng.normal_array(&[RED_ROWS, RED_COLS])?;
    Ok(Box::new(move || {
        let y = kiln::ops::softmax(&x, -1, false)?;
        y.eval()?;
        Ok(())
    }))
}

fn setup_chain(rng: &mut Rng) -> R<Thunk> {
    let x = rng.normal_array(&[CHAIN_N])?;
    Ok(Box::new(move || {
        let mut y = x.clone();
        for _ in 0..CHAIN_LEN {
            y = &y + &x;
        }
        kiln::eval(&[&y])?;
        Ok(())
    }))
}

// ---------------------------------------------------------------------------
// Random inputs: xorshift64* + Box-Muller (standard normal f32)
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let r = (-2.0 * self.uniform().ln()).sqrt();
            let th = 2.0 * std::f64::consts::PI * self.uniform();
            v.push((r * th.cos()) as f32);
            v.push((r * th.sin()) as f32);
        }
        v.truncate(n);
        v
    }
    /// An evaluated f32 array of standard normals.
    fn normal_array(&mut self, shape: &[usize]) -> R<Array> {
        let n = shape.iter().product();
        let a = Array::from_vec(self.normal_vec(n), shape)?;
        a.eval()?;
        Ok(a)
    }
}

// ---------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------

struct Opts {
    only: Vec<String>,
    repeats: usize,
    min_window: f64,
    budget: f64,
    wait_quiet: f64,
    quiet_threshold: f64,
    list: bool,
    /// `--train-memory STEPS`: the memory run instead of the workloads.
    train_memory: Option<usize>,
}

struct Timing {
    median_s: f64,
    min_s: f64,
    n: usize,
    cpu_util: Option<f64>,
    first_s: f64,
    other_load: Option<f64>,
    window_s: f64,
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod sys {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        fn sysconf(name: i32) -> i64;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    const SC_CLK_TCK: i32 = 2;

    /// CPU seconds used by this process (all threads).
    pub fn process_cpu_s() -> Option<f64> {
        let mut t = Timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `t` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut t) };
        (rc == 0).then_some(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9)
    }

    /// Busy CPU seconds of the whole machine so far (all processes), from /proc/stat.
    pub fn machine_busy_s() -> Option<f64> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<f64> = s.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
        if v.len() < 8 {
            return None;
        }
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { sysconf(SC_CLK_TCK) };
        let tck = if tck > 0 { tck as f64 } else { 100.0 };
        Some((v.iter().sum::<f64>() - v[3] - v[4]) / tck)
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
mod sys {
    pub fn process_cpu_s() -> Option<f64> {
        None
    }
    pub fn machine_busy_s() -> Option<f64> {
        None
    }
}

/// Waits up to `o.wait_quiet` s for other processes to use fewer than
/// `o.quiet_threshold` cores (1 s samples); returns the last sample's load.
fn wait_quiet(o: &Opts) -> Option<f64> {
    if o.wait_quiet <= 0.0 {
        return None;
    }
    let end = Instant::now();
    loop {
        let (b0, c0, w0) = (sys::machine_busy_s()?, sys::process_cpu_s()?, Instant::now());
        std::thread::sleep(std::time::Duration::from_secs(1));
        let other = ((sys::machine_busy_s()? - b0) - (sys::process_cpu_s()? - c0)) / w0.elapsed().as_secs_f64();
        if other < o.quiet_threshold || end.elapsed().as_secs_f64() > o.wait_quiet {
            return Some(round2(other.max(0.0)));
        }
    }
}

fn bench(f: &mut Thunk, warmup: usize, budget_scale: f64, o: &Opts) -> R<Timing> {
    let budget = o.budget * budget_scale;
    let t0 = Instant::now();
    f()?;
    let first = t0.elapsed().as_secs_f64();
    for _ in 1..warmup {
        // further warm-up only while cheap
        if first > budget / 6.0 {
            break;
        }
        f()?;
    }
    let mut times = Vec::new();
    let (b0, c0) = (sys::machine_busy_s(), sys::process_cpu_s());
    let w0 = Instant::now();
    loop {
        let s = Instant::now();
        f()?;
        let dt = OWN_SECONDS.with(|c| c.take()).unwrap_or_else(|| s.elapsed().as_secs_f64());
        let since = w0.elapsed().as_secs_f64();
        times.push(dt);
        if since > budget && times.len() >= 3 {
            break;
        }
        if times.len() >= o.repeats && since >= o.min_window {
            break;
        }
        if times.len() >= 20000 {
            break;
        }
    }
    let wall = w0.elapsed().as_secs_f64();
    let cpu = match (c0, sys::process_cpu_s()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let other = match (b0, sys::machine_busy_s(), cpu) {
        // /proc/stat ticks are 10 ms: meaningless on short windows.
        (Some(a), Some(b), Some(c)) if wall >= 0.25 => Some(round2(((b - a - c) / wall).max(0.0))),
        _ => None,
    };
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
    Ok(Timing {
        median_s: median,
        min_s: sorted[0],
        n,
        cpu_util: cpu.map(|c| round2(c / wall)),
        first_s: first,
        other_load: other,
        window_s: wall,
    })
}

/// Peak resident memory of this process so far (MB, `VmHWM`): run one
/// workload alone (`--only NAME`) for its own peak.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 102.4).round() / 10.0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Same rounding as peers.py: 4 significant digits below 1, else 4 decimals.
fn rnd(x: f64) -> Json {
    if !x.is_finite() {
        return Json::Null;
    }
    let v = if x.abs() < 1.0 {
        if x == 0.0 {
            0.0
        } else {
            let mag = 10f64.powi(3 - x.abs().log10().floor() as i32);
            (x * mag).round() / mag
        }
    } else {
        (x * 1e4).round() / 1e4
    };
    // Go through the decimal string so that the printed value is the short one.
    Json::Num(format!("{v:.12}").parse().unwrap_or(v))
}

// ---------------------------------------------------------------------------
// Minimal JSON writer (no serde)
// ---------------------------------------------------------------------------

#[derive(Clone)]
enum Json {
    Null,
    Num(f64),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

fn obj(fields: Vec<(&str, Json)>) -> Json {
    Json::Obj(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}
impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}
impl From<usize> for Json {
    fn from(x: usize) -> Json {
        Json::Int(x as i64)
    }
}
impl From<i64> for Json {
    fn from(x: i64) -> Json {
        Json::Int(x)
    }
}
impl From<Option<f64>> for Json {
    fn from(x: Option<f64>) -> Json {
        match x {
            Some(v) if v.is_finite() => Json::Num(v),
            _ => Json::Null,
        }
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Num(x) if !x.is_finite() => f.write_str("null"),
            Json::Num(x) if x.fract() == 0.0 && x.abs() < 1e15 => write!(f, "{x:.1}"),
            Json::Num(x) => write!(f, "{x}"),
            Json::Int(x) => write!(f, "{x}"),
            Json::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\r' => f.write_str("\\r")?,
                        '\t' => f.write_str("\\t")?,
                        c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            Json::Arr(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Json::Obj(v) => {
                f.write_str("{")?;
                for (i, (k, x)) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {x}", Json::Str(k.clone()))?;
                }
                f.write_str("}")
            }
        }
    }
}

fn emit(rec: &Json) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{rec}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

/// `--only`: comma-separated names, name prefixes, or globs with `*`.
fn selected(name: &str, only: &[String]) -> bool {
    only.is_empty() || only.iter().any(|p| name.starts_with(p.as_str()) || glob(p.as_bytes(), name.as_bytes()))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| glob(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && glob(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

const USAGE: &str = "usage: kiln-bench [--only NAME,...] [--quick] [--repeats N] [--min-window S] \
[--budget S] [--wait-quiet S] [--quiet-threshold CORES] [--list] [--train-memory STEPS]";

fn parse_args() -> R<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut quick = false;
    let (mut only, mut repeats, mut min_window, mut budget) = (Vec::new(), None, None, None);
    let (mut wait_quiet, mut quiet_threshold, mut list) = (0.0, 0.25, false);
    let mut train_memory = None;
    let mut i = 0;
    while i < args.len() {
        // accept both "--flag value" and "--flag=value"
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) if args[i].starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (args[i].clone(), None),
        };
        let mut value = || -> R<String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i).cloned().ok_or_else(|| format!("{flag} needs a value\n{USAGE}").into())
        };
        match flag.as_str() {
            "--only" => only = value()?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            "--quick" => quick = true,
            "--repeats" => repeats = Some(value()?.parse()?),
            "--min-window" => min_window = Some(value()?.parse()?),
            "--budget" => budget = Some(value()?.parse()?),
            "--wait-quiet" => wait_quiet = value()?.parse()?,
            "--quiet-threshold" => quiet_threshold = value()?.parse()?,
            "--list" => list = true,
            "--train-memory" => train_memory = Some(value()?.parse()?),
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
        i += 1;
    }
    Ok(Opts {
        only,
        repeats: repeats.unwrap_or(if quick { 5 } else { 20 }),
        min_window: min_window.unwrap_or(if quick { 0.3 } else { 1.0 }),
        budget: budget.unwrap_or(if quick { 3.0 } else { 15.0 }),
        wait_quiet,
        quiet_threshold,
        list,
        train_memory,
    })
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kiln-bench: {e}");
            std::process::exit(2);
        }
    };
    let mut all = workloads();
    all.extend(llm::workloads());
    if o.list {
        for w in &all {
            println!("{}", w.name);
        }
        return;
    }
    let version = std::env::var("KILN_BENCH_REV").unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string());
    let mut rng = Rng::new(0);
    if let Some(steps) = o.train_memory {
        for compiled in [true, false] {
            match train_memory(&mut rng, compiled, steps) {
                Ok(fields) => {
                    let name =
                        if compiled { "transformer_lm_train_memory" } else { "transformer_lm_train_memory_eager" };
                    let mut rec = vec![
                        ("framework", Json::from("kiln")),
                        ("workload", name.into()),
                        ("params", lm_params()),
                        ("version", version.as_str().into()),
                        ("steps", steps.into()),
                    ];
                    rec.extend(fields);
                    println!("{}", obj(rec));
                }
                Err(e) => {
                    eprintln!("kiln-bench: train memory run failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        return;
    }
    for w in all.iter().filter(|w| selected(w.name, &o.only)) {
        let base = vec![
            ("framework", Json::from("kiln")),
            ("workload", w.name.into()),
            ("params", w.params.clone()),
            ("metric", w.metric.into()),
            ("version", version.as_str().into()),
        ];
        let quiet = wait_quiet(&o);
        kiln::profile::reset();
        // A panicking workload (an op that panics instead of returning an error)
        // is reported as failed and the others still run.
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (w.setup)(&mut rng).and_then(|mut f| bench(&mut f, w.warmup, w.budget_scale, &o))
        }))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(format!("panicked: {msg}").into())
        });
        let mut rec = base;
        match res {
            Ok(t) => {
                let value = (w.value)(t.median_s);
                let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v}"));
                eprintln!(
                    "[kiln] {}: {:.4} {} (median {:.4} ms, n={}, cpu_util {}, other_load {})",
                    w.name,
                    value,
                    w.metric,
                    t.median_s * 1e3,
                    t.n,
                    opt(t.cpu_util),
                    opt(t.other_load)
                );
                if kiln::profile::enabled() {
                    eprint!("{}", kiln::profile::report());
                }
                rec.extend([
                    ("median_ms", rnd(t.median_s * 1e3)),
                    ("min_ms", rnd(t.min_s * 1e3)),
                    ("repeats", t.n.into()),
                    ("value", rnd(value)),
                    ("cpu_util", t.cpu_util.into()),
                    ("impl", w.desc.into()),
                    ("first_call_ms", rnd(t.first_s * 1e3)),
                    ("timed_window_s", Json::Num((t.window_s * 1e3).round() / 1e3)),
                    ("other_load", t.other_load.into()),
                    ("quiet_wait_load", quiet.into()),
                    ("peak_rss_mb", peak_rss_mb().into()),
                ]);
            }
            Err(e) => {
                eprintln!("[kiln] {}: failed: {e}", w.name);
                let reason: String = format!("{e}").chars().take(400).collect();
                rec.extend([
                    ("status", Json::from("failed")),
                    ("reason", reason.into()),
                    ("median_ms", Json::Null),
                    ("min_ms", Json::Null),
                    ("repeats", 0usize.into()),
                    ("value", Json::Null),
                    ("cpu_util", Json::Null),
                ]);
            }
        }
        emit(&obj(rec));
    }
}
