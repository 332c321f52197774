//! Outside transforms, the per-parameter updates of Adam, AdamW and SGD run
//! as compiled, fused functions; they must give bit-identical parameters and
//! state to the same updates recorded op by op (compile disabled).
//!
//! `disable_compile` is process-wide, so this file holds a single test.

use kiln_core::{random, tree_flatten, tree_unflatten, Array, Dtype, Tree};
use kiln_optim::{Adam, AdamW, Optimizer, Sgd};

/// Parameters and three rounds of gradients of a few shapes.
fn data() -> (Tree, Vec<Tree>) {
    random::seed(11);
    let shapes: [&[usize]; 3] = [&[4, 3], &[5], &[2, 3, 2]];
    let leaves = || -> Tree {
        let items = shapes
            .iter()
            .enumerate()
            .map(|(k, s)| (format!("p{k}.w"), random::normal(s, Dtype::F32, None, None, None).unwrap()));
        tree_unflatten(items).unwrap()
    };
    (leaves(), (0..3).map(|_| leaves()).collect())
}

/// Runs three updates and returns the bits of every parameter and state leaf.
fn run(opt: &mut dyn Optimizer, params: &Tree, grads: &[Tree]) -> Vec<(String, Vec<u32>)> {
    let mut p = params.clone();
    for g in grads {
        p = opt.apply_gradients(g, &p).unwrap();
    }
    let mut out: Vec<(String, Array)> = tree_flatten(&p);
    out.extend(tree_flatten(&opt.state().unwrap()).into_iter().map(|(k, a)| (format!("state.{k}"), a)));
    out.into_iter()
        .filter(|(_, a)| a.dtype() == Dtype::F32)
        .map(|(k, a)| (k, a.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()))
        .collect()
}

fn optimizers() -> Vec<(&'static str, Box<dyn Optimizer>)> {
    vec![
        ("adam", Box::new(Adam::with(1e-2, (0.9, 0.99), 1e-6, true).unwrap())),
        ("adamw", Box::new(AdamW::with(1e-2, (0.8, 0.999), 1e-8, 0.1, true).unwrap())),
        ("adamw no bias correction", Box::new(AdamW::new(3e-3).unwrap())),
        ("sgd", Box::new(Sgd::new(0.1))),
        ("sgd nesterov", Box::new(Sgd::with(0.1, 0.9, 0.01, 0.0, true).unwrap())),
        ("sgd dampening", Box::new(Sgd::with(0.1, 0.5, 0.0, 0.2, false).unwrap())),
    ]
}

#[test]
fn fused_updates_are_bit_identical_to_op_by_op() {
    let (params, grads) = data();
    let fused: Vec<_> = optimizers().into_iter().map(|(n, mut o)| (n, run(o.as_mut(), &params, &grads))).collect();
    kiln_core::disable_compile();
    let plain: Vec<_> = optimizers().into_iter().map(|(n, mut o)| (n, run(o.as_mut(), &params, &grads))).collect();
    kiln_core::enable_compile();
    for ((name, f), (_, p)) in fused.iter().zip(&plain) {
        assert_eq!(f.len(), p.len(), "{name}: different leaves");
        assert!(f.len() >= 3, "{name}: no parameters compared");
        for ((k, a), (k2, b)) in f.iter().zip(p) {
            assert_eq!(k, k2, "{name}");
            assert_eq!(a, b, "{name}: {k} differs between the fused and the op-by-op update");
        }
    }
    // The updates moved the parameters.
    let (_, sgd) = &plain[3];
    let before: Vec<u32> = params.array("p0.w").unwrap().to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
    assert_ne!(sgd.iter().find(|(k, _)| k == "p0.w").unwrap().1, before);
}
