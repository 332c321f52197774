//! kiln-optim against MLX 0.32.4 (the `optimizers`, `clip_grad_norm` and
//! `schedules` sections of kiln-nn's golden/nn.json).

#[path = "../../kiln-nn/tests/golden_util.rs"]
mod golden_util;

use golden_util::{arr, assert_close, load};
use kiln_core::{ops, tree_flatten, tree_unflatten, Array, Dtype, Tree};
use kiln_optim::{self as optim, schedule, Optimizer};
use serde_json::Value;

fn tree(v: &Value) -> Tree {
    tree_unflatten(v.as_object().unwrap().iter().map(|(k, t)| (k.clone(), arr(t)))).unwrap()
}

fn make(name: &str) -> Box<dyn Optimizer> {
    match name {
        "sgd" => Box::new(optim::Sgd::new(0.1)),
        "sgd_momentum" => Box::new(optim::Sgd::with(0.1, 0.9, 0.01, 0.1, false).unwrap()),
        "sgd_nesterov" => Box::new(optim::Sgd::with(0.1, 0.9, 0.0, 0.0, true).unwrap()),
        "rmsprop" => Box::new(optim::RmsProp::new(0.01).unwrap()),
        "adagrad" => Box::new(optim::Adagrad::new(0.1).unwrap()),
        "adadelta" => Box::new(optim::AdaDelta::new(0.5).unwrap()),
        "adam" => Box::new(optim::Adam::new(0.01).unwrap()),
        "adam_bias_correction" => Box::new(optim::Adam::with(0.01, (0.9, 0.999), 1e-8, true).unwrap()),
        "adamw" => Box::new(optim::AdamW::with(0.01, (0.9, 0.999), 1e-8, 0.1, false).unwrap()),
        "adamax" => Box::new(optim::Adamax::new(0.01).unwrap()),
        "lion" => Box::new(optim::Lion::with(0.01, (0.9, 0.99), 0.1).unwrap()),
        "adafactor" => Box::new(optim::Adafactor::new().unwrap()),
        "adafactor_lr_beta" => {
            let mut a = optim::Adafactor::with_lr(0.01).unwrap();
            a.relative_step = false;
            a.beta_1 = Some(0.9);
            a.weight_decay = 0.01;
            Box::new(a)
        }
        "muon" => Box::new(optim::Muon::new(0.02).unwrap()),
        "adam_cosine" => Box::new(optim::Adam::new(schedule::cosine_decay(0.1, 5, 0.01).unwrap()).unwrap()),
        n => panic!("unknown optimizer {n}"),
    }
}

#[test]
fn optimizers_match_mlx() {
    let g = load();
    let o = &g["optimizers"];
    let grads: Vec<Tree> = o["grads"].as_array().unwrap().iter().map(tree).collect();
    for (name, want) in o["out"].as_object().unwrap() {
        let mut opt = make(name);
        let mut params = tree(&o["params"]);
        for (step, g) in grads.iter().enumerate() {
            params = opt.apply_gradients(g, &params).unwrap();
            for (k, a) in tree_flatten(&params) {
                // Muon's Newton–Schulz runs matmuls whose summation order differs from MLX's.
                let tol = if name == "muon" { 1e-4 } else { 2e-6 };
                assert_close(&format!("{name} step {step} {k}"), &a, &want["steps"][step][k.as_str()], tol);
            }
        }
        let state = opt.state().unwrap();
        let flat = tree_flatten(&state);
        let keys: Vec<&String> = flat.iter().map(|(k, _)| k).collect();
        let mut want_keys: Vec<&String> = want["state"].as_object().unwrap().keys().collect();
        want_keys.sort();
        let mut got_keys = keys.clone();
        got_keys.sort();
        assert_eq!(got_keys, want_keys, "{name} state keys");
        for (k, a) in flat {
            let tol = if name == "muon" { 1e-4 } else { 2e-6 };
            assert_close(&format!("{name} state {k}"), &a, &want["state"][k.as_str()], tol);
        }
    }
}

#[test]
fn state_round_trip_resumes_exactly() {
    let g = load();
    let o = &g["optimizers"];
    let grads: Vec<Tree> = o["grads"].as_array().unwrap().iter().map(tree).collect();
    for name in ["adamw", "sgd_momentum", "adafactor", "adam_cosine"] {
        let mut a = make(name);
        let p1 = a.apply_gradients(&grads[0], &tree(&o["params"])).unwrap();
        // Save through safetensors, as a checkpoint does.
        let dir = std::env::temp_dir().join(format!("kiln-optim-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("opt.safetensors");
        let arrays = tree_flatten(&a.state().unwrap()).into_iter().collect();
        kiln_core::io::save_safetensors(&path, &arrays, &Default::default()).unwrap();
        let (loaded, _) = kiln_core::io::load_safetensors(&path).unwrap();
        let mut b = make(name);
        b.set_state(&tree_unflatten(loaded).unwrap()).unwrap();
        let pa = a.apply_gradients(&grads[1], &p1).unwrap();
        let pb = b.apply_gradients(&grads[1], &p1).unwrap();
        for ((k, x), (_, y)) in tree_flatten(&pa).into_iter().zip(tree_flatten(&pb)) {
            assert_eq!(x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap(), "{name} {k}");
        }
        assert_eq!(b.step().item::<u64>().unwrap(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn clip_grad_norm_matches_mlx() {
    let g = load();
    let c = &g["clip_grad_norm"];
    let grads = tree(&g["optimizers"]["grads"][0]);
    let (clipped, total) = optim::clip_grad_norm(&grads, c["max_norm"].as_f64().unwrap()).unwrap();
    assert_close("total", &total, &c["total"], 1e-6);
    for (k, a) in tree_flatten(&clipped) {
        assert_close(&k, &a, &c["clipped"][k.as_str()], 1e-6);
    }
    assert!(optim::clip_grad_norm(&grads, -1.0).is_err());
}

#[test]
fn schedules_match_mlx() {
    let g = load();
    let s = &g["schedules"];
    let cases: Vec<(&str, schedule::Schedule)> = vec![
        ("exponential_decay", schedule::exponential_decay(0.1, 0.9)),
        ("step_decay", schedule::step_decay(0.1, 0.5, 4).unwrap()),
        ("cosine_decay", schedule::cosine_decay(0.1, 10, 0.01).unwrap()),
        ("linear_schedule", schedule::linear_schedule(0.0, 0.1, 8).unwrap()),
        (
            "join_schedules",
            schedule::join_schedules(
                vec![schedule::linear_schedule(0.0, 0.1, 5).unwrap(), schedule::cosine_decay(0.1, 10, 0.0).unwrap()],
                &[5],
            )
            .unwrap(),
        ),
    ];
    for (name, f) in cases {
        let vals: Vec<Array> = (0..25u64).map(|i| f(&Array::scalar(i)).unwrap()).collect();
        let got = ops::stack(&vals, 0).unwrap();
        assert_close(name, &got, &s[name], 1e-6);
    }
    assert!(schedule::step_decay(0.1, 0.5, 0).is_err());
    assert!(schedule::join_schedules(vec![schedule::exponential_decay(0.1, 0.9)], &[3]).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    assert!(optim::Sgd::with(0.1, 0.0, 0.0, 0.0, true).is_err());
    assert!(optim::RmsProp::with(0.1, -1.0, 1e-8).is_err());
    let p = tree_unflatten([("w".to_string(), ops::zeros(&[2, 2], Dtype::F32).unwrap())]).unwrap();
    let g = tree_unflatten([("w".to_string(), ops::zeros(&[3], Dtype::F32).unwrap())]).unwrap();
    let e = optim::Adam::new(0.1).unwrap().apply_gradients(&g, &p).unwrap_err().to_string();
    assert!(e.contains("[3]") && e.contains("[2, 2]"), "{e}");
    let g2 = tree_unflatten([("v".to_string(), ops::zeros(&[2, 2], Dtype::F32).unwrap())]).unwrap();
    assert!(optim::Sgd::new(0.1).apply_gradients(&g2, &p).is_err());
}
