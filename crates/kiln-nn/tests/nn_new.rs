//! kiln-nn's recurrent layers, transformer decoder / transformer and upsampling
//! against MLX 0.32.4 (golden/nn_new.json, written by golden/gen_nn_new.py).

#[path = "golden_util.rs"]
mod golden_util;

use golden_util::{arr, assert_close};
use kiln_core::io::ArrayMap;
use kiln_core::{ops, random, Array, Dtype, Result};
use kiln_nn::{self as nn, AttentionMask, FeedForwardActivation, Forward, Module, ModuleExt};
use serde_json::Value;
use std::sync::Mutex;

/// Layer constructors draw from the global key sequence; the test of MLX's
/// initialisation needs it to itself.
static RNG: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/nn_new.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("valid JSON")
}

/// A golden tensor, booleans included.
fn tensor(v: &Value) -> Array {
    if v["dtype"] == "bool" {
        let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let data: Vec<bool> = v["data"].as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect();
        return Array::from_slice(&data, &shape).unwrap();
    }
    arr(v)
}

fn keys(case: &Value) -> Vec<String> {
    let mut k: Vec<String> = case["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
    k.sort();
    k
}

/// Loads MLX's parameters by name (strictly: every key must match) and checks
/// that the module has exactly MLX's keys.
fn load_mlx<M: Module>(what: &str, m: &mut M, case: &Value) {
    let mut mine: Vec<String> = m.named_parameters().into_iter().map(|(k, _)| k).collect();
    mine.sort();
    assert_eq!(mine, keys(case), "{what}: parameter keys");
    let flat: Vec<String> = kiln_core::tree_flatten(&m.parameters()).into_iter().map(|(k, _)| k).collect();
    let mut flat_sorted = flat.clone();
    flat_sorted.sort();
    assert_eq!(flat_sorted, keys(case), "{what}: parameters() keys");
    let arrays: ArrayMap = case["params"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), arr(v))).collect();
    let report = m.load_arrays(arrays, true).unwrap();
    assert!(report.is_exact(), "{what}: {report:?}");
}

fn opt(case: &Value, key: &str) -> Option<Array> {
    case.get(key).map(arr)
}

// ---------------------------------------------------------------- recurrent

#[test]
fn recurrent_layers_match_mlx() {
    let _g = lock();
    let g = golden();
    let cases = g["recurrent"].as_array().unwrap();
    assert_eq!(cases.len(), 19);
    for (ci, case) in cases.iter().enumerate() {
        let kind = case["kind"].as_str().unwrap();
        let (d, h) = (case["input_size"].as_u64().unwrap() as usize, case["hidden_size"].as_u64().unwrap() as usize);
        let bias = case["bias"].as_bool().unwrap();
        let what = format!("{kind} case {ci} (bias {bias})");
        let x = arr(&case["x"]);
        let hidden = opt(case, "hidden");
        match kind {
            "RNN" => {
                let mut m = nn::RNN::new(d, h, bias).unwrap();
                if case["nonlinearity"] == "relu" {
                    m = m.with_nonlinearity(nn::RnnNonlinearity::Relu);
                }
                load_mlx(&what, &mut m, case);
                assert_close(&what, &m.apply(&x, hidden.as_ref()).unwrap(), &case["out"], 1e-5);
                if hidden.is_none() {
                    assert_close(&what, &m.forward(&x).unwrap(), &case["out"], 1e-5);
                }
            }
            "GRU" => {
                let mut m = nn::GRU::new(d, h, bias).unwrap();
                load_mlx(&what, &mut m, case);
                assert_close(&what, &m.apply(&x, hidden.as_ref()).unwrap(), &case["out"], 1e-5);
            }
            "LSTM" => {
                let mut m = nn::LSTM::new(d, h, bias).unwrap();
                load_mlx(&what, &mut m, case);
                let cell = opt(case, "cell");
                let (hs, cs) = m.apply(&x, hidden.as_ref(), cell.as_ref()).unwrap();
                assert_close(&what, &hs, &case["out"], 1e-5);
                assert_close(&format!("{what} cell"), &cs, &case["out_cell"], 1e-5);
            }
            k => panic!("unknown kind {k}"),
        }
    }
}

#[test]
fn recurrent_init_draws_what_mlx_draws() {
    let _g = lock();
    let g = golden();
    let first = &g["recurrent"][0];
    assert_eq!(first["kind"], "RNN");
    // gen_nn_new.py seeds 7 and builds nn.RNN(3, 4) first.
    random::seed(7);
    let m = nn::RNN::new(3, 4, true).unwrap();
    for (k, a) in m.named_parameters() {
        assert_close(&format!("RNN init {k}"), &a, &first["params"][k.as_str()], 1e-6);
    }
    // Every recurrent parameter is uniform in ±1/√H with MLX's shapes.
    let gru = nn::GRU::new(3, 16, true).unwrap();
    let lstm = nn::LSTM::new(3, 16, true).unwrap();
    let shapes = |m: &dyn Fn() -> Vec<(String, Array)>| -> Vec<(String, Vec<usize>)> {
        m().into_iter().map(|(k, a)| (k, a.shape().to_vec())).collect()
    };
    let s = |v: &[(&str, &[usize])]| -> Vec<(String, Vec<usize>)> {
        v.iter().map(|(k, s)| (k.to_string(), s.to_vec())).collect()
    };
    assert_eq!(
        shapes(&|| gru.named_parameters()),
        s(&[("Wx", &[48, 3]), ("Wh", &[48, 16]), ("b", &[48]), ("bhn", &[16])])
    );
    assert_eq!(shapes(&|| lstm.named_parameters()), s(&[("Wx", &[64, 3]), ("Wh", &[64, 16]), ("bias", &[64])]));
    for (k, a) in gru.named_parameters().into_iter().chain(lstm.named_parameters()) {
        let v = a.to_vec::<f32>().unwrap();
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max <= 0.25 && max > 0.2, "{k}: max |w| = {max}");
    }
    assert!(nn::GRU::new(3, 4, false).unwrap().named_parameters().len() == 2);
}

/// A model's parameters and the given inputs as float64.
fn to_f64<M: Module>(m: &mut M) {
    m.visit_params_mut("", &mut |_, p| p.set(ops::astype(p.value(), Dtype::F64).unwrap()));
}

fn f64_array(shape: &[usize], seed: u64) -> Array {
    random::seed(seed);
    ops::astype(&random::normal(shape, Dtype::F32, None, None, None).unwrap(), Dtype::F64).unwrap()
}

/// Central finite differences (float64) of `loss(model, inputs)` against its
/// gradient, for every element of every parameter and input.
fn check_grad<M: Module + Clone>(
    what: &str,
    model: &M,
    inputs: &[Array],
    loss: impl Fn(&M, &[Array]) -> Result<Array>,
) {
    let params = model.named_parameters();
    let n = params.len();
    let mut all: Vec<Array> = params.iter().map(|(_, a)| a.clone()).collect();
    all.extend(inputs.iter().cloned());
    let names: Vec<String> =
        params.iter().map(|(k, _)| k.clone()).chain((0..inputs.len()).map(|i| format!("input {i}"))).collect();
    let keys: Vec<String> = params.iter().map(|(k, _)| k.clone()).collect();
    let f = |xs: &[Array]| -> Result<Vec<Array>> {
        let mut m = model.clone();
        m.visit_params_mut("", &mut |k, p| {
            if let Some(i) = keys.iter().position(|q| q == k) {
                p.set(xs[i].clone());
            }
        });
        Ok(vec![loss(&m, &xs[n..])?])
    };
    let argnums: Vec<usize> = (0..all.len()).collect();
    let (_, grads) = kiln_core::value_and_grad(f, &argnums)(&all).unwrap();
    let value = |xs: &[Array]| f(xs).unwrap()[0].item::<f64>().unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for (j, a) in all.iter().enumerate() {
        assert_eq!(grads[j].shape(), a.shape(), "{what} {}: gradient shape", names[j]);
        let g = grads[j].to_vec::<f64>().unwrap();
        let base = a.to_vec::<f64>().unwrap();
        for e in 0..base.len() {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[e] += delta;
                let mut xs = all.clone();
                xs[j] = Array::from_slice(&v, a.shape()).unwrap();
                value(&xs)
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (fd - g[e]).abs() <= 1e-6 * g[e].abs().max(1.0),
                "{what} d/d{}[{e}]: finite difference {fd}, gradient {}",
                names[j],
                g[e]
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{what}: only {checked} elements checked");
}

fn weighted_sum(y: &Array, w: &Array) -> Result<Array> {
    ops::sum(&ops::multiply(y, w)?, ops::Axes::All, false)
}

#[test]
fn recurrent_gradients_match_finite_differences() {
    let _g = lock();
    let (d, h, l, b) = (3, 4, 4, 2);
    let x = f64_array(&[b, l, d], 1);
    let h0 = f64_array(&[b, h], 2);
    let c0 = f64_array(&[b, h], 3);
    let w = f64_array(&[b, l, h], 4);
    let w2 = f64_array(&[b, l, h], 5);

    random::seed(10);
    let mut rnn = nn::RNN::new(d, h, true).unwrap();
    to_f64(&mut rnn);
    check_grad("RNN", &rnn, &[x.clone(), h0.clone()], |m, a| weighted_sum(&m.apply(&a[0], Some(&a[1]))?, &w));
    let relu_rnn = rnn.clone().with_nonlinearity(nn::RnnNonlinearity::Relu);
    check_grad("RNN relu", &relu_rnn, &[x.clone()], |m, a| weighted_sum(&m.forward(&a[0])?, &w));

    let mut gru = nn::GRU::new(d, h, true).unwrap();
    to_f64(&mut gru);
    check_grad("GRU", &gru, &[x.clone(), h0.clone()], |m, a| weighted_sum(&m.apply(&a[0], Some(&a[1]))?, &w));
    check_grad("GRU no state", &gru, &[x.clone()], |m, a| weighted_sum(&m.apply(&a[0], None)?, &w));

    let mut lstm = nn::LSTM::new(d, h, true).unwrap();
    to_f64(&mut lstm);
    check_grad("LSTM", &lstm, &[x.clone(), h0, c0], |m, a| {
        let (hs, cs) = m.apply(&a[0], Some(&a[1]), Some(&a[2]))?;
        ops::add(&weighted_sum(&hs, &w)?, &weighted_sum(&cs, &w2)?)
    });
    // The gradient also reaches the model through nn::value_and_grad.
    let vg = nn::value_and_grad(|m: &nn::LSTM, a: &[Array]| weighted_sum(&m.apply(&a[0], None, None)?.0, &w));
    let (_, grads) = vg(&lstm, &[x]).unwrap();
    let gk: Vec<String> = kiln_core::tree_flatten(&grads).into_iter().map(|(k, _)| k).collect();
    assert_eq!(gk, ["Wh", "Wx", "bias"]);
}

#[test]
fn recurrent_bad_inputs_are_errors() {
    let _g = lock();
    let rnn = nn::RNN::new(3, 4, true).unwrap();
    let gru = nn::GRU::new(3, 4, true).unwrap();
    let lstm = nn::LSTM::new(3, 4, false).unwrap();
    let z = |s: &[usize]| ops::zeros(s, Dtype::F32).unwrap();
    for x in [z(&[2, 5, 2]), z(&[5]), z(&[]), z(&[2, 0, 3])] {
        assert!(rnn.apply(&x, None).is_err(), "RNN {:?}", x.shape());
        assert!(gru.apply(&x, None).is_err(), "GRU {:?}", x.shape());
        assert!(lstm.apply(&x, None, None).is_err(), "LSTM {:?}", x.shape());
    }
    let x = z(&[2, 5, 3]);
    for s in [z(&[2, 3]), z(&[]), z(&[3, 4])] {
        assert!(rnn.apply(&x, Some(&s)).is_err(), "RNN hidden {:?}", s.shape());
        assert!(gru.apply(&x, Some(&s)).is_err(), "GRU hidden {:?}", s.shape());
        assert!(lstm.apply(&x, Some(&s), None).is_err(), "LSTM hidden {:?}", s.shape());
    }
    // As in MLX, an unbatched (H,) state with a batched input fails in the
    // addmm of RNN and LSTM but broadcasts in GRU.
    assert!(rnn.apply(&x, Some(&z(&[4]))).is_err());
    assert!(lstm.apply(&x, Some(&z(&[4])), None).is_err());
    assert_eq!(gru.apply(&x, Some(&z(&[4]))).unwrap().shape(), &[2, 5, 4]);
    assert!(lstm.apply(&x, None, Some(&z(&[2, 5]))).is_err());
    // The right shapes work, batched and unbatched, with more leading axes too.
    assert_eq!(rnn.apply(&x, Some(&z(&[2, 4]))).unwrap().shape(), &[2, 5, 4]);
    assert_eq!(gru.apply(&z(&[5, 3]), Some(&z(&[4]))).unwrap().shape(), &[5, 4]);
    assert_eq!(lstm.apply(&z(&[2, 2, 5, 3]), None, None).unwrap().1.shape(), &[2, 2, 5, 4]);
}

// ---------------------------------------------------------------- transformer

fn activation(case: &Value) -> FeedForwardActivation {
    match case["activation"].as_str().unwrap() {
        "relu" => FeedForwardActivation::Relu,
        "gelu" => FeedForwardActivation::Gelu,
        a => panic!("unknown activation {a}"),
    }
}

#[test]
fn transformer_layers_match_mlx() {
    let _g = lock();
    let g = golden();
    let t = &g["transformer"];
    let (dims, heads, mlp) = (
        t["dims"].as_u64().unwrap() as usize,
        t["num_heads"].as_u64().unwrap() as usize,
        t["mlp_dims"].as_u64().unwrap() as usize,
    );
    let (src, tgt) = (arr(&t["src"]), arr(&t["tgt"]));
    let tgt_mask = AttentionMask::Array(tensor(&t["tgt_mask"]));
    let mem_mask = tensor(&t["memory_mask"]);
    assert_eq!(mem_mask.dtype(), Dtype::Bool);
    let mem_mask = AttentionMask::Array(mem_mask);
    let src_mask = AttentionMask::Array(tensor(&t["src_mask"]));
    let cases = t["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for (ci, case) in cases.iter().enumerate() {
        let kind = case["kind"].as_str().unwrap();
        let norm_first = case["norm_first"].as_bool().unwrap();
        let what = format!("{kind} case {ci} (norm_first {norm_first})");
        let act = activation(case);
        let y = match kind {
            "TransformerDecoderLayer" => {
                let mut m = nn::TransformerDecoderLayer::new(dims, heads, Some(mlp), 0.0, norm_first)
                    .unwrap()
                    .with_activation(act);
                load_mlx(&what, &mut m, case);
                m.apply(&tgt, &src, Some(&tgt_mask), Some(&mem_mask)).unwrap()
            }
            "TransformerDecoder" => {
                let mut m = nn::TransformerDecoder::new(2, dims, heads, Some(mlp), 0.0, norm_first)
                    .unwrap()
                    .with_activation(act);
                load_mlx(&what, &mut m, case);
                m.apply(&tgt, &src, Some(&tgt_mask), None).unwrap()
            }
            "Transformer" => {
                let mut m =
                    nn::Transformer::new(dims, heads, 1, 2, Some(mlp), 0.0, norm_first).unwrap().with_activation(act);
                load_mlx(&what, &mut m, case);
                m.apply(&src, &tgt, Some(&src_mask), Some(&tgt_mask), Some(&mem_mask)).unwrap()
            }
            k => panic!("unknown kind {k}"),
        };
        assert_close(&what, &y, &case["out"], 1e-5);
    }
}

/// A custom encoder: one linear map of the source (MLX's `custom_encoder`).
#[derive(Clone, nn::Module)]
struct ProjEncoder {
    proj: nn::Linear,
}

impl nn::TransformerEncoderModule for ProjEncoder {
    fn encode(&self, src: &Array, _mask: Option<&AttentionMask>) -> Result<Array> {
        self.proj.forward(src)
    }
}

#[test]
fn transformer_custom_parts_dropout_and_errors() {
    let _g = lock();
    random::seed(5);
    let dec = nn::TransformerDecoder::new(1, 8, 2, None, 0.0, false).unwrap();
    let m = nn::Transformer::from_parts(ProjEncoder { proj: nn::Linear::new(6, 8, true).unwrap() }, dec.clone());
    let mut k: Vec<String> = m.named_parameters().into_iter().map(|(k, _)| k).collect();
    k.sort();
    assert!(
        k.contains(&"encoder.proj.weight".to_string()) && k.contains(&"decoder.layers.0.linear1.weight".to_string())
    );
    assert_eq!(k.iter().filter(|k| k.starts_with("decoder.layers.0.")).count(), 18);
    let src = f64_array(&[2, 5, 6], 1);
    let src = ops::astype(&src, Dtype::F32).unwrap();
    let tgt = ops::astype(&f64_array(&[2, 3, 8], 2), Dtype::F32).unwrap();
    let y = m.apply(&src, &tgt, None, Some(&AttentionMask::Causal), None).unwrap();
    let memory = m.encoder.proj.forward(&src).unwrap();
    let want = dec.apply(&tgt, &memory, Some(&AttentionMask::Causal), None).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    assert_eq!(y.shape(), &[2, 3, 8]);

    // Dropout: active in training mode, the identity in evaluation mode.
    let mut layer = nn::TransformerDecoderLayer::new(8, 2, None, 0.5, true).unwrap();
    let mut plain = layer.clone();
    plain.dropout1 = nn::Dropout::new(0.0).unwrap();
    plain.dropout2 = nn::Dropout::new(0.0).unwrap();
    plain.dropout3 = nn::Dropout::new(0.0).unwrap();
    let mem = ops::astype(&f64_array(&[2, 4, 8], 3), Dtype::F32).unwrap();
    let base = plain.apply(&tgt, &mem, None, None).unwrap().to_vec::<f32>().unwrap();
    let train = layer.apply(&tgt, &mem, None, None).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(train, base);
    layer.eval_mode();
    assert!(!layer.dropout3.is_training());
    assert_eq!(layer.apply(&tgt, &mem, None, None).unwrap().to_vec::<f32>().unwrap(), base);

    // Bad inputs.
    let z = |s: &[usize]| ops::zeros(s, Dtype::F32).unwrap();
    assert!(layer.apply(&z(&[2, 3, 7]), &mem, None, None).is_err());
    assert!(layer.apply(&z(&[3, 8]), &mem, None, None).is_err());
    assert!(layer.apply(&tgt, &z(&[2, 4, 6]), None, None).is_err());
    assert!(layer.apply(&tgt, &z(&[4, 8]), None, None).is_err());
    assert!(layer.apply(&tgt, &mem, Some(&AttentionMask::Array(z(&[5, 5]))), None).is_err());
    let t = nn::Transformer::new(8, 2, 1, 1, None, 0.0, true).unwrap();
    assert!(t.apply(&z(&[5, 8]), &tgt, None, None, None).is_err());
    assert!(t.apply(&z(&[2, 5, 3]), &tgt, None, None, None).is_err());
    assert!(t.apply(&z(&[2, 5, 8]), &tgt, None, None, Some(&AttentionMask::Array(z(&[3, 4])))).is_err());
    assert!(t.apply(&z(&[2, 5, 8]), &tgt, None, None, None).is_ok());
    assert!(nn::TransformerDecoderLayer::new(8, 3, None, 0.0, true).is_err());
}

// ---------------------------------------------------------------- upsample

#[test]
fn upsample_matches_mlx() {
    let g = golden();
    let u = &g["upsample"];
    let cases = u["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 26);
    for (ci, case) in cases.iter().enumerate() {
        let x = arr(&u["inputs"][case["input"].as_str().unwrap()]);
        let scale: Vec<f64> = case["scale_factor"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
        let mode = match case["mode"].as_str().unwrap() {
            "nearest" => nn::UpsampleMode::Nearest,
            "linear" => nn::UpsampleMode::Linear,
            "cubic" => nn::UpsampleMode::Cubic,
            m => panic!("unknown mode {m}"),
        };
        let (ac, aa) = (case["align_corners"].as_bool().unwrap(), case["antialias"].as_bool().unwrap());
        let what =
            format!("Upsample case {ci} ({mode:?} {scale:?} align_corners {ac} antialias {aa}, input {:?})", x.shape());
        let y = nn::Upsample::new(&scale, mode, ac, aa).unwrap().forward(&x).unwrap();
        assert_eq!(y.dtype().to_string(), case["out"]["dtype"].as_str().unwrap(), "{what}: dtype");
        assert_close(&what, &y, &case["out"], 1e-5);
        // The functions give the same with one scale per axis.
        let per_axis = if scale.len() == 1 { vec![scale[0]; x.ndim() - 2] } else { scale.clone() };
        let f = match mode {
            nn::UpsampleMode::Nearest => nn::upsample_nearest(&x, &per_axis),
            nn::UpsampleMode::Linear => nn::upsample_linear(&x, &per_axis, ac, aa),
            nn::UpsampleMode::Cubic => nn::upsample_cubic(&x, &per_axis, ac, aa),
        };
        assert_close(&what, &f.unwrap(), &case["out"], 1e-5);
    }
}

#[test]
fn upsample_gradient_and_errors() {
    let _g = lock();
    // The gradient of a weighted sum reaches the input (linear: each input
    // element's gradient is the sum of the weights it contributes with).
    let x = f64_array(&[1, 4, 3, 2], 7);
    let w = f64_array(&[1, 8, 4, 2], 8);
    for (mode, ac) in
        [(nn::UpsampleMode::Linear, false), (nn::UpsampleMode::Cubic, true), (nn::UpsampleMode::Nearest, false)]
    {
        let scale = if mode == nn::UpsampleMode::Nearest { [2.0, 4.0 / 3.0] } else { [2.0, 1.5] };
        let up = nn::Upsample::new(&scale, mode, ac, false).unwrap();
        check_grad(&format!("Upsample {mode:?}"), &up, &[x.clone()], |m, a| weighted_sum(&m.forward(&a[0])?, &w));
    }
    let z = |s: &[usize]| ops::zeros(s, Dtype::F32).unwrap();
    let up = nn::Upsample::new(&[2.0], nn::UpsampleMode::Linear, false, false).unwrap();
    assert!(up.forward(&z(&[4, 3])).is_err());
    assert!(up.forward(&z(&[4])).is_err());
    assert!(nn::upsample_linear(&z(&[1, 4, 3, 2]), &[2.0], false, false).is_err());
    assert!(nn::upsample_nearest(&z(&[1, 4, 2]), &[0.0]).is_err());
    assert!(nn::upsample_nearest(&z(&[1, 4, 2]), &[-2.0]).is_err());
    assert!(nn::upsample_cubic(&z(&[1, 4, 2]), &[f64::NAN], false, false).is_err());
    assert!(nn::upsample_cubic(&z(&[1, 4, 2]), &[0.1], false, false).is_err());
    assert!(nn::upsample_linear(&z(&[1, 4, 2]), &[0.5], true, true).is_err());
    assert!(nn::Upsample::new(&[2.0], nn::UpsampleMode::Nearest, false, true).is_err());
    assert!(nn::Upsample::new(&[2.0], nn::UpsampleMode::Cubic, true, true).is_err());
    assert!(nn::Upsample::new(&[], nn::UpsampleMode::Cubic, false, false).is_err());
    assert!(up.num_parameters() == 0);
}

// ---------------------------------------------------------------- initialisation

/// Built right after the same seed, every new layer draws exactly what MLX's
/// constructor draws (compared through per-parameter sums and first elements).
#[test]
fn initialisation_matches_mlx_draws() {
    let _g = lock();
    let g = golden();
    let inits = g["init"].as_array().unwrap();
    assert_eq!(inits.len(), 5);
    for case in inits {
        let kind = case["kind"].as_str().unwrap();
        let a: Vec<usize> = case["args"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        random::seed(case["seed"].as_u64().unwrap());
        let params = match kind {
            "RNN" => nn::RNN::new(a[0], a[1], true).unwrap().named_parameters(),
            "GRU" => nn::GRU::new(a[0], a[1], true).unwrap().named_parameters(),
            "LSTM" => nn::LSTM::new(a[0], a[1], true).unwrap().named_parameters(),
            "TransformerDecoderLayer" => {
                nn::TransformerDecoderLayer::new(a[0], a[1], Some(a[2]), 0.0, true).unwrap().named_parameters()
            }
            "Transformer" => {
                nn::Transformer::new(a[0], a[1], a[2], a[3], Some(a[4]), 0.0, true).unwrap().named_parameters()
            }
            k => panic!("unknown kind {k}"),
        };
        let stats = case["stats"].as_object().unwrap();
        assert_eq!(params.len(), stats.len(), "{kind}: number of parameters");
        for (k, p) in params {
            let v: Vec<f64> = ops::astype(&p, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
            let got = [v.iter().sum::<f64>(), v.iter().map(|x| x * x).sum::<f64>(), v[0]];
            let want: Vec<f64> = stats[&k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{kind} {k}: got {got:?}, want {want:?}");
            }
        }
    }
}

/// How many nodes of `y`'s graph are checkpointed calls.
fn count_custom(y: &Array) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![y.clone()];
    let mut n = 0;
    while let Some(a) = stack.pop() {
        if !seen.insert(a.id()) {
            continue;
        }
        if a.primitive().is_some_and(|p| p.name() == "CustomTransforms") {
            n += 1;
        }
        stack.extend(a.inputs());
    }
    n
}

#[test]
fn transformer_checkpoint_gives_the_same_values_and_gradients() {
    let _g = lock();
    random::seed(21);
    let m = nn::Transformer::new(8, 2, 2, 3, Some(12), 0.0, false).unwrap();
    let mc = m.clone().with_checkpoint(true);
    let src = ops::astype(&f64_array(&[2, 5, 8], 22), Dtype::F32).unwrap();
    let tgt = ops::astype(&f64_array(&[2, 4, 8], 23), Dtype::F32).unwrap();
    let w = ops::astype(&f64_array(&[2, 4, 8], 24), Dtype::F32).unwrap();
    let causal = AttentionMask::Causal;
    let y = m.apply(&src, &tgt, None, Some(&causal), None).unwrap();
    let yc = mc.apply(&src, &tgt, None, Some(&causal), None).unwrap();
    assert_eq!(count_custom(&y), 0);
    assert_eq!(count_custom(&yc), 5, "one checkpointed call per layer");
    assert_eq!(y.to_vec::<f32>().unwrap(), yc.to_vec::<f32>().unwrap());
    let grads = |model: &nn::Transformer| {
        let vg = nn::value_and_grad(|m: &nn::Transformer, a: &[Array]| {
            weighted_sum(&m.apply(&a[0], &a[1], None, Some(&AttentionMask::Causal), None)?, &a[2])
        });
        let (v, g) = vg(model, &[src.clone(), tgt.clone(), w.clone()]).unwrap();
        (v.item::<f32>().unwrap(), kiln_core::tree_flatten(&g))
    };
    let (v, g) = grads(&m);
    let (vc, gc) = grads(&mc);
    assert_eq!(v, vc);
    assert_eq!(g.len(), gc.len());
    assert_eq!(g.len(), m.named_parameters().len());
    for ((k, a), (kc, b)) in g.iter().zip(&gc) {
        assert_eq!(k, kc);
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let scale = a.iter().fold(1e-3f32, |s, x| s.max(x.abs()));
        assert!(a.iter().any(|x| *x != 0.0) || k.contains("bias"), "{k}: zero gradient");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * scale, "{k}: {x} vs {y}");
        }
    }
    // A decoder alone, and a custom encoder checkpointed as a whole.
    let dec = mc.decoder.clone().with_checkpoint(true);
    let memory = m.encoder.apply(&src, None).unwrap();
    let yd = dec.apply(&tgt, &memory, Some(&causal), None).unwrap();
    assert_eq!(count_custom(&yd), 3);
    assert_eq!(yd.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap());
    let custom =
        nn::Transformer::from_parts(ProjEncoder { proj: nn::Linear::new(8, 8, true).unwrap() }, m.decoder.clone());
    let plain = custom.apply(&src, &tgt, None, None, None).unwrap();
    let ck = custom.clone().with_checkpoint(true).apply(&src, &tgt, None, None, None).unwrap();
    assert_eq!(count_custom(&ck), 4);
    assert_eq!(plain.to_vec::<f32>().unwrap(), ck.to_vec::<f32>().unwrap());
}
