//! The gradient of a matmul operand recorded as a transpose of its last two
//! axes (`x @ W^T`, as `Linear` records) is a row-contiguous product, not a
//! transposed view, and is still the correct gradient.

mod common;

use common::{check_grad, Rng};
use kiln_core::{grad, ops, Array};

/// `x` with its last two axes swapped.
fn swap(x: &Array) -> kiln_core::Result<Array> {
    ops::swapaxes(x, -1, -2)
}

/// `sum((x @ W^T) * c)` and the same with the transpose on the left.
fn loss_right(a: &[Array]) -> kiln_core::Result<Array> {
    let y = ops::matmul(&a[0], &swap(&a[1])?)?;
    ops::sum(&ops::multiply(&y, &a[2])?, ops::Axes::All, false)
}

fn loss_left(a: &[Array]) -> kiln_core::Result<Array> {
    let y = ops::matmul(&swap(&a[1])?, &a[0])?;
    ops::sum(&ops::multiply(&y, &a[2])?, ops::Axes::All, false)
}

#[test]
fn transposed_operand_gradient_is_contiguous_and_correct() {
    let mut rng = Rng::new(3);
    // x (5, 4), W (3, 4), c (5, 3): d/dW = c^T @ x.
    let (x, w, c) = (rng.array(&[5, 4], -1.0, 1.0), rng.array(&[3, 4], -1.0, 1.0), rng.array(&[5, 3], -1.0, 1.0));
    let g = grad(|a: &[Array]| Ok(vec![loss_right(a)?]), &[1])(&[x.clone(), w.clone(), c.clone()]).unwrap();
    let gw = &g[0];
    gw.eval().unwrap();
    assert_eq!(gw.shape(), &[3, 4]);
    assert!(gw.data().is_row_contiguous(), "the weight gradient is a strided view");
    let want = ops::matmul(&ops::transpose(&c).unwrap(), &x).unwrap().to_vec::<f64>().unwrap();
    for (a, b) in gw.to_vec::<f64>().unwrap().iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    check_grad("matmul x @ W^T", loss_right, &[x, w, c]);

    // W^T @ x with W (4, 3) -> (3, 4) @ x (4, 5): the left operand.
    let (x, w, c) = (rng.array(&[4, 5], -1.0, 1.0), rng.array(&[4, 3], -1.0, 1.0), rng.array(&[3, 5], -1.0, 1.0));
    let g = grad(|a: &[Array]| Ok(vec![loss_left(a)?]), &[1])(&[x.clone(), w.clone(), c.clone()]).unwrap();
    g[0].eval().unwrap();
    assert!(g[0].data().is_row_contiguous(), "the left operand's gradient is a strided view");
    check_grad("matmul W^T @ x", loss_left, &[x, w, c]);

    // Batched x (2, 5, 4) broadcast against an unbatched W^T: the gradient sums over the batch.
    let (x, w, c) = (rng.array(&[2, 5, 4], -1.0, 1.0), rng.array(&[3, 4], -1.0, 1.0), rng.array(&[2, 5, 3], -1.0, 1.0));
    check_grad("batched x @ W^T", loss_right, &[x.clone(), w.clone(), c.clone()]);
    // Batched W (2, 3, 4) against unbatched x (5, 4).
    let (x, w, c) = (rng.array(&[5, 4], -1.0, 1.0), rng.array(&[2, 3, 4], -1.0, 1.0), rng.array(&[2, 5, 3], -1.0, 1.0));
    check_grad("x @ batched W^T", loss_right, &[x, w, c]);
}

/// A scalar loss of (x, W, c).
type Loss = fn(&[Array]) -> kiln_core::Result<Array>;

/// The gradient of a matrix shared by a batch (a linear layer's weight, plain
/// or recorded as `W^T`) is one product with the batch folded into the
/// contraction. It must equal the sum of the batch's own products: 3-D and
/// 4-D batches, an `x` that is a transposed (non-contiguous) view, f32 deep
/// enough (k = 2·3·40) for the kernel's parallel split, and f64.
#[test]
fn shared_weight_gradient_sums_the_batch() {
    let mut rng = Rng::new(17);
    for dtype in [kiln_core::Dtype::F32, kiln_core::Dtype::F64] {
        let arr = |rng: &mut Rng, s: &[usize]| ops::astype(&rng.array(s, -1.0, 1.0), dtype).unwrap();
        let x4 = arr(&mut rng, &[2, 3, 40, 24]);
        let x_t = ops::swapaxes(&arr(&mut rng, &[2, 24, 40]), -1, -2).unwrap();
        for (x, transposed) in [(x4.clone(), true), (x4, false), (x_t.clone(), true), (x_t, false)] {
            let rows = &x.shape()[..x.ndim() - 1];
            let out = 36;
            let c = arr(&mut rng, &[rows, &[out]].concat());
            let (w, loss): (Array, Loss) = if transposed {
                (arr(&mut rng, &[out, 24]), loss_right)
            } else {
                (arr(&mut rng, &[24, out]), |a: &[Array]| {
                    let y = ops::matmul(&a[0], &a[1])?;
                    ops::sum(&ops::multiply(&y, &a[2])?, ops::Axes::All, false)
                })
            };
            let g = grad(move |a: &[Array]| Ok(vec![loss(a)?]), &[1])(&[x.clone(), w.clone(), c.clone()]).unwrap();
            assert_eq!(g[0].shape(), w.shape());
            // Σ over the batch of x_bᵀ c_b (or c_bᵀ x_b for W^T), one product at a time.
            let per = ops::matmul(&ops::swapaxes(&x, -1, -2).unwrap(), &c).unwrap();
            let batch_axes: Vec<i32> = (0..x.ndim() as i32 - 2).collect();
            let mut want = ops::sum(&per, ops::Axes::List(batch_axes), false).unwrap();
            if transposed {
                want = ops::transpose(&want).unwrap();
            }
            let (got, want) = (
                ops::astype(&g[0], kiln_core::Dtype::F64).unwrap().to_vec::<f64>().unwrap(),
                ops::astype(&want, kiln_core::Dtype::F64).unwrap().to_vec::<f64>().unwrap(),
            );
            let tol = if dtype == kiln_core::Dtype::F32 { 1e-4 } else { 1e-12 };
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= tol * (1.0 + b.abs()),
                    "{dtype} {:?} transposed={transposed} [{i}]: {a} vs {b}",
                    x.shape()
                );
            }
        }
    }
}
