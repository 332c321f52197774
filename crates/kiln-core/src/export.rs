//! Graph export to Graphviz DOT, for inspection.
//!
//! One DOT node per array reachable from the outputs through unevaluated (or
//! traced) operations:
//!
//! * operations are boxes labelled with the primitive's name (`name[i]` for
//!   output `i` of a multi-output primitive), the shape, the dtype and the
//!   stream (`cpu:3` is stream 3 of the CPU);
//! * leaves given a name are *inputs*, drawn as ellipses with their name;
//! * other leaves are *constants*, drawn as dashed ellipses (a size-1
//!   constant shows its value);
//! * requested outputs get a double border; edges run from each input to its
//!   consumer, labelled with the argument position when an op has several.
//!
//! Node names (`n0`, `n1`, …) follow a depth-first post-order from the outputs,
//! so the text depends only on the graph, not on addresses.

use crate::array::Array;
use crate::device::{DeviceType, Stream};
use crate::dtype::Scalar;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The graph behind `outputs` as DOT text. `names` labels arrays (typically
/// the inputs) to make the graph easier to read.
///
/// ```
/// use kiln_core::{export_to_dot, Array};
/// let x = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
/// let y = &x * 2.0;
/// let dot = export_to_dot(&[&y], &[("x", &x)]);
/// assert!(dot.starts_with("digraph kiln {"));
/// assert!(dot.contains("Multiply"));
/// ```
pub fn export_to_dot(outputs: &[&Array], names: &[(&str, &Array)]) -> String {
    let mut out = String::new();
    out.push_str("digraph kiln {\n  rankdir=TB;\n");
    let named: HashMap<usize, &str> = names.iter().map(|(n, a)| (a.id(), *n)).collect();
    let is_output: HashMap<usize, ()> = outputs.iter().map(|a| (a.id(), ())).collect();
    let mut ids: HashMap<usize, usize> = HashMap::new();
    let mut edges = String::new();
    // (array, its inputs, next input to visit)
    let mut stack: Vec<(Array, Vec<Array>, usize)> = Vec::new();
    for o in outputs {
        if ids.contains_key(&o.id()) {
            continue;
        }
        stack.push(((*o).clone(), graph_inputs(o), 0));
        while let Some(top) = stack.last_mut() {
            if top.2 < top.1.len() {
                let next = top.1[top.2].clone();
                top.2 += 1;
                if !ids.contains_key(&next.id()) {
                    // A DAG: a node on the stack is never its own input.
                    let ins = graph_inputs(&next);
                    stack.push((next, ins, 0));
                }
                continue;
            }
            let (a, ins, _) = stack.pop().expect("non-empty stack");
            let id = ids.len();
            ids.insert(a.id(), id);
            write_node(&mut out, id, &a, named.get(&a.id()).copied(), is_output.contains_key(&a.id()));
            for (i, inp) in ins.iter().enumerate() {
                let from = ids[&inp.id()];
                if ins.len() > 1 {
                    let _ = writeln!(edges, "  n{from} -> n{id} [label=\"{i}\"];");
                } else {
                    let _ = writeln!(edges, "  n{from} -> n{id};");
                }
            }
        }
    }
    out.push_str(&edges);
    out.push_str("}\n");
    out
}

/// Writes [`export_to_dot`]'s text to `w`.
pub fn write_dot(w: &mut dyn std::io::Write, outputs: &[&Array], names: &[(&str, &Array)]) -> std::io::Result<()> {
    w.write_all(export_to_dot(outputs, names).as_bytes())
}

fn graph_inputs(a: &Array) -> Vec<Array> {
    a.inputs()
}

fn fmt_stream(s: Stream) -> String {
    match s.device.kind {
        DeviceType::Cpu => format!("cpu:{}", s.index),
        DeviceType::Gpu => format!("gpu{}:{}", s.device.index, s.index),
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn fmt_scalar(s: Scalar) -> String {
    match s {
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::UInt(u) => u.to_string(),
        Scalar::Float(f) => format!("{f}"),
        Scalar::Complex(r, i) => format!("{r}{i:+}j"),
    }
}

fn write_node(out: &mut String, id: usize, a: &Array, name: Option<&str>, output: bool) {
    let meta = format!("{} {}", crate::error::fmt_shape(a.shape()), a.dtype());
    let border = if output { ", peripheries=2" } else { "" };
    match a.expr() {
        Some((e, pos)) => {
            let mut op = e.prim.name().to_string();
            if e.siblings.get().is_some() {
                op = format!("{op}[{pos}]");
            }
            let label = match name {
                Some(n) => format!("{}: {op}\\n{meta}\\n{}", escape(n), fmt_stream(e.stream)),
                None => format!("{op}\\n{meta}\\n{}", fmt_stream(e.stream)),
            };
            let _ = writeln!(out, "  n{id} [label=\"{label}\", shape=box{border}];");
        }
        None => match name {
            Some(n) => {
                let _ = writeln!(out, "  n{id} [label=\"{}\\n{meta}\", shape=ellipse{border}];", escape(n));
            }
            None => {
                let value = if a.size() == 1 && a.is_evaluated() {
                    a.item_scalar().map(|s| format!("{}\\n", fmt_scalar(s))).unwrap_or_default()
                } else {
                    String::new()
                };
                let _ = writeln!(out, "  n{id} [label=\"{value}{meta}\", shape=ellipse, style=dashed{border}];");
            }
        },
    }
}
