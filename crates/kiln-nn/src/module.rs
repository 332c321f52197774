//! The [`Module`] trait: a struct of parameters and submodules, visited by
//! dotted key (`layers.0.weight`) as MLX's `nn.Module` flattens its attributes.

use kiln_core::io::{self, ArrayMap, Format};
use kiln_core::{tree_flatten, tree_unflatten, Array, Error, Result, Tree};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::path::Path;

/// A parameter: an array and whether it is frozen (excluded from
/// [`ModuleExt::trainable_parameters`] and from gradients).
#[derive(Clone, Debug)]
pub struct Param {
    value: Array,
    frozen: bool,
}

impl Param {
    /// A trainable parameter.
    pub fn new(value: Array) -> Param {
        Param { value, frozen: false }
    }
    /// A parameter that starts frozen (e.g. BatchNorm's running statistics).
    pub fn frozen(value: Array) -> Param {
        Param { value, frozen: true }
    }
    /// The array.
    pub fn value(&self) -> &Array {
        &self.value
    }
    /// Replaces the array.
    pub fn set(&mut self, value: Array) {
        self.value = value;
    }
    /// Whether the parameter is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }
    /// Freezes or unfreezes the parameter.
    pub fn set_frozen(&mut self, frozen: bool) {
        self.frozen = frozen;
    }
}

impl Deref for Param {
    type Target = Array;
    fn deref(&self) -> &Array {
        &self.value
    }
}

impl From<&Param> for kiln_core::ops::Operand {
    fn from(p: &Param) -> Self {
        kiln_core::ops::Operand::from(&p.value)
    }
}

impl From<Array> for Param {
    fn from(a: Array) -> Param {
        Param::new(a)
    }
}

/// `prefix.key`, or `key` at the root.
pub fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A neural-network module: parameters and submodules reachable by dotted key.
///
/// Implement it with `#[derive(Module)]` (see the crate docs); layers whose
/// behaviour depends on training mode (dropout, batch norm) carry their own
/// flag. The user-facing operations (`parameters`, `update`, `freeze`,
/// `save_weights`, …) come from the blanket [`ModuleExt`].
pub trait Module {
    /// Calls `f` with the key and value of every parameter below this module.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param));
    /// Calls `f` with the key and a mutable reference of every parameter.
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param));
    /// Calls `f` on every submodule below this one (pre-order, with its key).
    fn visit_children(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn Module));
    /// Calls `f` on every submodule below this one, mutably.
    fn visit_children_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Module));
    /// Sets this module's own training flag (a no-op for modules without one).
    fn set_training_flag(&mut self, training: bool) {
        let _ = training;
    }
    /// This module's own training flag (`true` for modules without one).
    fn is_training(&self) -> bool {
        true
    }
    /// This module as a layer [`crate::quantize`] converts in place
    /// ([`crate::AnyLinear`], [`crate::AnyEmbedding`]); `None` for others.
    fn as_quantizable(&mut self) -> Option<&mut dyn crate::layers::Quantizable> {
        None
    }
}

/// A struct field that takes part in a [`Module`]: a [`Param`], a module, or
/// an `Option`/`Vec`/`Box` of them. Plain values (numbers, flags, strings)
/// implement it as nothing.
pub trait ModuleField {
    /// Visits the parameters inside this field, `key` being the field's key.
    fn visit_params(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
        let _ = (key, f);
    }
    /// Visits the parameters inside this field mutably.
    fn visit_params_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        let _ = (key, f);
    }
    /// Visits the modules inside this field (itself first, if it is one).
    fn visit_modules(&self, key: &str, f: &mut dyn FnMut(&str, &dyn Module)) {
        let _ = (key, f);
    }
    /// Visits the modules inside this field mutably.
    fn visit_modules_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        let _ = (key, f);
    }
}

impl ModuleField for Param {
    fn visit_params(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
        f(key, self)
    }
    fn visit_params_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(key, self)
    }
}

impl<T: ModuleField> ModuleField for Option<T> {
    fn visit_params(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
        if let Some(t) = self {
            t.visit_params(key, f)
        }
    }
    fn visit_params_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        if let Some(t) = self {
            t.visit_params_mut(key, f)
        }
    }
    fn visit_modules(&self, key: &str, f: &mut dyn FnMut(&str, &dyn Module)) {
        if let Some(t) = self {
            t.visit_modules(key, f)
        }
    }
    fn visit_modules_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        if let Some(t) = self {
            t.visit_modules_mut(key, f)
        }
    }
}

impl<T: ModuleField> ModuleField for Vec<T> {
    fn visit_params(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
        for (i, t) in self.iter().enumerate() {
            t.visit_params(&join_key(key, &i.to_string()), f)
        }
    }
    fn visit_params_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        for (i, t) in self.iter_mut().enumerate() {
            t.visit_params_mut(&join_key(key, &i.to_string()), f)
        }
    }
    fn visit_modules(&self, key: &str, f: &mut dyn FnMut(&str, &dyn Module)) {
        for (i, t) in self.iter().enumerate() {
            t.visit_modules(&join_key(key, &i.to_string()), f)
        }
    }
    fn visit_modules_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        for (i, t) in self.iter_mut().enumerate() {
            t.visit_modules_mut(&join_key(key, &i.to_string()), f)
        }
    }
}

impl<T: ModuleField + ?Sized> ModuleField for Box<T> {
    fn visit_params(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
        (**self).visit_params(key, f)
    }
    fn visit_params_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        (**self).visit_params_mut(key, f)
    }
    fn visit_modules(&self, key: &str, f: &mut dyn FnMut(&str, &dyn Module)) {
        (**self).visit_modules(key, f)
    }
    fn visit_modules_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        (**self).visit_modules_mut(key, f)
    }
}

macro_rules! plain_fields {
    ($($t:ty),*) => { $(impl ModuleField for $t {})* };
}
plain_fields!(bool, u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64, String, kiln_core::Dtype);
impl<T: ModuleField> ModuleField for std::marker::PhantomData<T> {}

/// Which parameters an operation touches: a key selects the parameter with
/// that dotted key, every parameter under a module with that key, or (a key
/// without a dot) every parameter with that local name, in any submodule, as
/// MLX's `freeze(keys=["bias"])` does.
fn key_matches(param_key: &str, selector: &str) -> bool {
    param_key == selector
        || param_key.starts_with(&format!("{selector}."))
        || (!selector.contains('.') && param_key.rsplit('.').next() == Some(selector))
}

/// What [`ModuleExt::load_weights`] found wrong with a checkpoint.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Parameters of the module the file does not have.
    pub missing: Vec<String>,
    /// Arrays of the file the module does not have.
    pub unexpected: Vec<String>,
    /// `(key, module shape, file shape)` of arrays whose shapes differ.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// Whether the file matched the module exactly.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

/// The operations every [`Module`] gets, as MLX's `nn.Module` methods.
pub trait ModuleExt: Module {
    /// Every parameter, frozen or not, as a tree keyed like MLX (`layers.0.weight`).
    fn parameters(&self) -> Tree {
        tree_of(self, |_| true)
    }
    /// The parameters that are not frozen.
    fn trainable_parameters(&self) -> Tree {
        tree_of(self, |p| !p.is_frozen())
    }
    /// `(key, array)` of every parameter, in visiting order.
    fn named_parameters(&self) -> Vec<(String, Array)> {
        let mut out = Vec::new();
        self.visit_params("", &mut |k, p| out.push((k.to_string(), p.value().clone())));
        out
    }
    /// Number of scalars over all parameters.
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit_params("", &mut |_, p| n += p.size());
        n
    }
    /// Replaces the parameters named in `tree` (any subset). A key the module
    /// does not have is an error, as MLX's `update(strict=True)`.
    fn update(&mut self, tree: &Tree) -> Result<()> {
        let mut new: BTreeMap<String, Array> = tree_flatten(tree).into_iter().collect();
        self.visit_params_mut("", &mut |k, p| {
            if let Some(a) = new.remove(k) {
                p.set(a);
            }
        });
        if let Some(k) = new.keys().next() {
            return Err(Error::invalid("Module.update", format!("The module has no parameter named {k}.")));
        }
        Ok(())
    }
    /// Freezes every parameter.
    fn freeze(&mut self) {
        self.visit_params_mut("", &mut |_, p| p.set_frozen(true));
    }
    /// Unfreezes every parameter.
    fn unfreeze(&mut self) {
        self.visit_params_mut("", &mut |_, p| p.set_frozen(false));
    }
    /// Freezes the parameters selected by `keys` (a dotted key, a submodule's
    /// key, or a local name such as `bias`). A key that selects nothing is an error.
    fn freeze_keys(&mut self, keys: &[&str]) -> Result<()> {
        set_frozen_keys(self, keys, true)
    }
    /// Unfreezes the parameters selected by `keys` (as [`ModuleExt::freeze_keys`]).
    fn unfreeze_keys(&mut self, keys: &[&str]) -> Result<()> {
        set_frozen_keys(self, keys, false)
    }
    /// Sets training mode on this module and every submodule.
    fn train(&mut self, training: bool) {
        self.set_training_flag(training);
        self.visit_children_mut("", &mut |_, m| m.set_training_flag(training));
    }
    /// Evaluation mode: `train(false)`.
    fn eval_mode(&mut self) {
        self.train(false)
    }
    /// Calls `f(key, module)` on this module (key `""`) and every submodule.
    fn apply_to_modules(&mut self, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        f("", self.as_dyn_mut());
        self.visit_children_mut("", f);
    }
    /// Keys of this module's submodules (pre-order).
    fn module_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit_children("", &mut |k, _| out.push(k.to_string()));
        out
    }
    /// Saves every parameter to a `.safetensors` or `.npz` file (by extension).
    fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let arrays: ArrayMap = self.named_parameters().into_iter().collect();
        match Format::from_path(path) {
            Some(Format::Safetensors) => io::save_safetensors(path, &arrays, &BTreeMap::new()),
            Some(Format::Npz) => io::save_npz(path, &arrays, false),
            _ => Err(Error::invalid(
                "save_weights",
                format!("Unsupported file extension for {}: use .safetensors or .npz.", path.display()),
            )),
        }
    }
    /// Loads parameters from a `.safetensors` or `.npz` file. In strict mode
    /// any missing, unexpected or mis-shaped key is an error that lists them
    /// all and the module is left unchanged; otherwise the matching arrays are
    /// loaded and the report says what did not match.
    fn load_weights(&mut self, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport> {
        let path = path.as_ref();
        match io::load(path, None)? {
            io::Loaded::Arrays(arrays, _) => self.load_arrays(arrays, strict),
            io::Loaded::Array(_) => Err(Error::invalid(
                "load_weights",
                format!("{} holds one unnamed array, not named weights.", path.display()),
            )),
        }
    }
    /// [`ModuleExt::load_weights`] from arrays already in memory.
    fn load_arrays(&mut self, mut arrays: ArrayMap, strict: bool) -> Result<LoadReport> {
        let mut report = LoadReport::default();
        let mut shapes = BTreeMap::new();
        self.visit_params("", &mut |k, p| {
            shapes.insert(k.to_string(), p.shape().to_vec());
        });
        for (k, shape) in &shapes {
            match arrays.get(k) {
                None => report.missing.push(k.clone()),
                Some(a) if a.shape() != shape.as_slice() => {
                    report.mismatched.push((k.clone(), shape.clone(), a.shape().to_vec()))
                }
                Some(_) => {}
            }
        }
        report.unexpected = arrays.keys().filter(|k| !shapes.contains_key(*k)).cloned().collect();
        if strict && !report.is_exact() {
            return Err(Error::invalid("load_weights", describe(&report)));
        }
        let bad: BTreeSet<&String> = report.mismatched.iter().map(|(k, _, _)| k).collect();
        self.visit_params_mut("", &mut |k, p| {
            if bad.contains(&k.to_string()) {
                return;
            }
            if let Some(a) = arrays.remove(k) {
                p.set(a);
            }
        });
        Ok(report)
    }
    /// This module as a trait object.
    fn as_dyn_mut(&mut self) -> &mut dyn Module;
}

impl<M: Module> ModuleExt for M {
    fn as_dyn_mut(&mut self) -> &mut dyn Module {
        self
    }
}

fn tree_of<M: Module + ?Sized>(m: &M, keep: impl Fn(&Param) -> bool) -> Tree {
    let mut items = Vec::new();
    m.visit_params("", &mut |k, p| {
        if keep(p) {
            items.push((k.to_string(), p.value().clone()));
        }
    });
    if items.is_empty() {
        return Tree::Map(BTreeMap::new());
    }
    // Keys come from field names and indices, so they never conflict.
    tree_unflatten(items).unwrap_or_else(|_| Tree::Map(BTreeMap::new()))
}

fn set_frozen_keys<M: Module + ?Sized>(m: &mut M, keys: &[&str], frozen: bool) -> Result<()> {
    let mut hit = vec![false; keys.len()];
    m.visit_params_mut("", &mut |k, p| {
        for (i, sel) in keys.iter().enumerate() {
            if key_matches(k, sel) {
                hit[i] = true;
                p.set_frozen(frozen);
            }
        }
    });
    if let Some(i) = hit.iter().position(|h| !h) {
        let op = if frozen { "freeze" } else { "unfreeze" };
        return Err(Error::invalid(op, format!("No parameter matches the key {}.", keys[i])));
    }
    Ok(())
}

fn describe(r: &LoadReport) -> String {
    let mut parts = Vec::new();
    if !r.missing.is_empty() {
        parts.push(format!("missing keys: {}", r.missing.join(", ")));
    }
    if !r.unexpected.is_empty() {
        parts.push(format!("unexpected keys: {}", r.unexpected.join(", ")));
    }
    for (k, want, got) in &r.mismatched {
        parts.push(format!("{k} has shape {want:?} in the module but {got:?} in the file"));
    }
    format!("The weights do not match the module: {}.", parts.join("; "))
}
