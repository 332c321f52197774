//! Parameter trees: nested maps and lists of arrays, flattened to dotted keys
//! (`layers.0.weight`) as MLX's `tree_flatten` does.

use crate::array::Array;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// A nested structure of arrays.
#[derive(Clone, Debug)]
pub enum Tree {
    /// A leaf array.
    Leaf(Array),
    /// A map from names to subtrees (sorted by name).
    Map(BTreeMap<String, Tree>),
    /// A list of subtrees (keys are indices).
    List(Vec<Tree>),
}

impl Tree {
    /// The subtree at a dotted `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Tree> {
        let mut t = self;
        if key.is_empty() {
            return Some(t);
        }
        for part in key.split('.') {
            t = match t {
                Tree::Map(m) => m.get(part)?,
                Tree::List(l) => l.get(part.parse::<usize>().ok()?)?,
                Tree::Leaf(_) => return None,
            };
        }
        Some(t)
    }
    /// The array at a dotted `key`, if it is a leaf.
    pub fn array(&self, key: &str) -> Option<&Array> {
        match self.get(key)? {
            Tree::Leaf(a) => Some(a),
            _ => None,
        }
    }
}

/// `(dotted key, array)` pairs in order (maps sorted by key, lists by index).
pub fn tree_flatten(t: &Tree) -> Vec<(String, Array)> {
    let mut out = Vec::new();
    let mut stack: Vec<(String, &Tree)> = vec![(String::new(), t)];
    while let Some((prefix, node)) = stack.pop() {
        let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        match node {
            Tree::Leaf(a) => out.push((prefix, a.clone())),
            Tree::Map(m) => {
                for (k, v) in m.iter().rev() {
                    stack.push((join(k), v));
                }
            }
            Tree::List(l) => {
                for (i, v) in l.iter().enumerate().rev() {
                    stack.push((join(&i.to_string()), v));
                }
            }
        }
    }
    out
}

/// Rebuilds a tree from dotted keys; all-digit keys under one parent become lists.
pub fn tree_unflatten(items: impl IntoIterator<Item = (String, Array)>) -> Result<Tree> {
    let mut root: BTreeMap<String, Tree> = BTreeMap::new();
    let mut single_leaf = None;
    for (key, a) in items {
        if key.is_empty() {
            single_leaf = Some(a);
            continue;
        }
        let parts: Vec<&str> = key.split('.').collect();
        let mut m = &mut root;
        for p in &parts[..parts.len() - 1] {
            let e = m.entry(p.to_string()).or_insert_with(|| Tree::Map(BTreeMap::new()));
            m = match e {
                Tree::Map(mm) => mm,
                _ => return Err(Error::invalid("tree_unflatten", format!("Key {key} conflicts with a leaf."))),
            };
        }
        m.insert(parts[parts.len() - 1].to_string(), Tree::Leaf(a));
    }
    if let Some(a) = single_leaf {
        return Ok(Tree::Leaf(a));
    }
    Ok(listify(Tree::Map(root)))
}

fn listify(t: Tree) -> Tree {
    match t {
        Tree::Map(m) => {
            let is_list = !m.is_empty() && (0..m.len()).all(|i| m.contains_key(&i.to_string()));
            if is_list {
                let mut m = m;
                Tree::List((0..m.len()).map(|i| listify(m.remove(&i.to_string()).unwrap())).collect())
            } else {
                Tree::Map(m.into_iter().map(|(k, v)| (k, listify(v))).collect())
            }
        }
        other => other,
    }
}

/// Applies `f` to every leaf, keeping the structure.
pub fn tree_map(t: &Tree, f: &mut impl FnMut(&Array) -> Result<Array>) -> Result<Tree> {
    Ok(match t {
        Tree::Leaf(a) => Tree::Leaf(f(a)?),
        Tree::Map(m) => Tree::Map(m.iter().map(|(k, v)| Ok((k.clone(), tree_map(v, f)?))).collect::<Result<_>>()?),
        Tree::List(l) => Tree::List(l.iter().map(|v| tree_map(v, f)).collect::<Result<_>>()?),
    })
}
