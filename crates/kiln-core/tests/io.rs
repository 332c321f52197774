//! File formats: MLX-written fixtures load exactly, Kiln-written files load
//! in MLX (when /work/refvenv exists), round trips are exact for every dtype,
//! GGUF quantized types match the `gguf` package's dequantization, loading is
//! lazy, and corrupted or hostile files give errors, never panics.

mod common;

use common::{golden_dir, Rng};
use kiln_core::io::{self, ArrayMap, GgmlType, GgufValue, Loaded, Metadata};
use kiln_core::{c64, ops, Array, Dtype, ErrorKind};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    golden_dir().join("io").join(name)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln_io_{}_{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Exact bytes of an array (its `.npy` image), for bit-exact comparisons.
fn bits(a: &Array) -> Vec<u8> {
    io::to_npy_bytes(a).unwrap()
}

/// Checks `a` against an `expected.json` entry, exactly.
fn check_expected(what: &str, a: &Array, e: &Value) {
    assert_eq!(a.dtype().name(), e["dtype"].as_str().unwrap(), "{what}: dtype");
    let shape: Vec<usize> = e["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(a.shape(), &shape[..], "{what}: shape");
    let vals = e["values"].as_array().unwrap();
    let d = a.dtype();
    if d == Dtype::Bool {
        let got = a.to_vec::<bool>().unwrap();
        let want: Vec<bool> = vals.iter().map(|v| v.as_bool().unwrap()).collect();
        assert_eq!(got, want, "{what}");
    } else if d.is_unsigned() {
        let got = ops::astype(a, Dtype::U64).unwrap().to_vec::<u64>().unwrap();
        let want: Vec<u64> = vals.iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(got, want, "{what}");
    } else if d.is_signed_integer() {
        let got = ops::astype(a, Dtype::I64).unwrap().to_vec::<i64>().unwrap();
        let want: Vec<i64> = vals.iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(got, want, "{what}");
    } else if d == Dtype::C64 {
        let got = a.to_vec::<c64>().unwrap();
        let want: Vec<c64> =
            vals.iter().map(|v| c64::new(v[0].as_f64().unwrap() as f32, v[1].as_f64().unwrap() as f32)).collect();
        assert_eq!(got, want, "{what}");
    } else {
        let got = ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
        let want: Vec<f64> = vals.iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(got, want, "{what}");
    }
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

#[test]
fn mlx_written_files_load_exactly() {
    let exp = expected();
    let mut checked = 0;
    for (file, arrays) in exp.as_object().unwrap() {
        match io::load(fixture(file), None).unwrap() {
            Loaded::Array(a) => {
                assert_eq!(a.primitive().unwrap().name(), "Load", "{file}: loads lazily");
                check_expected(file, &a, &arrays[""]);
                checked += 1;
            }
            Loaded::Arrays(map, _) => {
                let names: Vec<&String> = arrays.as_object().unwrap().keys().collect();
                assert_eq!(map.keys().collect::<Vec<_>>(), names, "{file}: names");
                for (n, e) in arrays.as_object().unwrap() {
                    check_expected(&format!("{file}:{n}"), &map[n], e);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 50, "only {checked} arrays checked");
}

#[test]
fn mlx_metadata_loads() {
    let Loaded::Arrays(_, Metadata::Strings(m)) = io::load(fixture("mlx.safetensors"), None).unwrap() else {
        panic!("safetensors metadata")
    };
    let want: BTreeMap<String, String> =
        [("format", "mlx"), ("note", "ü \"q\"")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(m, want);
    let (_, g) = io::load_gguf(fixture("mlx.gguf")).unwrap();
    assert_eq!(g["s"], GgufValue::String("text".into()));
    assert_eq!(g["l"], GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("bc".into())]));
    assert_eq!(g["arr"], GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(2), GgufValue::I32(3)]));
    assert_eq!(g["f"], GgufValue::F32(1.5));
    assert_eq!(g["u8"], GgufValue::Array(vec![GgufValue::U8(1), GgufValue::U8(2)]));
    // As MLX returns them: arrays for numbers, none for strings.
    assert_eq!(g["arr"].to_array().unwrap().to_vec::<i32>().unwrap(), vec![1, 2, 3]);
    assert_eq!(g["f"].to_array().unwrap().item::<f32>().unwrap(), 1.5);
    assert!(g["l"].to_array().is_none());
}

#[test]
fn gguf_quantized_types_match_the_gguf_package() {
    let f = io::read_gguf(fixture("quants.gguf")).unwrap();
    let by_name: BTreeMap<&str, &io::GgufTensor> = f.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let types = [
        ("q4_0", GgmlType::Q4_0),
        ("q4_1", GgmlType::Q4_1),
        ("q5_0", GgmlType::Q5_0),
        ("q5_1", GgmlType::Q5_1),
        ("q8_0", GgmlType::Q8_0),
        ("q4_k", GgmlType::Q4_K),
        ("q5_k", GgmlType::Q5_K),
        ("q6_k", GgmlType::Q6_K),
        ("q2_k", GgmlType::Q2_K),
        ("q3_k", GgmlType::Q3_K),
        ("q8_k", GgmlType::Q8_K),
        ("iq4_nl", GgmlType::IQ4_NL),
        ("iq4_xs", GgmlType::IQ4_XS),
    ];
    for (name, ty) in types {
        let t = by_name[name];
        assert_eq!(t.ggml_type, ty);
        assert_eq!(t.bytes().len(), ty.row_bytes(t.shape.iter().product()).unwrap(), "{name}: raw bytes");
        let got = t.to_array();
        let want = by_name[format!("{name}.expected").as_str()].to_array();
        assert_eq!(got.dtype(), Dtype::F32);
        assert_eq!(got.shape(), want.shape(), "{name}");
        let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{name}[{i}]: {a} vs {b}");
        }
    }
    use GgufValue as V;
    let m = &f.metadata;
    assert_eq!(m["m.u8"], V::U8(200));
    assert_eq!(m["m.i8"], V::I8(-100));
    assert_eq!(m["m.u16"], V::U16(60000));
    assert_eq!(m["m.i16"], V::I16(-30000));
    assert_eq!(m["m.u32"], V::U32(4000000000));
    assert_eq!(m["m.i32"], V::I32(-2000000000));
    assert_eq!(m["m.u64"], V::U64(u64::MAX));
    assert_eq!(m["m.i64"], V::I64(i64::MIN));
    assert_eq!(m["m.f32"], V::F32(0.1));
    assert_eq!(m["m.f64"], V::F64(0.1));
    assert_eq!(m["m.bool"], V::Bool(true));
    assert_eq!(m["m.str"], V::String("héllo".into()));
    assert_eq!(m["m.strs"], V::Array(vec![V::String("a".into()), V::String("".into()), V::String("ccc".into())]));
    assert!(matches!(&m["m.ints"], V::Array(v) if v.len() == 3));
    assert!(matches!(&m["m.nested"], V::Array(v) if v.len() == 2 && matches!(&v[0], V::Array(w) if w.len() == 2)));
}

/// One array of every dtype, with edge values.
fn every_dtype() -> ArrayMap {
    let mut m = ArrayMap::new();
    let mut add = |n: &str, a: Array| {
        m.insert(n.to_string(), a);
    };
    add("bool", Array::from_slice(&[true, false, true, true, false, false], &[2, 3]).unwrap());
    add("uint8", Array::from_slice(&[0u8, 1, 255], &[3]).unwrap());
    add("uint16", Array::from_slice(&[0u16, 65535], &[2, 1]).unwrap());
    add("uint32", Array::from_slice(&[0u32, u32::MAX], &[2]).unwrap());
    add("uint64", Array::from_slice(&[0u64, u64::MAX], &[2]).unwrap());
    add("int8", Array::from_slice(&[i8::MIN, i8::MAX, 0], &[3]).unwrap());
    add("int16", Array::from_slice(&[i16::MIN, i16::MAX], &[2]).unwrap());
    add("int32", Array::from_slice(&[i32::MIN, i32::MAX, -1, 2], &[2, 2]).unwrap());
    add("int64", Array::from_slice(&[i64::MIN, i64::MAX], &[2]).unwrap());
    add("float16", Array::from_slice(&[1.5f32, -0.0, 65504.0, f32::INFINITY], &[4]).unwrap());
    add("float32", Array::from_slice(&[1e-40f32, -0.0, f32::MAX, f32::NEG_INFINITY, 0.1], &[5]).unwrap());
    add("float64", Array::from_slice(&[1e-310f64, -0.0, f64::MAX, 0.1], &[2, 2]).unwrap());
    add("bfloat16", Array::from_slice(&[1.5f32, -3.0e38, 1e-30], &[3, 1, 1]).unwrap());
    add("complex64", Array::from_slice(&[c64::new(1.0, -2.0), c64::new(0.5, 1e30)], &[2]).unwrap());
    add("scalar", Array::scalar(2.5f32));
    add("empty", Array::from_slice::<f32>(&[], &[0, 4]).unwrap());
    // A transposed view is written in row-major order.
    add("transposed", ops::transpose(&Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3]).unwrap()).unwrap());
    m.into_iter()
        .map(|(k, a)| {
            let a = match k.as_str() {
                "float16" => ops::astype(&a, Dtype::F16).unwrap(),
                "bfloat16" => ops::astype(&a, Dtype::BF16).unwrap(),
                _ => a,
            };
            (k, a)
        })
        .collect()
}

fn assert_same(what: &str, a: &ArrayMap, b: &ArrayMap) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: names");
    for (k, x) in a {
        assert_eq!(x.shape(), b[k].shape(), "{what}:{k}");
        assert_eq!(x.dtype(), b[k].dtype(), "{what}:{k}");
        assert_eq!(bits(x), bits(&b[k]), "{what}:{k}: values differ");
    }
}

#[test]
fn round_trips_are_exact() {
    let dir = tmpdir("rt");
    let arrays = every_dtype();
    for (k, a) in &arrays {
        let p = dir.join(format!("{k}.npy"));
        io::save_npy(&p, a).unwrap();
        let b = io::load_npy(&p).unwrap();
        assert_same("npy", &[(k.clone(), a.clone())].into(), &[(k.clone(), b)].into());
    }
    // save_npy appends the extension, as mx.save does.
    io::save_npy(dir.join("noext"), &arrays["int8"]).unwrap();
    assert!(dir.join("noext.npy").exists());
    for compressed in [false, true] {
        let p = dir.join(format!("all_{compressed}.npz"));
        io::save_npz(&p, &arrays, compressed).unwrap();
        assert_same("npz", &arrays, &io::load_npz(&p).unwrap());
    }
    let meta: BTreeMap<String, String> = [("a", "1"), ("ключ", "значение \"\\\n\t\u{1}"), ("", "")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let p = dir.join("all.safetensors");
    io::save_safetensors(&p, &arrays, &meta).unwrap();
    let (back, m) = io::load_safetensors(&p).unwrap();
    assert_same("safetensors", &arrays, &back);
    assert_eq!(m, meta);
    let gguf_ok: ArrayMap = arrays
        .iter()
        .filter(|(_, a)| {
            matches!(
                a.dtype(),
                Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 | Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64
            )
        })
        .map(|(k, a)| (k.clone(), a.clone()))
        .collect();
    use GgufValue as V;
    let gmeta: BTreeMap<String, GgufValue> = [
        ("u8", V::U8(7)),
        ("i8", V::I8(-7)),
        ("u16", V::U16(65535)),
        ("i16", V::I16(-1)),
        ("u32", V::U32(u32::MAX)),
        ("i32", V::I32(i32::MIN)),
        ("u64", V::U64(u64::MAX)),
        ("i64", V::I64(i64::MIN)),
        ("f32", V::F32(-0.25)),
        ("f64", V::F64(1e300)),
        ("bool", V::Bool(false)),
        ("str", V::String("ß\u{0}x".into())),
        ("strs", V::Array(vec![V::String("a".into()), V::String("".into())])),
        ("nested", V::Array(vec![V::Array(vec![V::F64(1.0)]), V::Array(vec![])])),
        ("empty", V::Array(vec![])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let p = dir.join("all.gguf");
    io::save_gguf(&p, &gguf_ok, &gmeta).unwrap();
    let (back, m) = io::load_gguf(&p).unwrap();
    assert_same("gguf", &gguf_ok, &back);
    assert_eq!(m, gmeta);
    assert!(io::save_gguf(dir.join("bad.gguf"), &arrays, &BTreeMap::new()).is_err(), "bool has no GGUF type");
    let mixed = [("m".to_string(), V::Array(vec![V::U8(1), V::I8(1)]))].into();
    assert!(io::save_gguf(dir.join("bad.gguf"), &gguf_ok, &mixed).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn loading_is_lazy_and_reads_only_what_is_used() {
    let dir = tmpdir("lazy");
    let big = ops::full(&[1 << 20], 1.5f32, Dtype::F32).unwrap();
    let small = Array::from_slice(&[1i16, 2, 3], &[3]).unwrap();
    let arrays: ArrayMap = [("big".to_string(), big), ("small".to_string(), small)].into();
    let p = dir.join("lazy.safetensors");
    io::save_safetensors(&p, &arrays, &BTreeMap::new()).unwrap();
    let (m, _) = io::load_safetensors(&p).unwrap();
    assert!(!m["big"].is_evaluated() && !m["small"].is_evaluated());
    assert_eq!(m["small"].to_vec::<i16>().unwrap(), vec![1, 2, 3]);
    assert!(!m["big"].is_evaluated(), "using one tensor must not read the other");
    assert_eq!(
        ops::sum(&m["big"], kiln_core::Axes::All, false).unwrap().item::<f32>().unwrap(),
        (1 << 20) as f32 * 1.5
    );
    // The arrays stay valid after the file is gone (the mapping outlives it).
    let (m2, _) = io::load_safetensors(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    assert_eq!(m2["small"].to_vec::<i16>().unwrap(), vec![1, 2, 3]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fortran_and_big_endian_npy() {
    let a = io::load_npy(fixture("np_fortran.npy")).unwrap();
    assert_eq!(a.to_vec::<f64>().unwrap(), vec![0.0, 1.5, 3.0, 4.5, 6.0, 7.5]);
    let b = io::load_npy(fixture("np_bigendian.npy")).unwrap();
    assert_eq!(b.to_vec::<i32>().unwrap(), vec![1, -2, 300000, 4, 5, -6]);
    // A column-major view feeds ordinary ops.
    let s = ops::sum(&a, 0, false).unwrap();
    assert_eq!(s.to_vec::<f64>().unwrap(), vec![4.5, 7.5, 10.5]);
}

#[test]
fn unknown_extension_and_missing_file_are_errors() {
    assert!(io::load("x.bin", None).is_err());
    let e = io::load("/nonexistent/kiln/x.npy", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains("x.npy"), "{e}");
}

// ------------------------------------------------------------- hostile input

/// Parses `bytes` as `fmt` and evaluates every array; must never panic.
fn try_all(fmt: io::Format, bytes: &[u8]) -> kiln_core::Result<()> {
    let arrays: Vec<Array> = match fmt {
        io::Format::Npy => vec![io::load_npy_bytes(bytes.to_vec())?],
        io::Format::Npz => io::load_npz_bytes(bytes.to_vec())?.into_values().collect(),
        io::Format::Safetensors => io::load_safetensors_bytes(bytes.to_vec())?.0.into_values().collect(),
        io::Format::Gguf => io::load_gguf_bytes(bytes.to_vec())?.0.into_values().collect(),
    };
    for a in &arrays {
        a.eval()?;
    }
    Ok(())
}

fn corpus() -> Vec<(io::Format, Vec<u8>)> {
    let f = |n: &str| std::fs::read(fixture(n)).unwrap();
    vec![
        (io::Format::Npy, f("mlx_float32.npy")),
        (io::Format::Npy, f("np_fortran.npy")),
        (io::Format::Npz, f("mlx.npz")),
        (io::Format::Npz, f("mlx_compressed.npz")),
        (io::Format::Safetensors, f("mlx.safetensors")),
        (io::Format::Gguf, f("mlx.gguf")),
        (io::Format::Gguf, f("quants.gguf")),
    ]
}

#[test]
fn truncation_at_every_byte_gives_errors() {
    for (fmt, bytes) in corpus() {
        try_all(fmt, &bytes).unwrap();
        let mut errors = 0;
        for n in 0..bytes.len() {
            if try_all(fmt, &bytes[..n]).is_err() {
                errors += 1;
            }
        }
        // A cut in trailing padding may still leave a valid file; nothing else may.
        assert!(errors + 32 >= bytes.len(), "{fmt:?}: only {errors} of {} truncations rejected", bytes.len());
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let mut rng = Rng::new(7);
    for (fmt, bytes) in corpus() {
        let mut errors = 0;
        for _ in 0..600 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let i = (rng.next_u64() % b.len() as u64) as usize;
                b[i] = match rng.next_u64() % 3 {
                    0 => rng.next_u64() as u8,
                    1 => 0xFF,
                    _ => b[i] ^ (1 << (rng.next_u64() % 8)),
                };
            }
            if let Err(e) = try_all(fmt, &b) {
                assert!(matches!(e.kind(), ErrorKind::Io | ErrorKind::OutOfMemory), "{fmt:?}: {e}");
                errors += 1;
            }
        }
        assert!(errors > 0, "{fmt:?}: no corruption detected");
    }
}

fn st(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + data_len, 0);
    v
}

fn assert_io_err(what: &str, fmt: io::Format, bytes: &[u8], needle: &str) {
    let e = try_all(fmt, bytes).expect_err(what);
    assert_eq!(e.kind(), ErrorKind::Io, "{what}: {e}");
    assert!(e.to_string().contains(needle), "{what}: '{e}' lacks '{needle}'");
}

#[test]
fn lying_safetensors_headers() {
    use io::Format::Safetensors as S;
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    try_all(S, &st(ok, 8)).unwrap();
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert_io_err("huge header length", S, &huge, "header length");
    assert_io_err("truncated data", S, &st(ok, 7), "outside");
    let cases = [
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}"#, "outside"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, "outside"),
        (r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, "need"),
        (r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#, "too many"),
        (r#"{"a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]}}"#, "bad shape"),
        (r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#, "bad shape"),
        (r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, "unknown dtype"),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
            "overlap",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            "duplicate",
        ),
        (r#"{"a":{"dtype":"F32","shape":[2]}}"#, "needs"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}"#, "unexpected"),
        (r#"{"__metadata__":{"k":1}}"#, "not a string"),
        (r#"{"a":1}"#, "not an object"),
        (r#"[]"#, "not a JSON object"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x"#, "trailing"),
        (r#"{"a\ud800":{}}"#, "surrogate"),
        (r#"{"a":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}}"#, "bad number"),
        ("{\"a\u{1}\":{}}", "control"),
    ];
    for (h, needle) in cases {
        assert_io_err(h, S, &st(h, 8), needle);
    }
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert_io_err("deep nesting", S, &st(&deep, 0), "nested too deeply");
    let mut bad_utf8 = st(ok, 8);
    bad_utf8[10] = 0xFF;
    assert_io_err("bad utf-8", S, &bad_utf8, "UTF-8");
}

#[test]
fn lying_npy_headers() {
    use io::Format::Npy as N;
    let npy = |h: &str, data: usize| {
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.resize(v.len() + data, 0);
        v
    };
    try_all(N, &npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8)).unwrap();
    let cases = [
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "truncated"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", "too many"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }", "out of range"),
        ("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", "unsupported dtype"),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "unsupported dtype"),
        ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "structured"),
        ("{'descr': '<f4', 'fortran_order': False}", "required"),
        ("{'descr': '<f4', 'fortran_order': 1, 'shape': (2,), }", "malformed key"),
        ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "duplicate"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", "unexpected character"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': ((((((((((2,),),),),),),),),),), }", "nested"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk", "trailing"),
    ];
    for (h, needle) in cases {
        assert_io_err(h, N, &npy(h, 8), needle);
    }
    let mut v = b"\x93NUMPY\x02\x00".to_vec();
    v.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_io_err("huge header length", N, &v, "remain");
    assert_io_err("bad magic", N, b"PK\x03\x04", "magic");
    assert_io_err("bad version", N, b"\x93NUMPY\x09\x00\x00\x00", "version");
}

/// A minimal GGUF image from parts.
struct G(Vec<u8>);
impl G {
    fn new(n_tensors: u64, n_kv: u64) -> G {
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&n_tensors.to_le_bytes());
        v.extend_from_slice(&n_kv.to_le_bytes());
        G(v)
    }
    fn u32(mut self, x: u32) -> G {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(mut self, x: u64) -> G {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn s(self, x: &str) -> G {
        let mut g = self.u64(x.len() as u64);
        g.0.extend_from_slice(x.as_bytes());
        g
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, off: u64) -> G {
        let mut g = self.s(name).u32(dims.len() as u32);
        for &d in dims {
            g = g.u64(d);
        }
        g.u32(ty).u64(off)
    }
    fn data(mut self, n: usize) -> G {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + n, 0x3c);
        self
    }
}

#[test]
fn lying_gguf_headers() {
    use io::Format::Gguf as F;
    try_all(F, &G::new(1, 0).tensor("a", &[4], 0, 0).data(16).0).unwrap();
    try_all(F, &G::new(1, 0).tensor("q", &[32], 2, 0).data(18).0).unwrap();
    let cases: Vec<(&str, G, &str)> = vec![
        ("huge tensor count", G::new(u64::MAX, 0), "remain"),
        ("huge kv count", G::new(0, 1 << 60), "remain"),
        ("huge string", G::new(0, 1).u64(u64::MAX >> 1), "remain"),
        ("huge array", G::new(0, 1).s("k").u32(9).u32(0).u64(1 << 62), "exceeds"),
        ("unknown value type", G::new(0, 1).s("k").u32(99), "unknown metadata value type"),
        ("bad bool", G::new(0, 1).s("k").u32(7).u32(2), "bool"),
        ("bad utf-8", G::new(0, 1).u64(1).u32(0xFF).u32(0), "UTF-8"),
        ("duplicate key", G::new(0, 2).s("k").u32(4).u32(1).s("k").u32(4).u32(1), "duplicate"),
        ("bad alignment", G::new(0, 1).s("general.alignment").u32(4).u32(3), "alignment"),
        ("too many dims", G::new(1, 0).tensor("a", &[1; 5], 0, 0).data(4), "dimensions"),
        ("unknown type", G::new(1, 0).tensor("a", &[4], 99, 0).data(16), "unsupported GGML type"),
        ("IQ2_XXS unsupported", G::new(1, 0).tensor("a", &[256], 16, 0).data(66), "unsupported GGML type 16"),
        ("misaligned", G::new(1, 0).tensor("a", &[4], 0, 4).data(32), "aligned"),
        ("out of bounds", G::new(1, 0).tensor("a", &[4], 0, 32).data(16), "outside"),
        ("partial block", G::new(1, 0).tensor("a", &[16], 2, 0).data(18), "blocks"),
        ("overflowing shape", G::new(1, 0).tensor("a", &[1 << 32, 1 << 32, 1 << 32], 0, 0).data(16), "too many"),
        ("overlap", G::new(2, 0).tensor("a", &[16], 0, 0).tensor("b", &[4], 0, 32).data(64), "overlap"),
        ("duplicate tensor", G::new(2, 0).tensor("a", &[4], 0, 0).tensor("a", &[4], 0, 32).data(64), "duplicate"),
        ("bad version", G(b"GGUF\x07\x00\x00\x00".to_vec()), "version"),
    ];
    for (what, g, needle) in cases {
        assert_io_err(what, F, &g.0, needle);
    }
    let mut deep = G::new(0, 1).s("k").u32(9);
    for _ in 0..100 {
        deep = deep.u32(9).u64(1);
    }
    assert_io_err("deep arrays", F, &deep.0, "nested too deeply");
}

#[test]
fn lying_zip_archives() {
    use io::Format::Npz as Z;
    let good = std::fs::read(fixture("mlx.npz")).unwrap();
    let eocd = good.len() - 22;
    let patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    assert_io_err("cd out of bounds", Z, &patch(eocd + 16, &u32::MAX.to_le_bytes()[..]), "");
    assert_io_err("cd size lies", Z, &patch(eocd + 12, &1_000_000u32.to_le_bytes()[..]), "out of bounds");
    assert_io_err("no eocd", Z, &good[..good.len() - 4], "end of central directory");
    // First central directory entry: method, sizes, local offset.
    let cd = u32::from_le_bytes(good[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    assert_io_err("unknown method", Z, &patch(cd + 10, &99u16.to_le_bytes()[..]), "compression method");
    assert_io_err("sizes lie", Z, &patch(cd + 20, &0x7000_0000u32.to_le_bytes()[..]), "past the end");
    assert_io_err("local offset lies", Z, &patch(cd + 42, &0x7000_0000u32.to_le_bytes()[..]), "out of bounds");
    assert_io_err("encrypted", Z, &patch(cd + 8, &1u16.to_le_bytes()[..]), "encrypted");
    // Two entries pointing at the same data.
    let second = cd + 46 + u16::from_le_bytes([good[cd + 28], good[cd + 29]]) as usize;
    assert_io_err("overlap", Z, &patch(second + 42, &0u32.to_le_bytes()[..]), "");
    // A deflated entry claiming more than deflate can produce.
    let comp = std::fs::read(fixture("mlx_compressed.npz")).unwrap();
    let ce = comp.len() - 22;
    let ccd = u32::from_le_bytes(comp[ce + 16..ce + 20].try_into().unwrap()) as usize;
    let mut bomb = comp.clone();
    bomb[ccd + 24..ccd + 28].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    assert_io_err("deflate bomb", Z, &bomb, "claims");
    // A ZIP64 record at the very end: skipping its fields runs past the file.
    let mut z64 = Vec::new();
    z64.extend_from_slice(&0x07064b50u32.to_le_bytes());
    z64.extend_from_slice(&0u32.to_le_bytes());
    z64.extend_from_slice(&16u64.to_le_bytes());
    z64.extend_from_slice(&0x06064b50u32.to_le_bytes());
    z64.extend_from_slice(&0x06054b50u32.to_le_bytes());
    z64.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    z64.extend_from_slice(&[0; 10]);
    assert_io_err("zip64 record past the end", Z, &z64, "remain");
    // Wrong CRC is caught when the entry is inflated.
    let mut crc = comp.clone();
    crc[ccd + 16] ^= 1;
    assert_io_err("crc", Z, &crc, "CRC");
}

// ------------------------------------------------------------ MLX interop

const MLX_CHECK: &str = r#"
import json, sys, numpy as np, mlx.core as mx
d = sys.argv[1]
exp = json.load(open(d + "/expected.json"))
def same(name, a, e):
    assert str(a.dtype).split(".")[-1] == e["dtype"], (name, a.dtype, e["dtype"])
    assert list(a.shape) == e["shape"], (name, a.shape)
    if a.dtype == mx.bfloat16: a = a.astype(mx.float32)
    got = np.array(a).ravel()
    want = e["values"]
    if a.dtype == mx.complex64: want = [complex(r, i) for r, i in want]
    want = np.array(want, dtype=got.dtype) if len(want) else got
    assert got.tobytes() == want.tobytes(), (name, got, want)
n = 0
for f, arrays in exp.items():
    out = mx.load(d + "/" + f, return_metadata=f.endswith((".safetensors", ".gguf")))
    if f.endswith(".npy"):
        same(f, out, arrays[""]); n += 1; continue
    arrs, meta = out if isinstance(out, tuple) else (out, None)
    assert sorted(arrs) == sorted(arrays), (f, sorted(arrs))
    for k, e in arrays.items():
        same(f + ":" + k, arrs[k], e); n += 1
    if f.endswith(".safetensors"): assert meta == {"k": "v\u00e9"}, meta
    if f.endswith(".gguf"):
        assert meta["s"] == "str" and meta["l"] == ["x", "y"], meta
        assert meta["n"].item() == -5 and meta["a"].tolist() == [1.5, 2.5], meta
print("MLX_OK", n)
"#;

fn value_json(a: &Array) -> Value {
    let d = a.dtype();
    let vals: Vec<Value> = if d == Dtype::Bool {
        a.to_vec::<bool>().unwrap().into_iter().map(Value::from).collect()
    } else if d.is_unsigned() {
        ops::astype(a, Dtype::U64).unwrap().to_vec::<u64>().unwrap().into_iter().map(Value::from).collect()
    } else if d.is_signed_integer() {
        ops::astype(a, Dtype::I64).unwrap().to_vec::<i64>().unwrap().into_iter().map(Value::from).collect()
    } else if d == Dtype::C64 {
        a.to_vec::<c64>().unwrap().into_iter().map(|c| serde_json::json!([c.re as f64, c.im as f64])).collect()
    } else {
        ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap().into_iter().map(Value::from).collect()
    };
    serde_json::json!({"dtype": d.name(), "shape": a.shape(), "values": vals})
}

#[test]
fn kiln_written_files_load_in_mlx() {
    let py = PathBuf::from("/work/refvenv/bin/python");
    if !py.exists() {
        println!("note: /work/refvenv/bin/python not found; skipping the Kiln -> MLX check");
        return;
    }
    let dir = tmpdir("mlx");
    // Finite values only: JSON has no inf; MLX reads every dtype but not the 0-d complex.
    let mut arrays = every_dtype();
    arrays.retain(|k, _| !matches!(k.as_str(), "float16" | "float32"));
    arrays.insert(
        "float16".into(),
        ops::astype(&Array::from_slice(&[1.5f32, -0.0, 65504.0], &[3]).unwrap(), Dtype::F16).unwrap(),
    );
    arrays.insert("float32".into(), Array::from_slice(&[1e-40f32, -2.5, f32::MAX, 0.1], &[2, 2]).unwrap());
    let mut exp = serde_json::Map::new();
    let mut file = |name: &str, m: &ArrayMap| {
        exp.insert(name.to_string(), Value::Object(m.iter().map(|(k, a)| (k.clone(), value_json(a))).collect()));
    };
    for (k, a) in &arrays {
        let n = format!("{k}.npy");
        io::save_npy(dir.join(&n), a).unwrap();
        file(&n, &[(String::new(), a.clone())].into());
    }
    io::save_npz(dir.join("a.npz"), &arrays, false).unwrap();
    file("a.npz", &arrays);
    io::save_npz(dir.join("c.npz"), &arrays, true).unwrap();
    file("c.npz", &arrays);
    let meta: BTreeMap<String, String> = [("k".to_string(), "vé".to_string())].into();
    // MLX's safetensors reader lacks F64 (Kiln reads and writes it).
    let mut st = arrays.clone();
    st.remove("float64");
    io::save_safetensors(dir.join("a.safetensors"), &st, &meta).unwrap();
    file("a.safetensors", &st);
    let g: ArrayMap = arrays
        .iter()
        .filter(|(_, a)| {
            matches!(a.dtype(), Dtype::F32 | Dtype::F16 | Dtype::I8 | Dtype::I16 | Dtype::I32) && a.ndim() > 0
        })
        .map(|(k, a)| (k.clone(), a.clone()))
        .collect();
    use GgufValue as V;
    let gm: BTreeMap<String, GgufValue> = [
        ("s", V::String("str".into())),
        ("l", V::Array(vec![V::String("x".into()), V::String("y".into())])),
        ("n", V::I32(-5)),
        ("a", V::Array(vec![V::F32(1.5), V::F32(2.5)])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    io::save_gguf(dir.join("a.gguf"), &g, &gm).unwrap();
    file("a.gguf", &g);
    std::fs::write(dir.join("expected.json"), serde_json::to_string(&Value::Object(exp)).unwrap()).unwrap();
    let out = std::process::Command::new(py).arg("-c").arg(MLX_CHECK).arg(&dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("MLX_OK"), "MLX failed to load Kiln's files:\n{text}");
    println!("{}", text.trim());
    std::fs::remove_dir_all(&dir).ok();
}

/// Throughput of loading (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn io_speed() {
    let dir = tmpdir("speed");
    let n = 16 << 20;
    let a = ops::full(&[n], 0.25f32, Dtype::F32).unwrap();
    let p = dir.join("big.safetensors");
    io::save_safetensors(&p, &[("a".to_string(), a)].into(), &BTreeMap::new()).unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (m, _) = io::load_safetensors(&p).unwrap();
        m["a"].eval().unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "safetensors f32 load+eval: {:.1} MB in {:.1} ms = {:.2} GB/s",
            n as f64 * 4e-6,
            s * 1e3,
            n as f64 * 4e-9 / s
        );
    }
    // Q4_K and Q8_0 dequantization: random blocks with sane float16 scales.
    let mut rng = Rng::new(3);
    for (ty, id, bb) in [(GgmlType::Q4_K, 12u32, 144usize), (GgmlType::Q8_0, 8, 34)] {
        let elems = 4 << 20;
        let blocks = elems / ty.block_size();
        let mut g = G::new(1, 0).tensor("q", &[elems as u64], id, 0).data(0).0;
        for _ in 0..blocks {
            let mut b: Vec<u8> = (0..bb).map(|_| rng.next_u64() as u8).collect();
            b[0..2].copy_from_slice(&kiln_core::f16::from_f32(0.01).to_bits().to_le_bytes());
            b[2..4].copy_from_slice(&kiln_core::f16::from_f32(0.02).to_bits().to_le_bytes());
            g.extend_from_slice(&b);
        }
        let (m, _) = io::load_gguf_bytes(g).unwrap();
        let t = std::time::Instant::now();
        m["q"].eval().unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "{ty:?} dequantize: {} M elements in {:.1} ms = {:.0} M elements/s",
            elems >> 20,
            s * 1e3,
            elems as f64 * 1e-6 / s
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

// ------------------------------------------------------------------ ZIP64

/// Arrays of several dtypes and sizes for the ZIP64 writer tests.
fn zip_arrays() -> ArrayMap {
    let mut rng = Rng::new(11);
    let mut m = ArrayMap::new();
    m.insert("big".into(), rng.array(&[40, 30], -1.0, 1.0));
    m.insert("small".into(), Array::from_slice(&[1i32, -2, 3], &[3]).unwrap());
    m.insert("scalar".into(), Array::scalar(2.5f64));
    m.insert("empty".into(), ops::zeros(&[0, 3], Dtype::F16).unwrap());
    m
}

#[test]
fn zip64_npz_round_trips() {
    let arrays = zip_arrays();
    let limits = [
        io::Zip64Limits { size: 0, count: 0 },       // every field ZIP64
        io::Zip64Limits { size: 300, count: 100 },   // some entries and offsets
        io::Zip64Limits { size: 1 << 40, count: 2 }, // only the entry count
        io::Zip64Limits::default(),                  // classic
    ];
    for (i, l) in limits.into_iter().enumerate() {
        for compressed in [false, true] {
            let bytes = io::npz_bytes_with_limits(&arrays, compressed, l).unwrap();
            let zip64 = bytes.windows(4).any(|w| w == [0x50, 0x4b, 0x06, 0x06]);
            assert_eq!(zip64, i < 3, "limits {l:?}: ZIP64 end record present");
            let back = io::load_npz_bytes(bytes).unwrap();
            assert_same(&format!("zip64 {l:?} {compressed}"), &arrays, &back);
        }
    }
    // save_npz streams the same bytes the in-memory writer produces.
    let dir = tmpdir("zip64same");
    io::save_npz(dir.join("a.npz"), &arrays, true).unwrap();
    let want = io::npz_bytes_with_limits(&arrays, true, io::Zip64Limits::default()).unwrap();
    assert_eq!(std::fs::read(dir.join("a.npz")).unwrap(), want);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn npz_with_65536_entries_uses_zip64_and_loads_in_numpy() {
    let n = 65536usize;
    let arrays: ArrayMap = (0..n).map(|i| (format!("a{i}"), Array::scalar(i as i32))).collect();
    let dir = tmpdir("zip64many");
    let p = dir.join("many.npz");
    io::save_npz(&p, &arrays, false).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let eocd = bytes.len() - 22;
    assert_eq!(&bytes[eocd..eocd + 4], &[0x50, 0x4b, 0x05, 0x06]);
    assert_eq!(u16::from_le_bytes([bytes[eocd + 10], bytes[eocd + 11]]), 0xFFFF, "count saturates");
    let back = io::load_npz(&p).unwrap();
    assert_eq!(back.len(), n);
    assert_eq!(back["a65535"].item::<i32>().unwrap(), 65535);
    // Python's zipfile and NumPy read it (when the reference venv exists).
    zip64_python_check(&p, "a65535", &serde_json::json!([65535]));
    // Exactly 65535 entries in the classic format (as Python's zipfile writes
    // them): a saturated count without a ZIP64 locator is read as is.
    let mut arrays = arrays;
    arrays.remove("a0");
    let classic = io::npz_bytes_with_limits(&arrays, false, io::Zip64Limits { size: 0xFFFF_FFFF, count: 0x10000 });
    let classic = classic.unwrap();
    assert!(!classic.windows(4).any(|w| w == [0x50, 0x4b, 0x06, 0x06]));
    assert_eq!(io::load_npz_bytes(classic).unwrap().len(), 65535);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn zip64_npz_loads_in_python() {
    let arrays = zip_arrays();
    let dir = tmpdir("zip64py");
    for compressed in [false, true] {
        let p = dir.join(format!("z{compressed}.npz"));
        let bytes = io::npz_bytes_with_limits(&arrays, compressed, io::Zip64Limits { size: 300, count: 2 }).unwrap();
        std::fs::write(&p, bytes).unwrap();
        let want = Value::from(arrays["big"].to_vec::<f64>().unwrap());
        zip64_python_check(&p, "big", &want);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Checks with Python's `zipfile` (CRCs, ZIP64 records) and NumPy that `p`
/// holds `key` with these values.
fn zip64_python_check(p: &std::path::Path, key: &str, values: &Value) {
    let py = PathBuf::from("/work/refvenv/bin/python");
    if !py.exists() {
        println!("note: /work/refvenv/bin/python not found; skipping the Python ZIP64 check");
        return;
    }
    let script = r#"
import json, sys, zipfile, numpy as np
p, key, want = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with zipfile.ZipFile(p) as z:
    assert z.testzip() is None
    n = len(z.infolist())
with np.load(p) as f:
    got = f[key].ravel().tolist()
    assert np.allclose(got, want, rtol=0, atol=0), (got[:4], want[:4])
print("ZIP_OK", n)
"#;
    let out =
        std::process::Command::new(py).arg("-c").arg(script).arg(p).arg(key).arg(values.to_string()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("ZIP_OK"), "Python failed to read {}:\n{text}", p.display());
}

// ------------------------------------------- files changed after loading

#[test]
fn truncated_or_rewritten_file_after_load_is_an_error_not_sigbus() {
    let dir = tmpdir("changed");
    let p = dir.join("a.safetensors");
    let mut rng = Rng::new(3);
    let arrays: ArrayMap = [("x".to_string(), rng.array(&[256, 64], -1.0, 1.0))].into();
    io::save_safetensors(&p, &arrays, &BTreeMap::new()).unwrap();
    // Untouched: loads through the mapping and evaluates.
    let (m, _) = io::load_safetensors(&p).unwrap();
    assert_eq!(bits(&m["x"]), bits(&arrays["x"]));
    // Truncated after loading: an error at eval.
    let (m, _) = io::load_safetensors(&p).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(100).unwrap();
    let e = m["x"].eval().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(e.to_string().contains("truncated or modified"), "{e}");
    // Rewritten in place with the same size: an error too.
    io::save_safetensors(&p, &arrays, &BTreeMap::new()).unwrap();
    let (m, _) = io::load_safetensors(&p).unwrap();
    let (g, _) = io::load_gguf_bytes(std::fs::read(fixture("quants.gguf")).unwrap()).unwrap();
    let g = g["q4_k"].clone();
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(std::io::SeekFrom::End(-4)).unwrap();
        f.write_all(&[1, 2, 3, 4]).unwrap();
        // mtime granularity can be coarse: make the change visible.
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    }
    let e = m["x"].eval().unwrap_err();
    assert!(e.to_string().contains("truncated or modified"), "{e}");
    g.eval().unwrap(); // in-memory sources are unaffected
                       // Compressed npz and quantized gguf read through the same guard.
    let q = dir.join("q.gguf");
    std::fs::copy(fixture("quants.gguf"), &q).unwrap();
    let (m, _) = io::load_gguf(&q).unwrap();
    std::fs::OpenOptions::new().write(true).open(&q).unwrap().set_len(64).unwrap();
    assert!(m["q4_k"].eval().unwrap_err().to_string().contains("truncated or modified"));
    let z = dir.join("c.npz");
    io::save_npz(&z, &arrays, true).unwrap();
    let m = io::load_npz(&z).unwrap();
    std::fs::OpenOptions::new().write(true).open(&z).unwrap().set_len(64).unwrap();
    assert!(m["x"].eval().unwrap_err().to_string().contains("truncated or modified"));
    std::fs::remove_dir_all(&dir).ok();
}

// ------------------------------------------------ fuzzing regressions

/// An empty tensor whose other dimensions multiply past `usize`: its strides
/// would overflow (found by reasoning while setting up the fuzzers).
#[test]
fn empty_tensor_with_huge_dims_is_rejected() {
    use io::Format::Safetensors as S;
    let h = r#"{"a":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}"#;
    assert_io_err("zero-size, huge dims", S, &st(h, 0), "too many elements");
    let npy = |shape: &str| {
        let hd = format!("{{'descr': '<f4', 'fortran_order': True, 'shape': {shape}, }}");
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(hd.len() as u16).to_le_bytes());
        v.extend_from_slice(hd.as_bytes());
        v
    };
    assert_io_err(
        "npy zero-size, huge dims",
        io::Format::Npy,
        &npy("(4294967296, 0, 4294967296)"),
        "too many elements",
    );
    try_all(io::Format::Npy, &npy("(3, 0, 5)")).unwrap();
    let many_keys = format!("{{{}}}", (0..40).map(|i| format!("'k{i}': 1, ")).collect::<String>());
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(many_keys.len() as u16).to_le_bytes());
    v.extend_from_slice(many_keys.as_bytes());
    assert_io_err("npy dict with many keys", io::Format::Npy, &v, "too many keys");
}

/// Writes Kiln-written seed files for the fuzzers into `$KILN_FUZZ_SEEDS/<target>/`
/// (run with `--ignored`; see fuzz/README.md).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let Some(root) = std::env::var_os("KILN_FUZZ_SEEDS").map(PathBuf::from) else {
        println!("set KILN_FUZZ_SEEDS to write fuzz seeds");
        return;
    };
    let arrays = every_dtype();
    let dir = |t: &str| {
        let d = root.join(t);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    for (k, a) in &arrays {
        std::fs::write(dir("npy").join(format!("kiln_{k}.npy")), io::to_npy_bytes(a).unwrap()).unwrap();
    }
    let small: ArrayMap = arrays.iter().take(4).map(|(k, a)| (k.clone(), a.clone())).collect();
    for compressed in [false, true] {
        io::save_npz(dir("npz").join(format!("kiln_{compressed}.npz")), &arrays, compressed).unwrap();
        let z64 = io::npz_bytes_with_limits(&small, compressed, io::Zip64Limits { size: 0, count: 0 }).unwrap();
        std::fs::write(dir("npz").join(format!("kiln_zip64_{compressed}.npz")), z64).unwrap();
    }
    let meta: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
    io::save_safetensors(dir("safetensors").join("kiln.safetensors"), &arrays, &meta).unwrap();
    io::save_safetensors(dir("safetensors").join("kiln_small.safetensors"), &small, &BTreeMap::new()).unwrap();
    let g: ArrayMap = arrays
        .iter()
        .filter(|(_, a)| a.ndim() > 0 && a.ndim() <= 4)
        .filter(|(_, a)| {
            matches!(a.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 | Dtype::I8 | Dtype::I32)
        })
        .map(|(k, a)| (k.clone(), a.clone()))
        .collect();
    use GgufValue as V;
    let gm: BTreeMap<String, GgufValue> = [
        ("s".to_string(), V::String("str".into())),
        ("a".to_string(), V::Array(vec![V::F32(1.5), V::F32(2.5)])),
        ("n".to_string(), V::Array(vec![V::Array(vec![V::U8(1)]), V::Array(vec![])])),
    ]
    .into();
    io::save_gguf(dir("gguf").join("kiln.gguf"), &g, &gm).unwrap();
}
