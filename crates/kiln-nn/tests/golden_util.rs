//! Reading `golden/nn.json` (shared by kiln-nn's and kiln-optim's tests).
#![allow(dead_code)]

use kiln_core::{Array, Dtype};
use serde_json::Value;

pub fn load() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kiln-nn/tests/golden/nn.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("valid JSON")
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        Value::Bool(b) => *b as u8 as f64,
        v => v.as_f64().expect("number"),
    }
}

/// A golden tensor as an array of its dtype (float32, int32 or uint64).
pub fn arr(v: &Value) -> Array {
    let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data: Vec<f64> = v["data"].as_array().unwrap().iter().map(num).collect();
    match v["dtype"].as_str().unwrap() {
        "int32" => Array::from_slice(&data.iter().map(|&x| x as i32).collect::<Vec<_>>(), &shape).unwrap(),
        "uint64" => Array::from_slice(&data.iter().map(|&x| x as u64).collect::<Vec<_>>(), &shape).unwrap(),
        "float32" => Array::from_slice(&data.iter().map(|&x| x as f32).collect::<Vec<_>>(), &shape).unwrap(),
        d => panic!("unexpected golden dtype {d}"),
    }
}

/// Asserts `got` equals the golden tensor within `tol` (relative to max(1, |want|)).
pub fn assert_close(what: &str, got: &Array, want: &Value, tol: f64) {
    let w = arr(want);
    assert_eq!(got.shape(), w.shape(), "{what}: shape");
    let g: Vec<f64> = kiln_core::ops::astype(got, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    let e: Vec<f64> = kiln_core::ops::astype(&w, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    for (i, (a, b)) in g.iter().zip(&e).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * b.abs().max(1.0);
        assert!(ok, "{what}[{i}]: got {a}, want {b} (tol {tol})");
    }
}
