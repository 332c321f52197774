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

/// f(x) = sum(c * x^2) + (sum x)^2 has Hessian diag(2c) + 2 * ones.
fn quad(xs: &[Array]) -> kiln_core::Result<Vec<Array>> {
    let c = arr(&[1.0, -2.0, 3.0, 0.5], &[4]);
    let c = ops::astype(&c, xs[0].dtype())?;
    let a = ops::sum(&(&(&xs[0] * &xs[0]) * &c), kiln_core::Axes::All, false)?;
    let s = ops::sum(&xs[0], kiln_core::Axes::All, false)?;
    Ok(vec![&a + &(&s * &s)])
}

fn expected_hessian() -> Vec<f64> {
    let c = [1.0, -2.0, 3.0, 0.5];
    let mut h = vec![2.0; 16];
    for i in 0..4 {
        h[i * 4 + i] += 2.0 * c[i];
    }
    h
}

#[test]
fn hessian_vector_product_matches_closed_form() {
    let x = Array::from_slice(&[0.3f64, -1.2, 2.0, 0.7], &[4]).unwrap();
    let v = Array::from_slice(&[1.0f64, 0.5, -2.0, 3.0], &[4]).unwrap();
    let g = kiln_core::grad(quad, &[0]);
    // Forward-over-reverse: jvp of the gradient.
    let (_, hv) = kiln_core::jvp(|a: &[Array]| g(a), &[x.clone()], &[v.clone()]).unwrap();
    let h = expected_hessian();
    let vv = [1.0, 0.5, -2.0, 3.0];
    let want: Vec<f64> = (0..4).map(|i| (0..4).map(|j| h[i * 4 + j] * vv[j]).sum()).collect();
    let got = hv[0].to_vec::<f64>().unwrap();
    for i in 0..4 {
        assert!((got[i] - want[i]).abs() < 1e-12, "hvp[{i}] {} vs {}", got[i], want[i]);
    }
    // Reverse-over-reverse gives the same product: grad of <grad f, v>.
    let gv = |a: &[Array]| Ok(vec![ops::sum(&(&g(&a[..1])?[0] * &a[1]), kiln_core::Axes::All, false)?]);
    let hv2 = kiln_core::grad(gv, &[0])(&[x, v]).unwrap();
    let got2 = hv2[0].to_vec::<f64>().unwrap();
    for i in 0..4 {
        assert!((got2[i] - want[i]).abs() < 1e-12, "rev-rev hvp[{i}] {} vs {}", got2[i], want[i]);
    }
}

#[test]
fn full_hessian_via_vmap_of_jvp_of_grad() {
    let x = Array::from_slice(&[0.3f64, -1.2, 2.0, 0.7], &[4]).unwrap();
    let mut eye = vec![0.0f64; 16];
    for i in 0..4 {
        eye[i * 4 + i] = 1.0;
    }
    let basis = Array::from_slice(&eye, &[4, 4]).unwrap();
    let hvp = |a: &[Array]| -> kiln_core::Result<Vec<Array>> {
        let g = kiln_core::grad(quad, &[0]);
        let (_, t) = kiln_core::jvp(|p: &[Array]| g(p), &a[..1], &a[1..2])?;
        Ok(t)
    };
    let hess = kiln_core::vmap(hvp, &[None, Some(0)], &[0])(&[x, basis]).unwrap();
    assert_eq!(hess[0].shape(), &[4, 4]);
    let got = hess[0].to_vec::<f64>().unwrap();
    for (k, (a, b)) in got.iter().zip(expected_hessian()).enumerate() {
        assert!((a - b).abs() < 1e-12, "H[{k}] {a} vs {b}");
    }
}

#[test]
fn value_and_grad_with_aux_and_argnums() {
    let f = |a: &[Array]| -> kiln_core::Result<Vec<Array>> {
        let p = &a[0] * &a[1];
        Ok(vec![ops::sum(&p, kiln_core::Axes::All, false)?, p])
    };
    let x = arr(&[1.0, 2.0], &[2]);
    let y = arr(&[3.0, 4.0], &[2]);
    let (vals, grads) = kiln_core::value_and_grad(f, &[1, 0])(&[x, y]).unwrap();
    assert_eq!(vals[0].item::<f32>().unwrap(), 11.0);
    assert_eq!(vals[1].to_vec::<f32>().unwrap(), vec![3.0, 8.0]); // aux output, not differentiated
    assert_eq!(grads[0].to_vec::<f32>().unwrap(), vec![1.0, 2.0]); // d/dy = x
    assert_eq!(grads[1].to_vec::<f32>().unwrap(), vec![3.0, 4.0]); // d/dx = y
    let bad = kiln_core::value_and_grad(f, &[0, 0]);
    assert!(bad(&[arr(&[1.0], &[1]), arr(&[1.0], &[1])]).is_err());
    let vector_out = kiln_core::grad(|a: &[Array]| Ok(vec![a[0].clone()]), &[0]);
    let e = vector_out(&[arr(&[1.0, 2.0], &[2])]).unwrap_err();
    assert!(e.to_string().contains("scalar"), "{e}");
}

#[test]
fn stop_gradient_blocks_and_tree_grads_keep_structure() {
    use kiln_core::{tree_flatten, Tree};
    use std::collections::BTreeMap;
    let f = |a: &[Array]| Ok(vec![ops::sum(&(&a[0] * &kiln_core::stop_gradient(&a[0])), kiln_core::Axes::All, false)?]);
    let g = kiln_core::grad(f, &[0])(&[arr(&[2.0, 3.0], &[2])]).unwrap();
    assert_eq!(g[0].to_vec::<f32>().unwrap(), vec![2.0, 3.0]);

    let mut layer = BTreeMap::new();
    layer.insert("weight".to_string(), Tree::Leaf(arr(&[1.0, 2.0], &[2])));
    layer.insert("bias".to_string(), Tree::Leaf(arr(&[0.5], &[1])));
    let mut root = BTreeMap::new();
    root.insert("layers".to_string(), Tree::List(vec![Tree::Map(layer)]));
    let params = Tree::Map(root);
    let loss = |p: &Tree| {
        let w = p.array("layers.0.weight").unwrap();
        let b = p.array("layers.0.bias").unwrap();
        ops::sum(&(&(w * w) + b), kiln_core::Axes::All, false)
    };
    let (v, grads) = kiln_core::value_and_grad_tree(loss)(&params).unwrap();
    assert_eq!(v.item::<f32>().unwrap(), 6.0);
    let flat = tree_flatten(&grads);
    let keys: Vec<&str> = flat.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["layers.0.bias", "layers.0.weight"]);
    assert_eq!(flat[0].1.to_vec::<f32>().unwrap(), vec![2.0]);
    assert_eq!(flat[1].1.to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
}

#[test]
fn ops_record_their_stream_and_gpu_reports_unavailable() {
    use kiln_core::{device, Device};
    let a = arr(&[1.0, 2.0], &[2]);
    let s = kiln_core::new_stream(Device::cpu());
    let b = device::with_stream(s, || &a + 1.0);
    assert_eq!(b.stream(), s);
    assert_eq!((&a + 1.0).stream(), kiln_core::default_stream());
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
    let g = device::with_stream(kiln_core::device::default_stream_for(Device::gpu(0)), || &a * 2.0);
    let e = g.eval().unwrap_err();
    assert!(e.to_string().contains("GPU"), "{e}");
}

#[test]
fn to_vec_checks_dtype_and_item_checks_size() {
    let a = arr(&[1.0, 2.0], &[2]);
    assert!(a.to_vec::<i32>().is_err());
    assert!(a.item::<f32>().is_err());
    assert!(Array::from_slice(&[1.0f32; 3], &[2, 2]).is_err());
}

#[test]
fn multi_output_siblings_evaluate_together() {
    let a = Array::from_slice(&[7i32, -7, 9, 4], &[4]).unwrap();
    let b = Array::from_slice(&[2i32], &[1]).unwrap();
    let (q, r) = ops::divmod(&a, &b).unwrap();
    let (sibs, pos) = r.siblings();
    assert_eq!((sibs.len(), pos), (2, 1));
    assert_eq!(sibs[0].id(), q.id());
    r.eval().unwrap();
    assert!(q.is_evaluated(), "evaluating one sibling computes both");
    assert_eq!(q.to_vec::<i32>().unwrap(), vec![3, -4, 4, 2]);
    assert_eq!(r.to_vec::<i32>().unwrap(), vec![1, 1, 1, 0]);
    // A dropped sibling does not stop the other from evaluating.
    let (q2, r2) = ops::divmod(&arr(&[5.5, -5.5], &[2]), 2.0).unwrap();
    drop(q2);
    assert_eq!(r2.to_vec::<f32>().unwrap(), vec![1.5, 0.5]);
}

#[test]
fn methods_mirror_the_ops() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    assert_eq!(a.reshape(&[3, -1]).unwrap().shape(), &[3, 2]);
    assert_eq!(a.t().unwrap().to_vec::<f32>().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(a.swapaxes(0, 1).unwrap().shape(), &[3, 2]);
    assert_eq!(a.expand_dims(0).unwrap().squeeze().unwrap().shape(), &[2, 3]);
    assert_eq!(a.flatten(0, -1).unwrap().shape(), &[6]);
    assert_eq!(a.cumsum(Some(1), false, true).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 3.0, 6.0, 4.0, 9.0, 15.0]);
    assert_eq!(a.sum(1, false).unwrap().to_vec::<f32>().unwrap(), vec![6.0, 15.0]);
    assert!(a.reshape(&[4, -1]).is_err());
}
