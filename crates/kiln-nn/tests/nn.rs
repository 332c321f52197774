//! kiln-nn against MLX 0.32.4 (golden/nn.json, written by golden/gen_nn.py),
//! plus the Module API.

mod golden_util;

use golden_util::{arr, assert_close, load};
use kiln_core::{ops, random, tree_flatten, Array, Dtype};
use kiln_nn::losses::{self, Reduction};
use kiln_nn::{self as nn, init, Forward, ModuleExt, Param};

#[test]
fn activations_match_mlx() {
    let g = load();
    let a = &g["activations"];
    let x = arr(&a["x"]);
    let alpha = arr(&a["alpha"]);
    type Act = fn(&Array) -> kiln_core::Result<Array>;
    type Boxed = Box<dyn Fn(&Array) -> kiln_core::Result<Array>>;
    let cases: Vec<(&str, Boxed)> = vec![
        ("sigmoid", Box::new(nn::sigmoid as Act)),
        ("relu", Box::new(nn::relu as Act)),
        ("relu2", Box::new(nn::relu2 as Act)),
        ("relu6", Box::new(nn::relu6 as Act)),
        ("leaky_relu", Box::new(|x| nn::leaky_relu(x, 0.01))),
        ("log_softmax", Box::new(|x| nn::log_softmax(x, -1))),
        ("elu", Box::new(|x| nn::elu(x, 1.0))),
        ("softmax", Box::new(|x| nn::softmax(x, -1))),
        ("softplus", Box::new(nn::softplus as Act)),
        ("softsign", Box::new(nn::softsign as Act)),
        ("softshrink", Box::new(|x| nn::softshrink(x, 0.5))),
        ("celu", Box::new(|x| nn::celu(x, 1.0))),
        ("silu", Box::new(nn::silu as Act)),
        ("log_sigmoid", Box::new(nn::log_sigmoid as Act)),
        ("gelu", Box::new(nn::gelu as Act)),
        ("gelu_approx", Box::new(nn::gelu_approx as Act)),
        ("gelu_fast_approx", Box::new(nn::gelu_fast_approx as Act)),
        ("glu", Box::new(|x| nn::glu(x, -1))),
        ("step", Box::new(|x| nn::step(x, 0.0))),
        ("selu", Box::new(nn::selu as Act)),
        ("mish", Box::new(nn::mish as Act)),
        ("hardswish", Box::new(nn::hardswish as Act)),
        ("hard_tanh", Box::new(|x| nn::hard_tanh(x, -1.0, 1.0))),
        ("hard_shrink", Box::new(|x| nn::hard_shrink(x, 0.5))),
        ("softmin", Box::new(|x| nn::softmin(x, -1))),
        ("tanh", Box::new(nn::tanh as Act)),
        ("prelu", Box::new(move |x| nn::prelu(x, &alpha))),
    ];
    for (name, f) in cases {
        assert_close(name, &f(&x).unwrap(), &a["out"][name], 2e-6);
    }
    // Modules apply the same functions.
    assert_close(
        "GELU module",
        &nn::GELU { approx: nn::GeluApprox::Tanh }.forward(&x).unwrap(),
        &a["out"]["gelu_approx"],
        2e-6,
    );
    assert_close("ELU module", &nn::ELU::default().forward(&x).unwrap(), &a["out"]["elu"], 2e-6);
}

#[test]
fn losses_match_mlx() {
    let g = load();
    let l = &g["losses"];
    let i = |k: &str| arr(&l["inputs"][k]);
    let (logits, cls, probs, w5) = (i("logits"), i("cls"), i("probs"), i("w5"));
    let (pred, targ, p01, t01, var, sgn) = (i("pred"), i("targ"), i("p01"), i("t01"), i("var"), i("sgn"));
    let (anc, pos, neg, logp, logq) = (i("anc"), i("pos"), i("neg"), i("logp"), i("logq"));
    let col = |a: &Array| ops::slice(a, &[0, 0], &[4, 1], &[1, 1]).and_then(|c| ops::reshape_to(&c, &[4])).unwrap();
    for (red_name, red) in [("none", Reduction::None), ("mean", Reduction::Mean), ("sum", Reduction::Sum)] {
        let cases: Vec<(&str, Array)> = vec![
            ("cross_entropy", losses::cross_entropy(&logits, &cls, None, -1, 0.0, red).unwrap()),
            ("cross_entropy_probs", losses::cross_entropy(&logits, &probs, None, -1, 0.0, red).unwrap()),
            ("cross_entropy_smooth_weights", losses::cross_entropy(&logits, &cls, Some(&w5), -1, 0.1, red).unwrap()),
            ("binary_cross_entropy", losses::binary_cross_entropy(&pred, &t01, None, true, red).unwrap()),
            ("binary_cross_entropy_probs", losses::binary_cross_entropy(&p01, &t01, None, false, red).unwrap()),
            ("l1_loss", losses::l1_loss(&pred, &targ, red).unwrap()),
            ("mse_loss", losses::mse_loss(&pred, &targ, red).unwrap()),
            ("nll_loss", losses::nll_loss(&logp, &cls, -1, red).unwrap()),
            ("gaussian_nll_loss", losses::gaussian_nll_loss(&pred, &targ, &var, false, 1e-6, red).unwrap()),
            ("gaussian_nll_loss_full", losses::gaussian_nll_loss(&pred, &targ, &var, true, 1e-6, red).unwrap()),
            ("kl_div_loss", losses::kl_div_loss(&logp, &logq, -1, red).unwrap()),
            ("smooth_l1_loss", losses::smooth_l1_loss(&pred, &targ, 0.5, red).unwrap()),
            ("triplet_loss", losses::triplet_loss(&anc, &pos, &neg, -1, 2, 1.0, 1e-6, red).unwrap()),
            ("hinge_loss", losses::hinge_loss(&pred, &sgn, red).unwrap()),
            ("huber_loss", losses::huber_loss(&pred, &targ, 0.7, red).unwrap()),
            ("log_cosh_loss", losses::log_cosh_loss(&pred, &targ, red).unwrap()),
            ("cosine_similarity_loss", losses::cosine_similarity_loss(&pred, &targ, 1, 1e-8, red).unwrap()),
            (
                "margin_ranking_loss",
                losses::margin_ranking_loss(&col(&pred), &col(&targ), &col(&sgn), 0.2, red).unwrap(),
            ),
        ];
        for (name, got) in cases {
            let key = format!("{name}/{red_name}");
            assert_close(&key, &got, &l["out"][key.as_str()], 5e-6);
        }
    }
}

#[test]
fn loss_errors_name_the_shapes() {
    let a = ops::zeros(&[2, 3], Dtype::F32).unwrap();
    let b = ops::zeros(&[3, 2], Dtype::F32).unwrap();
    let e = losses::mse_loss(&a, &b, Reduction::Mean).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
    let cls = ops::zeros(&[3], Dtype::I32).unwrap();
    assert!(losses::cross_entropy(&a, &cls, None, -1, 0.0, Reduction::None).is_err());
    assert!(losses::cross_entropy(&a, &ops::zeros(&[2], Dtype::I32).unwrap(), None, -1, 1.5, Reduction::None).is_err());
}

#[test]
fn layers_match_mlx() {
    let g = load();
    let l = &g["layers"];
    let x = arr(&l["x"]);
    let lin = nn::Linear::from_weights(arr(&l["linear"]["weight"]), Some(arr(&l["linear"]["bias"]))).unwrap();
    assert_close("linear", &lin.forward(&x).unwrap(), &l["linear"]["out"], 2e-6);
    let mut ln = nn::LayerNorm::new(8, 1e-5, true, true).unwrap();
    ln.weight = Some(Param::new(arr(&l["layer_norm"]["weight"])));
    ln.bias = Some(Param::new(arr(&l["layer_norm"]["bias"])));
    assert_close("layer_norm", &ln.forward(&x).unwrap(), &l["layer_norm"]["out"], 1e-5);
    let plain = nn::LayerNorm::new(8, 1e-5, false, false).unwrap();
    assert_eq!(plain.num_parameters(), 0);
    assert_close("layer_norm_plain", &plain.forward(&x).unwrap(), &l["layer_norm_plain"], 1e-5);
    let mut rms = nn::RMSNorm::new(8, 1e-5).unwrap();
    rms.weight = Param::new(arr(&l["rms_norm"]["weight"]));
    assert_close("rms_norm", &rms.forward(&x).unwrap(), &l["rms_norm"]["out"], 1e-5);
    let mut emb = nn::Embedding::new(10, 4).unwrap();
    emb.weight = Param::new(arr(&l["embedding"]["weight"]));
    assert_close("embedding", &emb.forward(&arr(&l["embedding"]["ids"])).unwrap(), &l["embedding"]["out"], 0.0);
    let ones = ops::ones(&[2, 4], Dtype::F32).unwrap();
    assert_close("embedding.as_linear", &emb.as_linear(&ones).unwrap(), &l["embedding"]["as_linear"], 2e-6);
    // An out-of-range id is an error, not a read out of bounds.
    let bad = Array::from_slice(&[10i32], &[1]).unwrap();
    assert!(emb.forward(&bad).and_then(|y| y.eval()).is_err());
}

#[derive(Clone, nn::Module)]
struct Mlp {
    layers: Vec<nn::Linear>,
}

impl Forward for Mlp {
    fn forward(&self, x: &Array) -> kiln_core::Result<Array> {
        let mut x = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = nn::relu(&x)?;
            }
        }
        Ok(x)
    }
}

fn mlp() -> Mlp {
    Mlp {
        layers: vec![
            nn::Linear::new(8, 16, true).unwrap(),
            nn::Linear::new(16, 16, true).unwrap(),
            nn::Linear::new(16, 3, true).unwrap(),
        ],
    }
}

const MLP_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/mlp.safetensors");

#[test]
fn mlx_saved_mlp_loads_and_matches() {
    let g = load();
    let m = &g["mlp"];
    let mut model = mlp();
    let report = model.load_weights(MLP_FILE, true).unwrap();
    assert!(report.is_exact());
    let x = arr(&m["x"]);
    assert_close("mlp out", &model.forward(&x).unwrap(), &m["out"], 1e-5);
    let vg = nn::value_and_grad(|m: &Mlp, a: &[Array]| {
        losses::cross_entropy(&m.forward(&a[0])?, &a[1], None, -1, 0.0, Reduction::Mean)
    });
    let (loss, grads) = vg(&model, &[x, arr(&m["y"])]).unwrap();
    assert_close("mlp loss", &loss, &m["loss"], 1e-5);
    let flat = tree_flatten(&grads);
    assert_eq!(flat.len(), 6);
    for (k, gr) in flat {
        assert_close(&format!("grad {k}"), &gr, &m["grads"][k.as_str()], 1e-5);
    }
}

#[test]
fn parameter_keys_freeze_and_update() {
    let mut model = mlp();
    let keys: Vec<String> = model.named_parameters().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias"]
    );
    assert_eq!(model.num_parameters(), 8 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3);
    assert_eq!(model.module_keys(), ["layers.0", "layers.1", "layers.2"]);

    model.freeze_keys(&["bias"]).unwrap();
    assert_eq!(tree_flatten(&model.trainable_parameters()).len(), 3);
    model.freeze_keys(&["layers.1"]).unwrap();
    let trainable: Vec<String> = tree_flatten(&model.trainable_parameters()).into_iter().map(|(k, _)| k).collect();
    assert_eq!(trainable, ["layers.0.weight", "layers.2.weight"]);
    assert!(model.freeze_keys(&["nope"]).is_err());
    // Frozen parameters get no gradient.
    let vg = nn::value_and_grad(|m: &Mlp, a: &[Array]| ops::sum(&m.forward(&a[0])?, ops::Axes::All, false));
    let (_, grads) = vg(&model, &[ops::ones(&[2, 8], Dtype::F32).unwrap()]).unwrap();
    let gk: Vec<String> = tree_flatten(&grads).into_iter().map(|(k, _)| k).collect();
    assert_eq!(gk, ["layers.0.weight", "layers.2.weight"]);
    model.unfreeze();
    assert_eq!(tree_flatten(&model.trainable_parameters()).len(), 6);

    // update: a subset by key; an unknown key is an error.
    let zeros = ops::zeros(&[3], Dtype::F32).unwrap();
    let t = kiln_core::tree_unflatten([("layers.2.bias".to_string(), zeros.clone())]).unwrap();
    model.update(&t).unwrap();
    assert_eq!(model.layers[2].bias.as_ref().unwrap().to_vec::<f32>().unwrap(), [0.0; 3]);
    let bad = kiln_core::tree_unflatten([("layers.9.bias".to_string(), zeros)]).unwrap();
    assert!(model.update(&bad).unwrap_err().to_string().contains("layers.9.bias"));
}

#[test]
fn strict_loading_reports_every_problem() {
    #[derive(Clone, nn::Module)]
    struct Other {
        layers: Vec<nn::Linear>,
        extra: nn::Linear,
    }
    let mut other = Other {
        layers: vec![nn::Linear::new(8, 16, true).unwrap(), nn::Linear::new(16, 4, true).unwrap()],
        extra: nn::Linear::new(2, 2, false).unwrap(),
    };
    let before = other.layers[0].weight.to_vec::<f32>().unwrap();
    let err = other.load_weights(MLP_FILE, true).unwrap_err().to_string();
    assert!(err.contains("missing keys: extra.weight"), "{err}");
    assert!(err.contains("unexpected keys: layers.2.bias, layers.2.weight"), "{err}");
    assert!(err.contains("layers.1.weight has shape [4, 16] in the module but [16, 16] in the file"), "{err}");
    assert_eq!(other.layers[0].weight.to_vec::<f32>().unwrap(), before, "strict failure leaves the module unchanged");
    let report = other.load_weights(MLP_FILE, false).unwrap();
    assert_eq!(report.missing, ["extra.weight"]);
    assert_eq!(report.mismatched.len(), 2);
    assert_ne!(other.layers[0].weight.to_vec::<f32>().unwrap(), before, "matching keys load in non-strict mode");
}

#[test]
fn save_and_load_round_trip() {
    let dir = std::env::temp_dir().join(format!("kiln-nn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = mlp();
    for ext in ["safetensors", "npz"] {
        let path = dir.join(format!("m.{ext}"));
        model.save_weights(&path).unwrap();
        let mut back = mlp();
        back.load_weights(&path, true).unwrap();
        for ((k1, a), (_, b)) in model.named_parameters().into_iter().zip(back.named_parameters()) {
            assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), "{k1} via {ext}");
        }
    }
    assert!(model.save_weights(dir.join("m.txt")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dropout_follows_training_mode() {
    let mut seq = nn::Sequential::new().push(nn::Linear::new(4, 4, true).unwrap()).push(nn::Dropout::new(0.5).unwrap());
    let x = ops::ones(&[64, 4], Dtype::F32).unwrap();
    let y_eval = {
        seq.train(false);
        seq.forward(&x).unwrap()
    };
    let lin_out = seq.layers[0].forward(&x).unwrap();
    assert_eq!(y_eval.to_vec::<f32>().unwrap(), lin_out.to_vec::<f32>().unwrap());
    seq.train(true);
    let y = seq.forward(&x).unwrap().to_vec::<f32>().unwrap();
    let l = lin_out.to_vec::<f32>().unwrap();
    let zeros = y.iter().filter(|v| **v == 0.0).count();
    assert!((64..=192).contains(&zeros), "about half dropped, got {zeros} of 256");
    for (a, b) in y.iter().zip(&l) {
        assert!(*a == 0.0 || (a - 2.0 * b).abs() < 1e-5);
    }
    assert!(nn::Dropout::new(1.0).is_err());
    let keys: Vec<String> = seq.named_parameters().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["layers.0.weight", "layers.0.bias"]);
}

#[test]
fn initialisers_draw_what_mlx_draws() {
    let g = load();
    let i = &g["init"];
    let s = [6, 4];
    type Init = Box<dyn Fn() -> kiln_core::Result<Array>>;
    let cases: Vec<(&str, Init)> = vec![
        ("normal", Box::new(move || init::normal(&s, 0.5, 2.0, Dtype::F32))),
        ("uniform", Box::new(move || init::uniform(&s, -0.3, 0.7, Dtype::F32))),
        ("glorot_normal", Box::new(move || init::glorot_normal(&s, 1.0, Dtype::F32))),
        ("glorot_uniform", Box::new(move || init::glorot_uniform(&s, 1.0, Dtype::F32))),
        ("he_normal", Box::new(move || init::he_normal(&s, init::FanMode::FanIn, 1.0, Dtype::F32))),
        ("he_uniform", Box::new(move || init::he_uniform(&s, init::FanMode::FanIn, 1.0, Dtype::F32))),
        ("sparse", Box::new(move || init::sparse(&s, 0.5, 0.0, 1.0, Dtype::F32))),
        ("orthogonal", Box::new(move || init::orthogonal(&s, 1.5, Dtype::F32))),
        (
            "he_uniform_fan_out_conv",
            Box::new(|| init::he_uniform(&[8, 3, 3, 2], init::FanMode::FanOut, 2.0, Dtype::F32)),
        ),
    ];
    for (name, f) in cases {
        random::seed(7);
        // normal goes through erfinv (a few ulp from MLX's); orthogonal through a QR.
        let tol = if name == "orthogonal" { 1e-4 } else { 1e-5 };
        assert_close(name, &f().unwrap(), &i[name], tol);
    }
    assert_close("constant", &init::constant(&[2, 3], 0.25, Dtype::F32).unwrap(), &i["constant"], 0.0);
    assert_close("identity", &init::identity(&[3, 3], Dtype::F32).unwrap(), &i["identity"], 0.0);
    random::seed(11);
    let lin = nn::Linear::new(5, 3, true).unwrap();
    assert_close("Linear weight", &lin.weight, &i["linear_seed11"]["weight"], 0.0);
    assert_close("Linear bias", lin.bias.as_ref().unwrap(), &i["linear_seed11"]["bias"], 0.0);
    random::seed(11);
    assert_close("Embedding weight", &nn::Embedding::new(4, 3).unwrap().weight, &i["embedding_seed11"], 1e-5);
    assert!(init::glorot_uniform(&[5], 1.0, Dtype::F32).is_err());
    assert!(init::identity(&[2, 3], Dtype::F32).is_err());
}
