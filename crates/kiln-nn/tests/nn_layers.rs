//! kiln-nn's layers against MLX 0.32.4 (golden/nn_layers.json and
//! golden/net.safetensors, written by golden/gen_nn_layers.py): every layer
//! of `layers/{basic,norm,conv,attention}.rs` not covered by nn.rs, the
//! activation modules, and an MLX-saved model loaded by name. Weights are set
//! by their MLX names with strict `load_arrays`, which also checks the names.

#[path = "golden_util.rs"]
mod golden_util;

use golden_util::assert_close;
use kiln_core::io::ArrayMap;
use kiln_core::{ops, random, tree_flatten, Array, Dtype};
use kiln_nn::{self as nn, AttentionMask, Forward, ModuleExt, PoolKind};
use serde_json::Value;

fn load() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/nn_layers.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("valid JSON")
}

/// A golden tensor (float32, int32 or bool).
fn arr(v: &Value) -> Array {
    if v["dtype"] == "bool" {
        let mut f = v.clone();
        f["dtype"] = Value::from("float32");
        return ops::not_equal(&golden_util::arr(&f), 0.0f32).unwrap();
    }
    golden_util::arr(v)
}

/// `{mlx_key: tensor}` as the arrays `load_arrays` takes.
fn params(v: &Value) -> ArrayMap {
    v.as_object().unwrap().iter().map(|(k, t)| (k.clone(), arr(t))).collect()
}

/// Loads the golden parameters by name, strictly: every key of the module
/// must be in the golden and the other way round, with the same shapes.
fn set<M: ModuleExt>(m: &mut M, v: &Value) {
    let report = m.load_arrays(params(v), true).unwrap();
    assert!(report.is_exact());
}

fn usizes<const N: usize>(v: &Value) -> [usize; N] {
    let v: Vec<usize> = v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    v.try_into().unwrap()
}

fn u(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn f(v: &Value) -> f32 {
    v.as_f64().unwrap() as f32
}

fn keys_of(t: &kiln_core::Tree) -> Vec<String> {
    let mut k: Vec<String> = tree_flatten(t).into_iter().map(|(k, _)| k).collect();
    k.sort();
    k
}

fn strings(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    k.sort();
    k
}

fn vals(a: &Array) -> Vec<f32> {
    ops::astype(a, Dtype::F32).unwrap().to_vec::<f32>().unwrap()
}

// Tolerances: 1e-5 relative to max(1, |want|) wherever Kiln and MLX sum in a
// different order (matmul/conv accumulation, mean/var, softmax); exact where
// the computation is a selection (max pooling, dropout masks, identity).
const TOL: f64 = 1e-5;

#[test]
fn bilinear_matches_mlx() {
    let g = load();
    let b = &g["bilinear"];
    let (x1, x2) = (arr(&b["x1"]), arr(&b["x2"]));
    for (case, bias) in [("bias", true), ("no_bias", false)] {
        let mut l = nn::Bilinear::new(4, 3, 5, bias).unwrap();
        set(&mut l, &b[case]["params"]);
        assert_close(case, &l.apply(&x1, &x2).unwrap(), &b[case]["out"], TOL);
    }
    let mut l = nn::Bilinear::new(4, 3, 5, true).unwrap();
    set(&mut l, &b["bias"]["params"]);
    let v = &b["vectors"];
    assert_close("bilinear on vectors", &l.apply(&arr(&v["x1"]), &arr(&v["x2"])).unwrap(), &v["out"], TOL);
    assert!(l.apply(&x2, &x1).is_err(), "swapped inputs");
    assert!(l.apply(&x1, &ops::zeros(&[3, 2, 3], Dtype::F32).unwrap()).is_err(), "different leading shapes");
}

#[test]
fn linear_on_vectors_and_batches_matches_mlx() {
    let g = load();
    let c = &g["linear_shapes"];
    let (xv, xb) = (arr(&c["x_vec"]), arr(&c["x_batch"]));
    let mut lin = nn::Linear::new(4, 3, true).unwrap();
    set(&mut lin, &c["params"]);
    assert_close("vec", &lin.forward(&xv).unwrap(), &c["vec"], TOL);
    assert_close("batch", &lin.forward(&xb).unwrap(), &c["batch"], TOL);
    let mut lin = nn::Linear::new(4, 3, false).unwrap();
    set(&mut lin, &c["params_no_bias"]);
    assert_close("vec_no_bias", &lin.forward(&xv).unwrap(), &c["vec_no_bias"], TOL);
    assert_close("batch_no_bias", &lin.forward(&xb).unwrap(), &c["batch_no_bias"], TOL);
    assert!(lin.forward(&ops::zeros(&[2, 5], Dtype::F32).unwrap()).and_then(|y| y.eval()).is_err(), "5 features");
    assert!(nn::Linear::from_weights(ops::zeros(&[3], Dtype::F32).unwrap(), None).is_err());
}

fn conv_case<const N: usize>(c: &Value) -> Array {
    let x = arr(&c["x"]);
    let (cin, cout, bias) = (u(&c["in_channels"]), u(&c["out_channels"]), c["bias"].as_bool().unwrap());
    let (k, s, p, d) = (
        usizes::<N>(&c["kernel_size"]),
        usizes::<N>(&c["stride"]),
        usizes::<N>(&c["padding"]),
        usizes::<N>(&c["dilation"]),
    );
    if c["transpose"].as_bool().unwrap() {
        let mut l =
            nn::ConvTranspose::<N>::new(cin, cout, k, s, p, d, usizes::<N>(&c["output_padding"]), bias).unwrap();
        set(&mut l, &c["params"]);
        l.forward(&x).unwrap()
    } else {
        let mut l = nn::Conv::<N>::new(cin, cout, k, s, p, d, u(&c["groups"]), bias).unwrap();
        set(&mut l, &c["params"]);
        l.forward(&x).unwrap()
    }
}

#[test]
fn conv_and_conv_transpose_match_mlx() {
    let g = load();
    let cases = g["conv"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for c in cases {
        let got = match u(&c["n"]) {
            1 => conv_case::<1>(c),
            2 => conv_case::<2>(c),
            _ => conv_case::<3>(c),
        };
        assert_close(c["name"].as_str().unwrap(), &got, &c["out"], TOL);
    }
}

#[test]
fn conv_bad_inputs_are_errors() {
    let conv = nn::Conv2d::new(4, 6, [3, 3], [1, 1], [1, 1], [1, 1], 2, true).unwrap();
    let wrong_channels = ops::zeros(&[1, 5, 5, 3], Dtype::F32).unwrap();
    assert!(conv.forward(&wrong_channels).and_then(|y| y.eval()).is_err());
    let wrong_rank = ops::zeros(&[5, 5, 4], Dtype::F32).unwrap();
    assert!(conv.forward(&wrong_rank).and_then(|y| y.eval()).is_err());
    let too_small = ops::zeros(&[1, 1, 1, 4], Dtype::F32).unwrap();
    assert!(nn::Conv2d::simple(4, 2, 3).unwrap().forward(&too_small).and_then(|y| y.eval()).is_err());
    assert!(nn::Conv1d::new(3, 4, [3], [1], [0], [1], 2, true).is_err(), "3 channels in 2 groups");
    assert!(nn::Conv1d::new(4, 4, [3], [1], [0], [1], 0, true).is_err(), "zero groups");
    let ct = nn::ConvTranspose2d::new(2, 3, [2, 2], [2, 2], [0, 0], [1, 1], [0, 0], true).unwrap();
    assert!(ct.forward(&ops::zeros(&[1, 3, 3, 3], Dtype::F32).unwrap()).and_then(|y| y.eval()).is_err());
    assert!(ct.forward(&ops::zeros(&[3, 3, 2], Dtype::F32).unwrap()).and_then(|y| y.eval()).is_err());
    // MLX builds this layer and fails when it is called: 3 outputs in 2 groups.
    let uneven = nn::Conv1d::new(4, 3, [3], [1], [0], [1], 2, true).unwrap();
    assert!(uneven.forward(&ops::zeros(&[1, 5, 4], Dtype::F32).unwrap()).and_then(|y| y.eval()).is_err());
    let c3 = nn::Conv3d::simple(2, 2, 2).unwrap();
    assert!(c3.forward(&ops::zeros(&[1, 3, 3, 2], Dtype::F32).unwrap()).and_then(|y| y.eval()).is_err());
}

fn pool_case<const N: usize>(c: &Value) -> Array {
    pool_case_on::<N>(c, &arr(&c["x"]))
}

fn pool_case_on<const N: usize>(c: &Value, x: &Array) -> Array {
    let kind = if c["kind"] == "max" { PoolKind::Max } else { PoolKind::Avg };
    let stride = if c["stride"].is_null() { None } else { Some(usizes::<N>(&c["stride"])) };
    let p = nn::Pool::<N>::new(kind, usizes::<N>(&c["kernel"]), stride, usizes::<N>(&c["padding"])).unwrap();
    p.forward(x).unwrap()
}

#[test]
fn pooling_matches_mlx() {
    let g = load();
    let cases = g["pool"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for c in cases {
        let got = match u(&c["n"]) {
            1 => pool_case::<1>(c),
            2 => pool_case::<2>(c),
            _ => pool_case::<3>(c),
        };
        // Max pooling selects: exact. Average pooling sums in another order.
        let tol = if c["kind"] == "max" { 0.0 } else { 1e-6 };
        assert_close(c["name"].as_str().unwrap(), &got, &c["out"], tol);
    }
    // Integer input: max pooling stays integer (padding with the lowest
    // integer), average pooling gives float32.
    let pi = &g["pool_int"];
    let xi = arr(&pi["x"]);
    let max_p1 = nn::MaxPool1d::new(PoolKind::Max, [2], None, [1]).unwrap().forward(&xi).unwrap();
    assert_eq!(max_p1.dtype(), Dtype::I32);
    assert_close("int max_p1", &max_p1, &pi["max_p1"], 0.0);
    let avg_p1 = nn::AvgPool1d::new(PoolKind::Avg, [2], None, [1]).unwrap().forward(&xi).unwrap();
    assert_eq!(avg_p1.dtype(), Dtype::F32);
    assert_close("int avg_p1", &avg_p1, &pi["avg_p1"], 0.0);
    let max = nn::MaxPool1d::new(PoolKind::Max, [3], Some([1]), [0]).unwrap().forward(&xi).unwrap();
    assert_close("int max", &max, &pi["max"], 0.0);
    // A strided (transposed) view of the input pools the same.
    let c = &cases[4];
    let x = arr(&c["x"]);
    let view = ops::swapaxes(&ops::contiguous(&ops::swapaxes(&x, 1, 2).unwrap(), false), 1, 2).unwrap();
    assert_close("max2d on a view", &pool_case_on::<2>(c, &view), &c["out"], 0.0);
    // The shorthand constructors agree with `new`.
    let c = &cases[6];
    assert_close("MaxPool2d::max", &nn::MaxPool2d::max([2, 2]).forward(&arr(&c["x"])).unwrap(), &c["out"], 0.0);
}

#[test]
fn pooling_bad_inputs_are_errors() {
    assert!(nn::MaxPool2d::new(PoolKind::Max, [0, 2], None, [0, 0]).is_err());
    assert!(nn::MaxPool2d::new(PoolKind::Max, [2, 2], Some([1, 0]), [0, 0]).is_err());
    let p = nn::AvgPool2d::avg([2, 2]);
    assert!(p.forward(&ops::zeros(&[4, 4, 3], Dtype::F32).unwrap()).is_err(), "missing batch axis");
    assert!(p.forward(&ops::zeros(&[1, 1, 4, 3], Dtype::F32).unwrap()).is_err(), "kernel larger than input");
    assert!(nn::MaxPool1d::max([2]).forward(&ops::zeros(&[1, 2, 2, 3], Dtype::F32).unwrap()).is_err());
}

#[test]
fn group_norm_matches_mlx() {
    let g = load();
    let cases = g["group_norm"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for c in cases {
        let (pc, affine) = (c["pytorch_compatible"].as_bool().unwrap(), c["affine"].as_bool().unwrap());
        let mut gn = nn::GroupNorm::new(u(&c["groups"]), u(&c["dims"]), 1e-5, affine, pc).unwrap();
        set(&mut gn, &c["params"]);
        let x = arr(&c["x"]);
        assert_close(
            &format!("group_norm pc={pc} affine={affine} {:?}", x.shape()),
            &gn.forward(&x).unwrap(),
            &c["out"],
            TOL,
        );
    }
    let gn = nn::GroupNorm::new(3, 6, 1e-5, true, false).unwrap();
    assert!(gn.forward(&ops::zeros(&[2, 4, 4], Dtype::F32).unwrap()).and_then(|y| y.eval()).is_err(), "4 channels");
    assert!(gn.forward(&ops::zeros(&[6], Dtype::F32).unwrap()).is_err(), "rank 1");
    assert!(nn::GroupNorm::new(4, 6, 1e-5, true, false).is_err());
    assert!(nn::GroupNorm::new(3, 6, 0.0, true, false).is_err());
}

#[test]
fn instance_norm_matches_mlx() {
    let g = load();
    for c in g["instance_norm"].as_array().unwrap() {
        let affine = c["affine"].as_bool().unwrap();
        let mut inorm = nn::InstanceNorm::new(u(&c["dims"]), 1e-5, affine).unwrap();
        set(&mut inorm, &c["params"]);
        let x = arr(&c["x"]);
        assert_close(&format!("instance_norm {:?}", x.shape()), &inorm.forward(&x).unwrap(), &c["out"], TOL);
    }
    let inorm = nn::InstanceNorm::new(3, 1e-5, true).unwrap();
    assert!(inorm.forward(&ops::zeros(&[2, 3], Dtype::F32).unwrap()).is_err(), "rank 2");
    assert!(inorm.forward(&ops::zeros(&[2, 4, 5], Dtype::F32).unwrap()).and_then(|y| y.eval()).is_err(), "5 channels");
}

fn running(bn: &nn::BatchNorm) -> ArrayMap {
    bn.named_parameters().into_iter().filter(|(k, _)| k.starts_with("running")).collect()
}

#[test]
fn batch_norm_matches_mlx() {
    let g = load();
    let cases = g["batch_norm"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let (affine, track) = (c["affine"].as_bool().unwrap(), c["track_running_stats"].as_bool().unwrap());
        let what = format!("batch_norm affine={affine} track={track}");
        let mut bn = nn::BatchNorm::new(u(&c["features"]), 1e-5, f(&c["momentum"]), affine, track).unwrap();
        set(&mut bn, &c["params"]);
        assert_eq!(keys_of(&bn.trainable_parameters()), strings(&c["trainable"]), "{what}: trainable keys");
        bn.train(true);
        for (x, y, stats) in [("x1", "train1", "stats1"), ("x2", "train2", "stats2")] {
            assert_close(&format!("{what} {y}"), &bn.forward(&arr(&c[x])).unwrap(), &c[y], TOL);
            let got = running(&bn);
            let want = c[stats].as_object().unwrap();
            assert_eq!(got.len(), want.len(), "{what}: running statistics");
            for (k, v) in want {
                assert_close(&format!("{what} {stats} {k}"), &got[k], v, TOL);
            }
        }
        bn.eval_mode();
        let before = running(&bn);
        assert_close(&format!("{what} eval"), &bn.forward(&arr(&c["x3"])).unwrap(), &c["eval3"], TOL);
        for (k, a) in running(&bn) {
            assert_eq!(vals(&a), vals(&before[&k]), "{what}: evaluation leaves {k} alone");
        }
        // Unfreezing never makes the running statistics trainable.
        bn.unfreeze();
        assert_eq!(keys_of(&bn.trainable_parameters()), strings(&c["trainable"]), "{what}: after unfreeze");
    }
    let bn = nn::BatchNorm::new(3, 1e-5, 0.1, true, true).unwrap();
    assert!(bn.forward(&ops::zeros(&[3], Dtype::F32).unwrap()).is_err(), "rank 1");
    assert!(bn.forward(&ops::zeros(&[2, 2, 2, 2, 3], Dtype::F32).unwrap()).is_err(), "rank 5");
    assert!(bn.forward(&ops::zeros(&[1, 3], Dtype::F32).unwrap()).is_err(), "one value per channel");
    assert!(bn.forward(&ops::zeros(&[4, 5], Dtype::F32).unwrap()).and_then(|y| y.eval()).is_err(), "5 features");
    assert!(nn::BatchNorm::new(3, -1.0, 0.1, true, true).is_err());
}

#[test]
fn batch_norm_trained_through_value_and_grad_updates_running_stats() {
    // MLX's nn.value_and_grad runs the model itself, so BatchNorm's running
    // statistics move with every training step; Kiln's works on a clone of
    // the model, which must share them.
    let g = load();
    let c = &g["batch_norm_value_and_grad"];
    let mut bn = nn::BatchNorm::new(3, 1e-5, 0.1, true, true).unwrap();
    set(&mut bn, &c["params"]);
    let scale = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    let vg = nn::value_and_grad(move |m: &nn::BatchNorm, a: &[Array]| {
        ops::sum(&ops::multiply(&ops::square(&m.forward(&a[0])?)?, &scale)?, ops::Axes::All, false)
    });
    for (i, step) in c["steps"].as_array().unwrap().iter().enumerate() {
        let (loss, grads) = vg(&bn, &[arr(&step["x"])]).unwrap();
        assert_close(&format!("step {i} loss"), &loss, &step["loss"], TOL);
        let grads: ArrayMap = tree_flatten(&grads).into_iter().collect();
        assert_eq!(grads.len(), 2, "running statistics get no gradient");
        for (k, v) in step["grads"].as_object().unwrap() {
            assert_close(&format!("step {i} grad {k}"), &grads[k], v, TOL);
        }
        let stats = running(&bn);
        for (k, v) in step["stats"].as_object().unwrap() {
            assert_close(&format!("step {i} {k}"), &stats[k], v, TOL);
        }
    }
    // A clone shares the statistics until one of them is loaded or updated.
    let mut copy = bn.clone();
    let zeros = ops::zeros(&[3], Dtype::F32).unwrap();
    copy.load_arrays([("running_mean".to_string(), zeros)].into_iter().collect(), false).unwrap();
    assert_eq!(vals(&copy.running_mean.as_ref().unwrap().value()), [0.0; 3]);
    assert_ne!(vals(&bn.running_mean.as_ref().unwrap().value()), [0.0; 3], "the original keeps its statistics");
    // Many steps keep working (the statistics do not pile up an ever longer graph).
    let x = arr(&c["steps"][0]["x"]);
    for _ in 0..300 {
        vg(&bn, std::slice::from_ref(&x)).unwrap();
    }
    let m = vals(&bn.running_mean.as_ref().unwrap().value());
    let batch_mean = vals(&ops::mean(&x, 0, false).unwrap());
    for (a, b) in m.iter().zip(&batch_mean) {
        assert!((a - b).abs() < 1e-4, "running mean {a} converges to the batch mean {b}");
    }
}

/// Checks a training-mode dropout output: every element is 0 or `x/(1-p)`,
/// and the zeros are whole channels (constant over the `spatial` axes before
/// the last one).
fn check_dropout_structure(what: &str, x: &Array, y: &Array, p: f32, spatial: usize) {
    let (xs, ys) = (vals(x), vals(y));
    let shape = x.shape().to_vec();
    let c = shape[shape.len() - 1];
    let inner: usize = shape[shape.len() - 1 - spatial..shape.len() - 1].iter().product();
    let mut kept = 0;
    for (i, (a, b)) in xs.iter().zip(&ys).enumerate() {
        let keep = *b != 0.0;
        kept += keep as usize;
        if keep {
            assert!((b - a / (1.0 - p)).abs() <= 1e-6 * b.abs().max(1.0), "{what}[{i}]: {b} is not {a}/(1-{p})");
        }
        if spatial > 0 {
            // The first element of the same (batch, channel).
            let batch = i / (inner * c);
            let first = batch * inner * c + i % c;
            assert_eq!(keep, ys[first] != 0.0, "{what}[{i}]: the channel is dropped as a whole");
        }
    }
    assert!(kept > 0 && kept < xs.len(), "{what}: some kept, some dropped ({kept} of {})", xs.len());
}

#[test]
fn dropout_matches_mlx() {
    let g = load();
    let d = &g["dropout"];
    type Make = fn(f32) -> kiln_core::Result<Box<dyn nn::SequentialLayer>>;
    let cases: [(&str, usize, Make); 5] = [
        ("dropout", 0, |p| Ok(Box::new(nn::Dropout::new(p)?))),
        ("dropout2d", 2, |p| Ok(Box::new(nn::Dropout2d::new(p)?))),
        ("dropout2d_unbatched", 2, |p| Ok(Box::new(nn::Dropout2d::new(p)?))),
        ("dropout3d", 3, |p| Ok(Box::new(nn::Dropout3d::new(p)?))),
        ("dropout3d_unbatched", 3, |p| Ok(Box::new(nn::Dropout3d::new(p)?))),
    ];
    for (name, spatial, make) in cases {
        let c = &d[name];
        let p = f(&c["p"]);
        let x = arr(&c["x"]);
        let mut layer = make(p).unwrap();
        random::seed(c["seed"].as_u64().unwrap());
        let y = layer.forward(&x).unwrap();
        check_dropout_structure(name, &x, &y, p, spatial);
        // Same seed, same key sequence: the very mask MLX drew.
        assert_close(&format!("{name} train"), &y, &c["train"], 1e-6);
        layer.set_training_flag(false);
        assert_close(&format!("{name} eval"), &layer.forward(&x).unwrap(), &c["eval"], 0.0);
    }
    let x4 = ops::zeros(&[2, 3, 4, 5], Dtype::F32).unwrap();
    assert!(nn::Dropout2d::new(0.5).unwrap().forward(&ops::zeros(&[3, 4], Dtype::F32).unwrap()).is_err());
    assert!(nn::Dropout2d::new(0.5).unwrap().forward(&ops::zeros(&[1, 2, 3, 4, 5], Dtype::F32).unwrap()).is_err());
    assert!(nn::Dropout3d::new(0.5).unwrap().forward(&ops::zeros(&[3, 4, 5], Dtype::F32).unwrap()).is_err());
    assert!(nn::Dropout3d::new(0.5).unwrap().forward(&x4).is_ok());
    assert!(nn::Dropout2d::new(-0.1).is_err() && nn::Dropout3d::new(1.0).is_err());
}

#[test]
fn scaled_dot_product_attention_matches_mlx() {
    let g = load();
    let s = &g["sdpa"];
    let scale = f(&s["scale"]);
    let cases = s["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 12);
    for (name, c) in cases {
        let input = |k: &str| arr(&s["inputs"][c[k].as_str().unwrap()]);
        let mask = match c["mask_kind"].as_str().unwrap() {
            "none" => None,
            "causal" => Some(AttentionMask::Causal),
            _ => Some(AttentionMask::Array(arr(&s["masks"][c["mask"].as_str().unwrap()]))),
        };
        let got =
            nn::scaled_dot_product_attention(&input("q"), &input("k"), &input("v"), scale, mask.as_ref()).unwrap();
        assert_close(name, &got, &c["out"], TOL);
    }
}

#[test]
fn scaled_dot_product_attention_in_float16_matches_mlx() {
    let g = load();
    let s = &g["sdpa"];
    let h = |k: &str| ops::astype(&arr(&s["inputs"][k]), Dtype::F16).unwrap();
    let w = &g["sdpa_f16"];
    let scale = f(&s["scale"]);
    let row_mask = AttentionMask::Array(arr(&s["masks"]["bool_mask_row"]));
    let cases = [
        ("f16", nn::scaled_dot_product_attention(&h("q"), &h("k"), &h("v"), scale, None), "out"),
        (
            "f16 gqa causal",
            nn::scaled_dot_product_attention(&h("q"), &h("kg"), &h("vg"), scale, Some(&AttentionMask::Causal)),
            "out_causal",
        ),
        ("f16 bool", nn::scaled_dot_product_attention(&h("q"), &h("k"), &h("v"), scale, Some(&row_mask)), "out_bool"),
    ];
    for (what, got, key) in cases {
        let got = got.unwrap();
        assert_eq!(got.dtype(), Dtype::F16, "{what}");
        // float16 keeps 11 bits; MLX and Kiln round the scores and the
        // probabilities at different points.
        assert_close(what, &got, &w[key], 2e-3);
    }
}

#[test]
fn scaled_dot_product_attention_bad_inputs_are_errors() {
    let z = |s: &[usize]| ops::zeros(s, Dtype::F32).unwrap();
    let sdpa = |q: &Array, k: &Array, v: &Array, m: Option<&AttentionMask>| {
        nn::scaled_dot_product_attention(q, k, v, 1.0, m).and_then(|y| y.eval())
    };
    let (q, k, v) = (z(&[1, 4, 3, 8]), z(&[1, 2, 5, 8]), z(&[1, 2, 5, 6]));
    assert!(sdpa(&q, &k, &v, None).is_ok());
    assert!(sdpa(&z(&[4, 3, 8]), &k, &v, None).is_err(), "rank 3 queries");
    assert!(sdpa(&q, &z(&[1, 2, 5, 7]), &v, None).is_err(), "head dims differ");
    assert!(sdpa(&q, &k, &z(&[1, 2, 4, 6]), None).is_err(), "key and value lengths differ");
    assert!(sdpa(&z(&[1, 3, 3, 8]), &k, &v, None).is_err(), "3 query heads on 2 key/value heads");
    assert!(sdpa(&q, &k, &v, Some(&AttentionMask::Array(z(&[3, 4])))).is_err(), "mask does not broadcast");
    assert!(sdpa(&q, &k, &v, Some(&AttentionMask::Array(z(&[1, 1, 1, 3, 5])))).is_err(), "rank 5 mask");
}

#[test]
fn multi_head_attention_matches_mlx() {
    let g = load();
    for c in g["mha"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let mut m = nn::MultiHeadAttention::with_dims(
            u(&c["dims"]),
            u(&c["num_heads"]),
            [u(&c["query_input_dims"]), u(&c["key_input_dims"]), u(&c["value_input_dims"])],
            u(&c["value_dims"]),
            u(&c["value_output_dims"]),
            c["bias"].as_bool().unwrap(),
        )
        .unwrap();
        set(&mut m, &c["params"]);
        let mask = match c["mask_kind"].as_str().unwrap() {
            "none" => None,
            "causal" => Some(AttentionMask::Causal),
            _ => Some(AttentionMask::Array(arr(&c["mask"]))),
        };
        let got = m.attend(&arr(&c["queries"]), &arr(&c["keys"]), &arr(&c["values"]), mask.as_ref()).unwrap();
        assert_close(name, &got, &c["out"], TOL);
    }
    let m = nn::MultiHeadAttention::new(8, 2, false).unwrap();
    let x = ops::zeros(&[2, 3, 8], Dtype::F32).unwrap();
    assert!(m.attend(&x, &x, &x, None).is_ok());
    assert!(m.attend(&ops::zeros(&[3, 8], Dtype::F32).unwrap(), &x, &x, None).is_err(), "rank 2 queries");
    let x6 = ops::zeros(&[2, 3, 6], Dtype::F32).unwrap();
    assert!(m.attend(&x6, &x, &x, None).and_then(|y| y.eval()).is_err(), "6 query features");
    assert!(m.attend(&x, &ops::zeros(&[1, 3, 8], Dtype::F32).unwrap(), &x, None).and_then(|y| y.eval()).is_err());
    assert!(nn::MultiHeadAttention::new(8, 3, false).is_err());
}

#[test]
fn additive_causal_mask_matches_mlx() {
    let g = load();
    let c = &g["causal_mask"];
    assert_close("f32", &nn::create_additive_causal_mask(4, Dtype::F32).unwrap(), &c["f32"], 0.0);
    let m16 = nn::create_additive_causal_mask(4, Dtype::F16).unwrap();
    assert_eq!(m16.dtype(), Dtype::F16);
    assert_close("f16", &m16, &c["f16"], 0.0);
    let mb16 = nn::create_additive_causal_mask(4, Dtype::BF16).unwrap();
    assert_eq!(mb16.dtype(), Dtype::BF16);
    assert_close("bf16", &mb16, &c["bf16"], 0.0);
}

#[test]
fn transformer_encoder_matches_mlx() {
    let g = load();
    let t = &g["transformer"];
    let x = arr(&t["x"]);
    let mask = AttentionMask::Array(arr(&t["mask"]));
    for nf in [true, false] {
        let c = &t["cases"][format!("layer_norm_first_{nf}")];
        let mut layer = nn::TransformerEncoderLayer::new(8, 2, Some(16), 0.0, nf).unwrap();
        set(&mut layer, &c["params"]);
        assert_close(&format!("layer nf={nf}"), &layer.apply(&x, None).unwrap(), &c["out"], TOL);
        assert_close(&format!("layer nf={nf} causal"), &layer.apply(&x, Some(&mask)).unwrap(), &c["out_causal"], TOL);

        let c = &t["cases"][format!("encoder_norm_first_{nf}")];
        let mut enc = nn::TransformerEncoder::new(2, 8, 2, Some(16), 0.0, nf).unwrap();
        set(&mut enc, &c["params"]);
        assert_close(&format!("encoder nf={nf}"), &enc.apply(&x, None).unwrap(), &c["out"], TOL);
        assert_close(&format!("encoder nf={nf} causal"), &enc.apply(&x, Some(&mask)).unwrap(), &c["out_causal"], TOL);
        // The causal mask as a mask kind gives the same as MLX's additive mask.
        assert_close(
            &format!("encoder nf={nf} AttentionMask::Causal"),
            &enc.apply(&x, Some(&AttentionMask::Causal)).unwrap(),
            &c["out_causal"],
            TOL,
        );
    }
    let c = &t["cases"]["layer_gelu"];
    let mut layer = nn::TransformerEncoderLayer::new(8, 2, Some(16), 0.0, true).unwrap();
    layer.activation = nn::FeedForwardActivation::Gelu;
    set(&mut layer, &c["params"]);
    assert_close("layer gelu", &layer.apply(&x, None).unwrap(), &c["out"], TOL);
    assert_close("layer gelu causal", &layer.apply(&x, Some(&mask)).unwrap(), &c["out_causal"], TOL);
    let enc = nn::TransformerEncoder::new(1, 8, 2, None, 0.0, true).unwrap();
    assert!(enc.apply(&ops::zeros(&[2, 4, 6], Dtype::F32).unwrap(), None).and_then(|y| y.eval()).is_err());
    assert!(enc.apply(&ops::zeros(&[4, 8], Dtype::F32).unwrap(), None).is_err());
}

#[test]
fn rope_matches_mlx() {
    let g = load();
    let r = &g["rope"];
    let x = arr(&r["x"]);
    for c in r["cases"].as_array().unwrap() {
        let m = nn::RoPE {
            dims: u(&c["dims"]),
            traditional: c["traditional"].as_bool().unwrap(),
            base: f(&c["base"]),
            scale: f(&c["scale"]),
        };
        let offset = u(&c["offset"]);
        let what = format!("rope {m:?} offset {offset}");
        assert_close(&what, &m.apply(&x, offset).unwrap(), &c["out"], TOL);
        let direct = nn::rope(&x, m.dims, m.traditional, m.base, m.scale, offset).unwrap();
        assert_close(&what, &direct, &c["out"], TOL);
    }
    let x3 = arr(&r["x3"]);
    assert_close("rank 3", &nn::rope(&x3, 8, false, 10000.0, 1.0, 1).unwrap(), &r["rank3"], TOL);
    assert_close("rank 3 traditional", &nn::rope(&x3, 6, true, 10000.0, 1.0, 0).unwrap(), &r["rank3_traditional"], TOL);
    let h = nn::rope(&ops::astype(&x, Dtype::F16).unwrap(), 8, false, 10000.0, 1.0, 2).unwrap();
    assert_eq!(h.dtype(), Dtype::F16);
    // One float16 rounding of the output (MLX computes in float32 too).
    assert_close("f16", &h, &r["f16"], 1e-3);
    let m = nn::RoPE::new(8);
    assert!(m.apply(&ops::zeros(&[5, 8], Dtype::F32).unwrap(), 0).is_err(), "rank 2 (MLX wants at least 3)");
    assert!(nn::RoPE::new(10).apply(&x, 0).is_err(), "dims above the feature size");
    assert!(nn::RoPE::new(5).apply(&x, 0).is_err(), "odd dims");
}

#[test]
fn sinusoidal_positional_encoding_matches_mlx() {
    let g = load();
    let s = &g["sinusoidal"];
    let x = arr(&s["x"]);
    for c in s["cases"].as_array().unwrap() {
        let kw = &c["kw"];
        let m = nn::SinusoidalPositionalEncoding::new(
            u(&kw["dims"]),
            kw.get("min_freq").map_or(1e-4, |v| v.as_f64().unwrap()),
            kw.get("max_freq").map_or(1.0, |v| v.as_f64().unwrap()),
            kw.get("scale").map(f),
            kw.get("cos_first").is_some_and(|v| v.as_bool().unwrap()),
            kw.get("full_turns").is_some_and(|v| v.as_bool().unwrap()),
        )
        .unwrap();
        // Angles up to 50·2π: sin/cos of a float32 argument that large carry
        // ~1e-5 of absolute rounding whatever the order of operations.
        assert_close(&format!("sinusoidal {kw}"), &m.forward(&x).unwrap(), &c["out"], 2e-5);
    }
    assert!(nn::SinusoidalPositionalEncoding::new(7, 1e-4, 1.0, None, false, false).is_err());
    assert!(nn::SinusoidalPositionalEncoding::new(0, 1e-4, 1.0, None, false, false).is_err());
}

#[test]
fn alibi_matches_mlx() {
    let g = load();
    let a = &g["alibi"];
    for (h, want) in a["slopes"].as_object().unwrap() {
        assert_close(&format!("slopes {h}"), &nn::ALiBi::slopes(h.parse().unwrap(), Dtype::F32).unwrap(), want, 0.0);
    }
    for c in a["matrix"].as_array().unwrap() {
        let got = nn::ALiBi::matrix(u(&c["q"]), u(&c["k"]), u(&c["heads"]), u(&c["offset"]), Dtype::F32).unwrap();
        assert_close(&format!("matrix {c}"), &got, &c["out"], 0.0);
    }
    let (scores, mask) = (arr(&a["scores"]), arr(&a["mask"]));
    let alibi = nn::ALiBi::default();
    assert_close("apply", &alibi.apply(&scores, 0, None).unwrap(), &a["apply"], 1e-6);
    assert_close("apply offset mask", &alibi.apply(&scores, 2, Some(&mask)).unwrap(), &a["apply_offset_mask"], 1e-6);
    assert_close("apply 6 heads", &alibi.apply(&arr(&a["scores6"]), 1, None).unwrap(), &a["apply6"], 1e-6);
    assert!(alibi.apply(&ops::zeros(&[4, 3, 5], Dtype::F32).unwrap(), 0, None).is_err());
}

#[test]
fn activation_modules_match_mlx() {
    let g = load();
    let a = &g["activation_modules"];
    let x = arr(&a["x"]);
    let out = &a["out"];
    let modules: Vec<(&str, Box<dyn Forward>)> = vec![
        ("CELU", Box::new(nn::CELU::default())),
        ("ELU", Box::new(nn::ELU::default())),
        ("GELU", Box::new(nn::GELU::default())),
        ("GLU", Box::new(nn::GLU::default())),
        ("HardShrink", Box::new(nn::HardShrink::default())),
        ("HardTanh", Box::new(nn::HardTanh::default())),
        ("Hardswish", Box::new(nn::Hardswish::default())),
        ("LeakyReLU", Box::new(nn::LeakyReLU::default())),
        ("LogSigmoid", Box::new(nn::LogSigmoid::default())),
        ("LogSoftmax", Box::new(nn::LogSoftmax::default())),
        ("Mish", Box::new(nn::Mish::default())),
        ("ReLU", Box::new(nn::ReLU::default())),
        ("ReLU2", Box::new(nn::ReLU2::default())),
        ("ReLU6", Box::new(nn::ReLU6::default())),
        ("SELU", Box::new(nn::SELU::default())),
        ("SiLU", Box::new(nn::SiLU::default())),
        ("Sigmoid", Box::new(nn::Sigmoid::default())),
        ("Softmax", Box::new(nn::Softmax::default())),
        ("Softmin", Box::new(nn::Softmin::default())),
        ("Softplus", Box::new(nn::Softplus::default())),
        ("Softshrink", Box::new(nn::Softshrink::default())),
        ("Softsign", Box::new(nn::Softsign::default())),
        ("Step", Box::new(nn::Step::default())),
        ("Tanh", Box::new(nn::Tanh::default())),
        ("GELU_precise", Box::new(nn::GELU { approx: nn::GeluApprox::Tanh })),
        ("GELU_tanh", Box::new(nn::GELU { approx: nn::GeluApprox::Tanh })),
        ("GELU_fast", Box::new(nn::GELU { approx: nn::GeluApprox::Fast })),
        ("LeakyReLU_0.2", Box::new(nn::LeakyReLU { negative_slope: 0.2 })),
        ("ELU_0.5", Box::new(nn::ELU { alpha: 0.5 })),
        ("CELU_2", Box::new(nn::CELU { alpha: 2.0 })),
        ("Softshrink_1", Box::new(nn::Softshrink { lambd: 1.0 })),
        ("HardShrink_1", Box::new(nn::HardShrink { lambd: 1.0 })),
        ("Step_0.5", Box::new(nn::Step { threshold: 0.5 })),
        ("GLU_0", Box::new(nn::GLU { axis: 0 })),
        ("PReLU_default", Box::new(nn::PReLU::new(6, 0.25).unwrap())),
    ];
    let names: std::collections::BTreeSet<&str> = modules.iter().map(|(n, _)| *n).collect();
    for name in out.as_object().unwrap().keys() {
        assert!(name == "PReLU" || names.contains(name.as_str()), "no Kiln module checked for MLX's {name}");
    }
    for (name, m) in &modules {
        assert_close(name, &m.forward(&x).unwrap(), &out[*name], 2e-6);
    }
    let mut prelu = nn::PReLU::new(6, 0.25).unwrap();
    set(&mut prelu, &out["PReLU"]["params"]);
    assert_close("PReLU", &prelu.forward(&x).unwrap(), &out["PReLU"]["out"], 2e-6);
}

#[test]
fn identity_and_sequential_match_mlx() {
    let g = load();
    let s = &g["sequential"];
    let x = arr(&s["x"]);
    assert_close("identity", &nn::Identity::default().forward(&x).unwrap(), &s["identity"], 0.0);
    let mut seq = nn::Sequential::new()
        .push(nn::Linear::new(5, 8, true).unwrap())
        .push(nn::ReLU::default())
        .push(nn::Linear::new(8, 3, false).unwrap())
        .push(nn::Dropout::new(0.5).unwrap());
    set(&mut seq, &s["params"]);
    seq.eval_mode();
    assert_close("sequential", &seq.forward(&x).unwrap(), &s["out"], TOL);
    assert!(seq.forward(&ops::zeros(&[4, 6], Dtype::F32).unwrap()).is_err(), "6 input features");
    let mut nested = nn::Sequential::new()
        .push(nn::Sequential::new().push(nn::Linear::new(5, 4, true).unwrap()).push(nn::ReLU::default()))
        .push(nn::Identity::default())
        .push(nn::Linear::new(4, 2, true).unwrap());
    let n = &g["sequential_nested"];
    assert_eq!(keys_of(&nested.parameters()), {
        let mut k: Vec<String> = n["params"].as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    });
    set(&mut nested, &n["params"]);
    assert_close("nested sequential", &nested.forward(&x).unwrap(), &n["out"], TOL);
}

/// The model gen_nn_layers.py saves: Conv2d → GroupNorm → relu → BatchNorm →
/// (B, H·W, C) → TransformerEncoder → Linear.
#[derive(Clone, nn::Module)]
struct Net {
    conv: nn::Conv2d,
    gn: nn::GroupNorm,
    bn: nn::BatchNorm,
    encoder: nn::TransformerEncoder,
    head: nn::Linear,
}

impl Net {
    fn new() -> Net {
        Net {
            conv: nn::Conv2d::new(3, 8, [3, 3], [1, 1], [1, 1], [1, 1], 1, true).unwrap(),
            gn: nn::GroupNorm::new(2, 8, 1e-5, true, false).unwrap(),
            bn: nn::BatchNorm::new(8, 1e-5, 0.1, true, true).unwrap(),
            encoder: nn::TransformerEncoder::new(2, 8, 2, Some(16), 0.0, false).unwrap(),
            head: nn::Linear::new(8, 4, true).unwrap(),
        }
    }
    fn apply(&self, x: &Array, mask: Option<&AttentionMask>) -> kiln_core::Result<Array> {
        let y = self.bn.forward(&nn::relu(&self.gn.forward(&self.conv.forward(x)?)?)?)?;
        let s = y.shape().to_vec();
        let y = self.encoder.apply(&ops::reshape_to(&y, &[s[0], s[1] * s[2], s[3]])?, mask)?;
        self.head.forward(&y)
    }
}

#[test]
fn mlx_saved_model_loads_by_name_and_matches() {
    let g = load();
    let n = &g["net"];
    let mut net = Net::new();
    assert_eq!(keys_of(&net.parameters()), strings(&n["keys"]), "parameter keys, as MLX's tree_flatten");
    assert_eq!(keys_of(&net.trainable_parameters()), strings(&n["trainable_keys"]), "trainable keys");
    let report = net.load_weights(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/net.safetensors"), true).unwrap();
    assert!(report.is_exact());
    net.eval_mode();
    let x = arr(&n["x"]);
    assert_close("net", &net.apply(&x, None).unwrap(), &n["out"], TOL);
    let mask = AttentionMask::Array(nn::create_additive_causal_mask(16, Dtype::F32).unwrap());
    assert_close("net causal", &net.apply(&x, Some(&mask)).unwrap(), &n["out_causal"], TOL);
    assert!(net.apply(&ops::zeros(&[2, 4, 4, 2], Dtype::F32).unwrap(), None).and_then(|y| y.eval()).is_err());
}

/// Asserts a freshly built module's parameters are the golden ones, exactly
/// (same keys, same draws from the seeded key sequence).
fn assert_params(what: &str, m: &impl ModuleExt, want: &Value) {
    let got: ArrayMap = m.named_parameters().into_iter().collect();
    let want = want.as_object().unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: keys");
    for (k, v) in want {
        assert_close(&format!("{what} {k}"), &got[k], v, 0.0);
    }
}

#[test]
fn default_initialisation_draws_what_mlx_draws() {
    let g = load();
    let i = &g["init"];
    random::seed(11);
    assert_params("conv1d_g2", &nn::Conv1d::new(4, 6, [3], [1], [0], [1], 2, true).unwrap(), &i["conv1d_g2"]);
    random::seed(11);
    assert_params("conv2d", &nn::Conv2d::new(3, 4, [3, 2], [1, 1], [0, 0], [1, 1], 1, true).unwrap(), &i["conv2d"]);
    random::seed(11);
    assert_params("conv3d", &nn::Conv3d::new(2, 3, [2; 3], [1; 3], [0; 3], [1; 3], 1, false).unwrap(), &i["conv3d"]);
    random::seed(11);
    let ct1 = nn::ConvTranspose1d::new(3, 2, [4], [1], [0], [1], [0], true).unwrap();
    assert_params("conv_transpose1d", &ct1, &i["conv_transpose1d"]);
    random::seed(11);
    let ct2 = nn::ConvTranspose2d::new(2, 3, [2, 3], [1; 2], [0; 2], [1; 2], [0; 2], true).unwrap();
    assert_params("conv_transpose2d", &ct2, &i["conv_transpose2d"]);
    random::seed(11);
    let ct3 = nn::ConvTranspose3d::new(2, 2, [2; 3], [1; 3], [0; 3], [1; 3], [0; 3], true).unwrap();
    assert_params("conv_transpose3d", &ct3, &i["conv_transpose3d"]);
    random::seed(11);
    assert_params("bilinear", &nn::Bilinear::new(4, 3, 5, true).unwrap(), &i["bilinear"]);
    random::seed(11);
    assert_params("mha", &nn::MultiHeadAttention::with_dims(8, 2, [6, 8, 8], 4, 8, true).unwrap(), &i["mha"]);
    random::seed(11);
    let layer = nn::TransformerEncoderLayer::new(8, 2, Some(16), 0.0, true).unwrap();
    assert_params("transformer_layer", &layer, &i["transformer_layer"]);
    assert_params("group_norm", &nn::GroupNorm::new(2, 4, 1e-5, true, false).unwrap(), &i["group_norm"]);
    assert_params("instance_norm", &nn::InstanceNorm::new(4, 1e-5, true).unwrap(), &i["instance_norm"]);
    assert_params("batch_norm", &nn::BatchNorm::new(4, 1e-5, 0.1, true, true).unwrap(), &i["batch_norm"]);
    assert_params("prelu", &nn::PReLU::new(3, 0.25).unwrap(), &i["prelu"]);
    assert!(nn::LayerNorm::new(4, 0.0, true, true).is_err() && nn::RMSNorm::new(4, -1e-5).is_err());
}

/// Checks `loss = sum(call(model, inputs) · r)` and its gradients with respect
/// to the model's trainable parameters (by MLX key) and every input against
/// the golden case.
fn check_grads<M>(name: &str, mut model: M, call: impl Fn(&M, &[Array]) -> kiln_core::Result<Array>, c: &Value)
where
    M: ModuleExt + Clone,
{
    set(&mut model, &c["params"]);
    let inputs: Vec<Array> = c["inputs"].as_array().unwrap().iter().map(arr).collect();
    let r = arr(&c["r"]);
    let flat = tree_flatten(&model.trainable_parameters());
    let keys: Vec<String> = flat.iter().map(|(k, _)| k.clone()).collect();
    let n = keys.len();
    let mut all: Vec<Array> = flat.into_iter().map(|(_, a)| a).collect();
    all.extend(inputs);
    let vg = kiln_core::value_and_grad(
        |xs: &[Array]| {
            let mut m = model.clone();
            if n > 0 {
                m.update(&kiln_core::tree_unflatten(keys.iter().cloned().zip(xs[..n].iter().cloned()))?)?;
            }
            let y = call(&m, &xs[n..])?;
            Ok(vec![ops::sum(&ops::multiply(&y, &r)?, ops::Axes::All, false)?])
        },
        &(0..all.len()).collect::<Vec<_>>(),
    );
    let (loss, grads) = vg(&all).unwrap();
    // Gradients sum over many more terms than the outputs: 2e-5.
    assert_close(&format!("{name} loss"), &loss[0], &c["loss"], 2e-5);
    let want = c["grads"].as_object().unwrap();
    assert_eq!(keys.iter().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{name}: trainable keys");
    for (k, g) in keys.iter().zip(&grads) {
        assert_close(&format!("{name} d/d{k}"), g, &want[k], 2e-5);
    }
    for (i, w) in c["input_grads"].as_array().unwrap().iter().enumerate() {
        assert_close(&format!("{name} d/dinput{i}"), &grads[n + i], w, 2e-5);
    }
}

#[test]
fn gradients_match_mlx() {
    let g = load();
    let gc = &g["grads"];
    let fwd = |m: &dyn Forward, x: &[Array]| m.forward(&x[0]);
    check_grads(
        "conv2d",
        nn::Conv2d::new(4, 4, [3, 2], [2, 1], [1, 0], [1, 2], 2, true).unwrap(),
        |m, x| fwd(m, x),
        &gc["conv2d"],
    );
    check_grads("conv1d", nn::Conv1d::new(3, 4, [2], [2], [0], [2], 1, true).unwrap(), |m, x| fwd(m, x), &gc["conv1d"]);
    check_grads(
        "conv_transpose2d",
        nn::ConvTranspose2d::new(2, 3, [3, 2], [2, 3], [1, 0], [1, 1], [0, 0], true).unwrap(),
        |m, x| fwd(m, x),
        &gc["conv_transpose2d"],
    );
    let maxp = nn::MaxPool2d::new(PoolKind::Max, [3, 2], Some([2, 1]), [1, 0]).unwrap();
    check_grads("max_pool2d", maxp, |m, x| fwd(m, x), &gc["max_pool2d"]);
    let avgp = nn::AvgPool2d::new(PoolKind::Avg, [2, 2], Some([1, 1]), [1, 1]).unwrap();
    check_grads("avg_pool2d", avgp, |m, x| fwd(m, x), &gc["avg_pool2d"]);
    check_grads(
        "max_pool2d_ties",
        nn::MaxPool2d::new(PoolKind::Max, [2, 2], Some([1, 1]), [0, 0]).unwrap(),
        |m, x| fwd(m, x),
        &gc["max_pool2d_ties"],
    );
    check_grads(
        "max_pool2d_ties_nonoverlapping",
        nn::MaxPool2d::max([2, 2]),
        |m, x| fwd(m, x),
        &gc["max_pool2d_ties_nonoverlapping"],
    );
    check_grads(
        "max_pool1d",
        nn::MaxPool1d::new(PoolKind::Max, [3], Some([2]), [1]).unwrap(),
        |m, x| fwd(m, x),
        &gc["max_pool1d"],
    );
    let avg3 = nn::AvgPool3d::new(PoolKind::Avg, [2, 2, 1], Some([1, 2, 1]), [1, 0, 0]).unwrap();
    check_grads("avg_pool3d", avg3, |m, x| fwd(m, x), &gc["avg_pool3d"]);
    let gn = |pc| nn::GroupNorm::new(3, 6, 1e-5, true, pc).unwrap();
    check_grads("group_norm", gn(false), |m, x| fwd(m, x), &gc["group_norm"]);
    check_grads("group_norm_pytorch", gn(true), |m, x| fwd(m, x), &gc["group_norm_pytorch"]);
    check_grads("instance_norm", nn::InstanceNorm::new(3, 1e-5, true).unwrap(), |m, x| fwd(m, x), &gc["instance_norm"]);
    let bn = nn::BatchNorm::new(3, 1e-5, 0.1, true, true).unwrap();
    check_grads("batch_norm_train", bn, |m, x| fwd(m, x), &gc["batch_norm_train"]);
    let mut bn = nn::BatchNorm::new(3, 1e-5, 0.1, true, true).unwrap();
    bn.eval_mode();
    check_grads("batch_norm_eval", bn, |m, x| fwd(m, x), &gc["batch_norm_eval"]);
    check_grads("bilinear", nn::Bilinear::new(4, 3, 5, true).unwrap(), |m, x| m.apply(&x[0], &x[1]), &gc["bilinear"]);
    check_grads(
        "mha",
        nn::MultiHeadAttention::with_dims(8, 2, [8, 5, 5], 4, 8, true).unwrap(),
        |m, x| m.attend(&x[0], &x[1], &x[2], Some(&AttentionMask::Causal)),
        &gc["mha"],
    );
    let mask = AttentionMask::Array(arr(&g["transformer"]["mask"]));
    check_grads(
        "transformer_layer_post_norm",
        nn::TransformerEncoderLayer::new(8, 2, Some(16), 0.0, false).unwrap(),
        |m, x| m.apply(&x[0], Some(&mask)),
        &gc["transformer_layer_post_norm"],
    );
    let rope = nn::RoPE { dims: 6, traditional: true, base: 500.0, scale: 1.0 };
    check_grads("rope", rope, |m, x| m.apply(&x[0], 2), &gc["rope"]);
    let masks = &g["sdpa"]["masks"];
    let bool_mask = AttentionMask::Array(arr(&masks["bool_mask"]));
    check_grads(
        "sdpa_gqa_bool",
        nn::Identity::default(),
        |_, x| nn::scaled_dot_product_attention(&x[0], &x[1], &x[2], 0.3, Some(&bool_mask)),
        &gc["sdpa_gqa_bool"],
    );
    let add_mask = AttentionMask::Array(arr(&masks["add_mask"]));
    check_grads(
        "sdpa_causal_additive",
        nn::Identity::default(),
        |_, x| {
            let a = nn::scaled_dot_product_attention(&x[0], &x[1], &x[2], 0.3, Some(&add_mask))?;
            ops::add(&a, &nn::scaled_dot_product_attention(&x[0], &x[1], &x[2], 0.3, Some(&AttentionMask::Causal))?)
        },
        &gc["sdpa_causal_additive"],
    );
    let sin = nn::SinusoidalPositionalEncoding::new(8, 1e-4, 1.0, None, true, false).unwrap();
    check_grads("sinusoidal", sin, |m, x| fwd(m, x), &gc["sinusoidal"]);
}

#[test]
fn pooling_composes_with_vmap_jvp_and_second_order_grad() {
    // Overlapping windows go through a custom function (as_strided forward,
    // sliced backward): check the other transforms against plain loops and
    // finite differences.
    let g = load();
    let c = &g["pool"].as_array().unwrap()[4]; // max2d_rect
    let x = arr(&c["x"]); // (2, 5, 4, 3)
    let pool = nn::MaxPool2d::new(PoolKind::Max, [3, 2], Some([2, 1]), [1, 0]).unwrap();
    let avg = nn::AvgPool2d::new(PoolKind::Avg, [2, 2], Some([1, 1]), [1, 1]).unwrap();
    for (what, p) in [("max", pool), ("avg", avg)] {
        let full = p.forward(&x).unwrap();
        // vmap over a leading axis of a (3, 2, 5, 4, 3) stack gives each pooled.
        let stacked = ops::stack(&[x.clone(), ops::multiply(&x, 2.0).unwrap(), ops::negative(&x).unwrap()], 0).unwrap();
        let v = kiln_core::vmap(move |a: &[Array]| Ok(vec![p.forward(&a[0])?]), &[Some(0)], &[0])(&[stacked]).unwrap();
        let want = [
            full.clone(),
            p.forward(&ops::multiply(&x, 2.0).unwrap()).unwrap(),
            p.forward(&ops::negative(&x).unwrap()).unwrap(),
        ];
        for (i, w) in want.iter().enumerate() {
            let got = ops::take(&v[0], &Array::from_slice(&[i as i32], &[]).unwrap(), Some(0)).unwrap();
            assert_eq!(vals(&got), vals(w), "{what} vmap item {i}");
        }
        // jvp: pooling is piecewise linear, so the tangent of a small
        // direction is the (exact) difference quotient away from ties.
        let t = ops::sin(&x).unwrap();
        let (_, tan) = kiln_core::jvp(|a: &[Array]| Ok(vec![p.forward(&a[0])?]), &[x.clone()], &[t.clone()]).unwrap();
        let eps = 1e-3;
        let fd = ops::divide(
            &ops::subtract(&p.forward(&ops::add(&x, &ops::multiply(&t, eps).unwrap()).unwrap()).unwrap(), &full)
                .unwrap(),
            eps,
        )
        .unwrap();
        for (a, b) in vals(&tan[0]).iter().zip(vals(&fd)) {
            assert!((a - b).abs() < 1e-2, "{what} jvp {a} vs {b}");
        }
        // Second order: the gradient of sum(grad(sum(pool(x)²)) · x) exists.
        let gfun = kiln_core::grad(
            move |a: &[Array]| Ok(vec![ops::sum(&ops::square(&p.forward(&a[0])?)?, ops::Axes::All, false)?]),
            &[0],
        );
        let gg = kiln_core::grad(
            move |a: &[Array]| Ok(vec![ops::sum(&ops::multiply(&gfun(a)?[0], &a[0])?, ops::Axes::All, false)?]),
            &[0],
        )(&[x.clone()])
        .unwrap();
        // For a piecewise-linear pool, sum(grad(sum(pool²)) · x) = 2·sum(pool²), whose gradient is 2·grad(sum(pool²)).
        let g1 = kiln_core::grad(
            move |a: &[Array]| Ok(vec![ops::sum(&ops::square(&p.forward(&a[0])?)?, ops::Axes::All, false)?]),
            &[0],
        )(&[x.clone()])
        .unwrap();
        for (a, b) in vals(&gg[0]).iter().zip(vals(&g1[0])) {
            assert!((a - 2.0 * b).abs() < 1e-4 * b.abs().max(1.0), "{what} second order {a} vs 2·{b}");
        }
    }
}
