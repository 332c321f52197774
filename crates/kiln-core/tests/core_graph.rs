//! Graph, eval, memory and transform-engine tests.

use kiln_core::{ops, Array};

fn arr(v: &[f32], s: &[usize]) -> Array {
    Array::from_slice(v, s).unwrap()
}

#[test]
fn lazy_add_and_multiply() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = arr(&[10.0, 20.0, 30.0], &[3]);
    let c = &(&a + &b) * 2.0;
    assert!(!c.is_evaluated());
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![22.0, 44.0, 66.0, 28.0, 50.0, 72.0]);
    assert!(c.is_evaluated());
    assert!(c.primitive().is_none(), "evaluated non-tracer nodes are detached");
}

#[test]
fn deep_chain_evaluates_and_drops() {
    let x = arr(&[1.0; 16], &[16]);
    let mut y = x.clone();
    for _ in 0..1_000_000 {
        y = &y + &x;
    }
    let z = y.clone();
    drop(y);
    assert_eq!(z.to_vec::<f32>().unwrap()[0], 1_000_001.0);
    // An unevaluated deep chain must also drop without recursion.
    let mut w = x.clone();
    for _ in 0..1_000_000 {
        w = &w + &x;
    }
    drop(w);
}

#[test]
fn grad_of_square_and_grad_of_grad() {
    let f = |xs: &[Array]| Ok(vec![ops::sum(&(&xs[0] * &xs[0] * &xs[0]), kiln_core::Axes::All, false)?]);
    let x = arr(&[1.0, 2.0, -3.0], &[3]);
    let g = kiln_core::grad(f, &[0]);
    let gx = g(&[x.clone()]).unwrap();
    assert_eq!(gx[0].to_vec::<f32>().unwrap(), vec![3.0, 12.0, 27.0]);
    let gsum = |xs: &[Array]| Ok(vec![ops::sum(&g(xs)?[0], kiln_core::Axes::All, false)?]);
    let gg = kiln_core::grad(gsum, &[0]);
    assert_eq!(gg(&[x]).unwrap()[0].to_vec::<f32>().unwrap(), vec![6.0, 12.0, -18.0]);
}

#[test]
fn vmap_of_broadcasting_add() {
    let f = |xs: &[Array]| Ok(vec![&xs[0] + &xs[1]]);
    let a = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = arr(&[10.0, 20.0], &[2]);
    let v = kiln_core::vmap(f, &[Some(1), None], &[0]);
    let out = v(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(out[0].shape(), &[3, 2]);
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![11.0, 24.0, 12.0, 25.0, 13.0, 26.0]);
    let v1 = kiln_core::vmap(f, &[Some(1), None], &[1]);
    let out = v1(&[a, b]).unwrap();
    assert_eq!(out[0].shape(), &[2, 3]);
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![11.0, 12.0, 13.0, 24.0, 25.0, 26.0]);
}
