//! Custom functions (MLX's `mx.custom_function`) and gradient checkpointing
//! (`mx.checkpoint`).
//!
//! A [`CustomFunction`] wraps `f: Fn(&[Array]) -> Result<Vec<Array>>` and,
//! optionally, user rules for vjp, jvp and vmap. Calling it runs `f` (its
//! outputs are the traced outputs, behind [`stop_gradient`]) and records a
//! `CustomTransforms` primitive whose inputs are the arguments followed by
//! those outputs: its eval hands the outputs through, and its rules call the
//! user closures. A rule the user did not give falls back to transforming `f`
//! itself (its vjp recomputes `f`'s forward from the arguments). The vmap
//! fallback records a new custom function of the batched arguments whose
//! rules are the batched user rules, so custom gradients survive `vmap` and
//! `grad(vmap(f))`, `vmap(grad(f))`, grad of grad and jvp all compose.
//!
//! [`checkpoint`] is a custom function whose vjp re-runs `f` from the
//! arguments: the backward keeps only the inputs alive, never `f`'s
//! intermediates, and recomputes them when the gradient is evaluated.

use super::{jvp, stop_gradient, vjp, vmap};
use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::error::{fmt_shape, Error, Result};
use crate::ops::{astype, sum, zeros_like};
use crate::primitive::{OutSpec, Primitive};
use std::any::Any;
use std::sync::Arc;

/// The wrapped function: arguments → outputs.
pub type Fun = Arc<dyn Fn(&[Array]) -> Result<Vec<Array>> + Send + Sync>;
/// A vjp rule: `(primals, cotangents of every output, outputs)` → cotangents of every primal.
pub type VjpFun = Arc<dyn Fn(&[Array], &[Array], &[Array]) -> Result<Vec<Array>> + Send + Sync>;
/// A jvp rule: `(primals, tangents, argnums)` → tangents of every output
/// (`tangents[i]` belongs to `primals[argnums[i]]`; the other primals have zero tangent).
pub type JvpFun = Arc<dyn Fn(&[Array], &[Array], &[usize]) -> Result<Vec<Array>> + Send + Sync>;
/// A vmap rule: `(arguments, batch axis of each or None)` → outputs and the batch axis of each.
pub type VmapFun = Arc<dyn Fn(&[Array], &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> + Send + Sync>;

/// A function with user-defined transform rules (MLX's `mx.custom_function`).
///
/// ```
/// use kiln_core::{custom_function, grad, ops, Array};
/// // sin with a deliberately scaled gradient.
/// let f = custom_function(|x: &[Array]| Ok(vec![ops::sin(&x[0])?]))
///     .with_vjp(|x: &[Array], ct: &[Array], _: &[Array]| Ok(vec![ops::multiply(&ct[0], 2.0)?]));
/// let g = grad(move |x: &[Array]| Ok(vec![ops::sum(&f.call(x)?[0], ops::Axes::All, false)?]), &[0]);
/// let x = Array::from_slice(&[0.5f32, 1.0], &[2]).unwrap();
/// assert_eq!(g(&[x]).unwrap()[0].to_vec::<f32>().unwrap(), vec![2.0, 2.0]);
/// ```
#[derive(Clone)]
pub struct CustomFunction {
    fun: Fun,
    vjp: Option<VjpFun>,
    jvp: Option<JvpFun>,
    vmap: Option<VmapFun>,
}

/// Wraps `f` as a [`CustomFunction`] (add rules with `with_vjp`, `with_jvp`, `with_vmap`).
pub fn custom_function(f: impl Fn(&[Array]) -> Result<Vec<Array>> + Send + Sync + 'static) -> CustomFunction {
    CustomFunction::new(f)
}

impl CustomFunction {
    /// Wraps `f` with no custom rules yet (every transform differentiates or batches `f`).
    pub fn new(f: impl Fn(&[Array]) -> Result<Vec<Array>> + Send + Sync + 'static) -> CustomFunction {
        CustomFunction { fun: Arc::new(f), vjp: None, jvp: None, vmap: None }
    }

    /// Sets the vjp rule: `(primals, cotangents, outputs)` → one cotangent per primal.
    pub fn with_vjp(
        mut self,
        f: impl Fn(&[Array], &[Array], &[Array]) -> Result<Vec<Array>> + Send + Sync + 'static,
    ) -> CustomFunction {
        self.vjp = Some(Arc::new(f));
        self
    }

    /// Sets the jvp rule: `(primals, tangents, argnums)` → one tangent per output.
    pub fn with_jvp(
        mut self,
        f: impl Fn(&[Array], &[Array], &[usize]) -> Result<Vec<Array>> + Send + Sync + 'static,
    ) -> CustomFunction {
        self.jvp = Some(Arc::new(f));
        self
    }

    /// Sets the vmap rule: `(arguments, batch axes)` → `(outputs, output batch axes)`.
    pub fn with_vmap(
        mut self,
        f: impl Fn(&[Array], &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> + Send + Sync + 'static,
    ) -> CustomFunction {
        self.vmap = Some(Arc::new(f));
        self
    }

    /// Applies the function: runs `f` and records the `CustomTransforms` node
    /// that carries the rules.
    pub fn call(&self, args: &[Array]) -> Result<Vec<Array>> {
        let outs = (self.fun)(args)?;
        if outs.is_empty() {
            return Err(Error::invalid("custom_function", "The function must return at least one array."));
        }
        let metas: Vec<(Vec<usize>, crate::dtype::Dtype)> =
            outs.iter().map(|o| (o.shape().to_vec(), o.dtype())).collect();
        let mut inputs = args.to_vec();
        inputs.extend(outs.iter().map(stop_gradient));
        let prim = CustomTransforms { func: self.clone(), n_in: args.len() };
        Ok(Array::from_op_multi(metas, Arc::new(prim), inputs))
    }

    /// The function as a closure (for passing to `grad`, `vmap`, …).
    pub fn into_fn(self) -> impl Fn(&[Array]) -> Result<Vec<Array>> + Clone + Send + Sync + 'static {
        move |args: &[Array]| self.call(args)
    }
}

/// Gradient checkpointing (MLX's `mx.checkpoint`): `f` whose backward pass
/// recomputes `f`'s intermediates from its inputs instead of keeping them
/// alive from the forward pass.
pub fn checkpoint(
    f: impl Fn(&[Array]) -> Result<Vec<Array>> + Send + Sync + 'static,
) -> impl Fn(&[Array]) -> Result<Vec<Array>> + Clone + Send + Sync + 'static {
    let fun: Fun = Arc::new(f);
    let again = fun.clone();
    let recompute = move |primals: &[Array], cotangents: &[Array], _: &[Array]| -> Result<Vec<Array>> {
        Ok(vjp(|xs: &[Array]| again(xs), primals, cotangents)?.1)
    };
    CustomFunction { fun, vjp: Some(Arc::new(recompute)), jvp: None, vmap: None }.into_fn()
}

/// The primitive behind a [`CustomFunction`] call. Inputs: the arguments,
/// then `f`'s outputs (behind `stop_gradient`); outputs: those outputs.
pub struct CustomTransforms {
    func: CustomFunction,
    n_in: usize,
}

fn check_shapes(what: &str, got: &[Array], want: &[Array]) -> Result<()> {
    if got.len() != want.len() {
        return Err(Error::invalid(
            "custom_function",
            format!("The {what} rule returned {} arrays, expected {}.", got.len(), want.len()),
        ));
    }
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        if g.shape() != w.shape() {
            return Err(Error::invalid(
                "custom_function",
                format!(
                    "The {what} rule returned shape {} at position {k}, expected {}.",
                    fmt_shape(g.shape()),
                    fmt_shape(w.shape())
                ),
            ));
        }
    }
    Ok(())
}

impl CustomTransforms {
    /// The rules of this function applied to arguments batched along `in_axes`.
    fn batched(&self, in_axes: Vec<Option<i32>>, n_out: usize) -> CustomFunction {
        let n = self.n_in;
        let f = self.func.fun.clone();
        let ia = in_axes.clone();
        let fun: Fun = Arc::new(move |xs: &[Array]| vmap(|ys: &[Array]| f(ys), &ia, &[0])(xs));
        let vjp_rule: Option<VjpFun> = self.func.vjp.clone().map(|v| {
            let ia = in_axes.clone();
            let rule = move |p: &[Array], c: &[Array], o: &[Array]| -> Result<Vec<Array>> {
                let mut all = p.to_vec();
                all.extend_from_slice(c);
                all.extend_from_slice(o);
                let mut axes = ia.clone();
                axes.extend(std::iter::repeat_n(Some(0), 2 * n_out));
                let out_axes: Vec<i32> = ia.iter().map(|a| a.unwrap_or(0)).collect();
                let g = vmap(|z: &[Array]| v(&z[..n], &z[n..n + n_out], &z[n + n_out..]), &axes, &out_axes)(&all)?;
                // An unbatched argument's cotangent sums over the batch.
                g.into_iter().zip(&ia).map(|(g, a)| if a.is_none() { sum(&g, 0, false) } else { Ok(g) }).collect()
            };
            Arc::new(rule) as VjpFun
        });
        let jvp_rule: Option<JvpFun> = self.func.jvp.clone().map(|u| {
            let ia = in_axes.clone();
            let rule = move |p: &[Array], t: &[Array], argnums: &[usize]| -> Result<Vec<Array>> {
                let mut all = p.to_vec();
                all.extend_from_slice(t);
                let mut axes = ia.clone();
                axes.extend(argnums.iter().map(|&i| ia[i]));
                vmap(|z: &[Array]| u(&z[..n], &z[n..], argnums), &axes, &vec![0; n_out])(&all)
            };
            Arc::new(rule) as JvpFun
        });
        CustomFunction { fun, vjp: vjp_rule, jvp: jvp_rule, vmap: None }
    }
}

impl Primitive for CustomTransforms {
    fn name(&self) -> &'static str {
        "CustomTransforms"
    }
    fn eval(&self, _: &dyn Backend, inputs: &[Array], _: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(inputs[self.n_in..].iter().map(|a| a.data()).collect())
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        let args = &primals[..self.n_in];
        let grads = match &self.func.vjp {
            Some(rule) => rule(args, cotangents, outputs)?,
            None => {
                let f = &self.func.fun;
                vjp(|xs: &[Array]| f(xs), args, cotangents)?.1
            }
        };
        check_shapes("vjp", &grads, args)?;
        argnums
            .iter()
            .map(|&i| match grads.get(i) {
                Some(g) if i < self.n_in => astype(g, primals[i].dtype()),
                _ => zeros_like(&primals[i]),
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let args = &primals[..self.n_in];
        let outs = &primals[self.n_in..];
        let (an, ts): (Vec<usize>, Vec<Array>) =
            argnums.iter().zip(tangents).filter(|(i, _)| **i < self.n_in).map(|(&i, t)| (i, t.clone())).unzip();
        let res = match &self.func.jvp {
            Some(rule) => rule(args, &ts, &an)?,
            None => {
                let mut full: Vec<Array> = args.iter().map(zeros_like).collect::<Result<_>>()?;
                for (&i, t) in an.iter().zip(&ts) {
                    full[i] = t.clone();
                }
                let f = &self.func.fun;
                jvp(|xs: &[Array]| f(xs), args, &full)?.1
            }
        };
        check_shapes("jvp", &res, outs)?;
        Ok(res)
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let (args, outs) = inputs.split_at(self.n_in);
        let (arg_axes, out_axes) = axes.split_at(self.n_in);
        if let Some(rule) = &self.func.vmap {
            let (res, res_axes) = rule(args, arg_axes)?;
            if res.len() != outs.len() || res_axes.len() != outs.len() {
                return Err(Error::invalid(
                    "custom_function",
                    format!(
                        "The vmap rule returned {} arrays and {} axes for {} outputs.",
                        res.len(),
                        res_axes.len(),
                        outs.len()
                    ),
                ));
            }
            return Ok((res, res_axes));
        }
        if arg_axes.iter().all(Option::is_none) {
            // Only arrays `f` captured are batched: its traced, batched outputs are the result.
            return Ok((outs.to_vec(), out_axes.to_vec()));
        }
        let in_axes: Vec<Option<i32>> = arg_axes.iter().map(|a| a.map(|v| v as i32)).collect();
        let res = self.batched(in_axes, outs.len()).call(args)?;
        let n = res.len();
        Ok((res, vec![Some(0); n]))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
