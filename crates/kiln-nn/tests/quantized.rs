//! Quantized layers: QuantizedLinear / QuantizedEmbedding against MLX 0.32.4
//! layer outputs (kiln-core's golden/quantized.json, `nn.*` cases), frozen
//! parameters, and in-place `quantize` of a model.

use kiln_core::ops::{self, QuantMode, QuantSpec};
use kiln_core::{tree_flatten, Array, Dtype};
use kiln_nn::{self as nn, Forward, ModuleExt, Param};
use serde_json::Value;

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        v => v.as_f64().expect("number"),
    }
}

fn arr(v: &Value) -> Array {
    let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data: Vec<f64> = v["data"].as_array().unwrap().iter().map(num).collect();
    match v["dtype"].as_str().unwrap() {
        "uint32" => Array::from_vec(data.iter().map(|&x| x as u32).collect(), &shape).unwrap(),
        "uint8" => Array::from_vec(data.iter().map(|&x| x as u8).collect(), &shape).unwrap(),
        "float32" => Array::from_vec(data.iter().map(|&x| x as f32).collect(), &shape).unwrap(),
        d => panic!("unexpected golden dtype {d}"),
    }
}

fn cases(op: &str) -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kiln-core/tests/golden/quantized.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"].as_array().unwrap().iter().filter(|c| c["op"] == op).cloned().collect()
}

fn spec_of(c: &Value) -> QuantSpec {
    let k = &c["kwargs"];
    let mode = match k["mode"].as_str().unwrap() {
        "affine" => QuantMode::Affine,
        "mxfp4" => QuantMode::Mxfp4,
        "nvfp4" => QuantMode::Nvfp4,
        _ => QuantMode::Mxfp8,
    };
    QuantSpec { group_size: k["group_size"].as_u64().unwrap() as usize, bits: k["bits"].as_u64().unwrap() as u32, mode }
}

fn f64s(a: &Array) -> Vec<f64> {
    ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap()
}

/// Closeness relative to the largest expected magnitude.
fn assert_close(what: &str, got: &Array, want: &Array, rtol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let (g, w) = (f64s(got), f64s(want));
    let scale = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= rtol * scale, "{what}[{i}]: {a} != {b}");
    }
}

#[test]
fn quantized_linear_matches_mlx() {
    let cs = cases("nn.QuantizedLinear");
    assert_eq!(cs.len(), 6);
    for c in &cs {
        let spec = spec_of(c);
        let ins: Vec<Array> = c["inputs"].as_array().unwrap().iter().map(arr).collect();
        let affine = spec.mode == QuantMode::Affine;
        let has_bias = c["kwargs"]["has_bias"].as_bool().unwrap();
        let biases = if affine { Some(ins[3].clone()) } else { None };
        let bias = if has_bias { Some(ins[ins.len() - 1].clone()) } else { None };
        let l = nn::QuantizedLinear::from_quantized(ins[1].clone(), ins[2].clone(), biases, bias, spec).unwrap();
        let y = l.forward(&ins[0]).unwrap();
        assert_close(c["id"].as_str().unwrap(), &y, &arr(&c["out"]), 2e-5);
        // MLX's parameter names.
        let keys: Vec<String> = l.named_parameters().into_iter().map(|(k, _)| k).collect();
        let mut want = vec!["weight", "scales"];
        if affine {
            want.push("biases");
        }
        if has_bias {
            want.push("bias");
        }
        assert_eq!(keys, want);
    }
}

#[test]
fn quantized_embedding_matches_mlx() {
    let cs = cases("nn.QuantizedEmbedding");
    assert_eq!(cs.len(), 2);
    for c in &cs {
        let spec = spec_of(c);
        let ins: Vec<Array> = c["inputs"].as_array().unwrap().iter().map(arr).collect();
        let e = nn::QuantizedEmbedding {
            weight: Param::frozen(ins[1].clone()),
            scales: Param::frozen(ins[2].clone()),
            biases: Some(Param::frozen(ins[3].clone())),
            spec,
        };
        let outs = c["out"].as_array().unwrap();
        // Lookups dequantize exactly.
        assert_close("lookup", &e.forward(&ins[0]).unwrap(), &arr(&outs[0]), 0.0);
        assert_close("as_linear", &e.as_linear(&ins[4]).unwrap(), &arr(&outs[1]), 2e-5);
        let any = nn::AnyEmbedding::Quantized(e);
        assert_close("any.as_linear", &any.as_linear(&ins[4]).unwrap(), &arr(&outs[1]), 2e-5);
    }
}

#[test]
fn from_linear_and_frozen_parameters() {
    let lin = nn::Linear::new(64, 6, true).unwrap();
    let spec = QuantSpec::affine(32, 4);
    let q = nn::QuantizedLinear::from_linear(&lin, spec).unwrap();
    let (wq, s, b) = ops::quantize(&lin.weight, spec).unwrap();
    assert_eq!(q.weight.to_vec::<u32>().unwrap(), wq.to_vec::<u32>().unwrap());
    assert_eq!(q.scales.to_vec::<f32>().unwrap(), s.to_vec::<f32>().unwrap());
    assert_eq!(q.biases.as_ref().unwrap().to_vec::<f32>().unwrap(), b.unwrap().to_vec::<f32>().unwrap());
    assert_eq!(q.dims(), (6, 64));
    // As MLX: the packed arrays are frozen, a copied bias stays trainable, and
    // a freshly initialised layer is frozen entirely.
    let t: Vec<String> = tree_flatten(&q.trainable_parameters()).into_iter().map(|(k, _)| k).collect();
    assert_eq!(t, vec!["bias".to_string()]);
    let fresh = nn::QuantizedLinear::new(64, 6, true, spec).unwrap();
    assert!(tree_flatten(&fresh.trainable_parameters()).is_empty());
    assert_eq!(fresh.named_parameters().len(), 4);
    let e = nn::QuantizedEmbedding::new(10, 64, QuantSpec::default_for(QuantMode::Mxfp4)).unwrap();
    assert!(tree_flatten(&e.trainable_parameters()).is_empty());
    assert_eq!(e.forward(&Array::from_slice(&[3u32, 1], &[2]).unwrap()).unwrap().shape(), &[2, 64]);
    // Errors, not panics.
    assert!(
        nn::QuantizedLinear::from_linear(&nn::Linear::new(48, 6, false).unwrap(), QuantSpec::affine(32, 4)).is_err()
    );
    assert!(nn::QuantizedLinear::from_weights(&ops::zeros(&[64], Dtype::F32).unwrap(), None, spec).is_err());
    assert!(nn::QuantizedLinear::from_quantized(wq.clone(), s.clone(), None, None, spec).is_err());
}

#[derive(Clone, nn::Module)]
struct Model {
    embed: nn::AnyEmbedding,
    layers: Vec<nn::AnyLinear>,
    head: nn::AnyLinear,
    plain: nn::Linear,
}

impl Model {
    fn new() -> Model {
        Model {
            embed: nn::AnyEmbedding::new(16, 64).unwrap(),
            layers: vec![nn::AnyLinear::new(64, 128, true).unwrap(), nn::AnyLinear::new(128, 64, false).unwrap()],
            head: nn::AnyLinear::new(64, 32, true).unwrap(),
            plain: nn::Linear::new(32, 8, true).unwrap(),
        }
    }
    /// Embedding, two layers, head and a dense layer, plus the tied output
    /// projection (summed over the vocabulary).
    fn run(&self, idx: &Array) -> Array {
        let mut h = self.embed.forward(idx).unwrap();
        for l in &self.layers {
            h = l.forward(&h).unwrap();
        }
        let tied = ops::sum(&self.embed.as_linear(&h).unwrap(), -1, true).unwrap();
        let y = self.plain.forward(&self.head.forward(&h).unwrap()).unwrap();
        ops::add(&y, &ops::multiply(&tied, 0.01).unwrap()).unwrap()
    }
}

#[test]
fn quantize_model_in_place() {
    kiln_core::random::seed(3);
    let dense = Model::new();
    let idx = Array::from_slice(&[1u32, 5, 9], &[3]).unwrap();
    let y_dense = dense.run(&idx);

    // Everything quantizable, with the mode's defaults (affine 64/4).
    let mut m = dense.clone();
    let done = nn::quantize(&mut m, None, None, QuantMode::Affine, None).unwrap();
    assert_eq!(done, vec!["embed", "layers.0", "layers.1", "head"]);
    let keys: Vec<String> = m.named_parameters().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "embed.weight",
            "embed.scales",
            "embed.biases",
            "layers.0.weight",
            "layers.0.scales",
            "layers.0.biases",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.scales",
            "layers.1.biases",
            "head.weight",
            "head.scales",
            "head.biases",
            "head.bias",
            "plain.weight",
            "plain.bias",
        ]
    );
    assert!(matches!(&m.head, nn::AnyLinear::Quantized(q) if q.spec == QuantSpec::affine(64, 4)));
    // Only the biases and the dense layer remain trainable.
    let mut t: Vec<String> = tree_flatten(&m.trainable_parameters()).into_iter().map(|(k, _)| k).collect();
    t.sort();
    assert_eq!(t, vec!["head.bias", "layers.0.bias", "plain.bias", "plain.weight"]);
    let y_q = m.run(&idx);
    let (a, b) = (f64s(&y_q), f64s(&y_dense));
    let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(err < 0.5, "4-bit model drifted by {err}");
    // Quantizing again changes nothing.
    assert!(nn::quantize(&mut m, None, None, QuantMode::Affine, None).unwrap().is_empty());

    // A predicate: skip the embedding, 8 bits for the head, defaults elsewhere.
    let mut m2 = dense.clone();
    let pred = |key: &str, l: &dyn nn::Quantizable| -> nn::QuantizeChoice {
        if l.kind() == "Embedding" {
            nn::QuantizeChoice::Skip
        } else if key == "head" {
            nn::QuantizeChoice::With(QuantSpec::affine(32, 8))
        } else {
            true.into()
        }
    };
    let done = nn::quantize(&mut m2, Some(32), Some(4), QuantMode::Affine, Some(&pred)).unwrap();
    assert_eq!(done, vec!["layers.0", "layers.1", "head"]);
    assert!(matches!(m2.embed, nn::AnyEmbedding::Dense(_)));
    assert!(matches!(&m2.head, nn::AnyLinear::Quantized(q) if q.spec == QuantSpec::affine(32, 8)));
    assert!(matches!(&m2.layers[0], nn::AnyLinear::Quantized(q) if q.spec == QuantSpec::affine(32, 4)));

    // Gradients flow to the trainable biases through the quantized layers.
    let loss = nn::value_and_grad(|mm: &Model, a: &[Array]| ops::sum(&mm.run(&a[0]), kiln_core::Axes::All, false));
    let (_, g) = loss(&m, std::slice::from_ref(&idx)).unwrap();
    let mut gk: Vec<String> = tree_flatten(&g).into_iter().map(|(k, _)| k).collect();
    gk.sort();
    assert_eq!(gk, vec!["head.bias", "layers.0.bias", "plain.bias", "plain.weight"]);

    // Bad parameters are errors.
    let mut m3 = dense.clone();
    assert!(nn::quantize(&mut m3, Some(48), None, QuantMode::Affine, None).is_err());
    let mut small = nn::AnyLinear::new(40, 4, false).unwrap();
    assert!(nn::quantize(&mut small, Some(32), None, QuantMode::Affine, None).is_err());
    assert!(matches!(small, nn::AnyLinear::Dense(_)));
    // The fp modes.
    let mut m4 = dense.clone();
    nn::quantize(&mut m4, None, None, QuantMode::Mxfp4, None).unwrap();
    assert!(matches!(&m4.head, nn::AnyLinear::Quantized(q) if q.biases.is_none()));
    assert_eq!(m4.run(&idx).shape(), y_dense.shape());
}
