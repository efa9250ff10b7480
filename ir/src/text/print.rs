//! The printer: a model to its text form.

use super::attr::{to_attr, write_map, write_quoted, Attr};
use super::lexer::is_bare_name;
use crate::graph::{Model, Node, Op, Region, ValueId};
use crate::shape::{Dim, TensorType};
use crate::tensor::{Storage, Tensor};
use half::{bf16, f16};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Tensors up to this many elements print as decimals, larger ones as hex.
const MAX_DECIMAL_ELEMS: usize = 16;

pub(crate) fn write_name(out: &mut String, s: &str) {
    if is_bare_name(s) {
        out.push_str(s);
    } else {
        write_quoted(out, s);
    }
}

pub(crate) fn write_type(out: &mut String, ty: &TensorType) {
    out.push_str(ty.dtype.name());
    out.push('[');
    for (i, d) in ty.shape.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match d {
            Dim::Known(n) => {
                let _ = write!(out, "{n}");
            }
            Dim::Sym(s) if super::attr::is_ident(s) => out.push_str(s),
            Dim::Sym(s) => write_quoted(out, s),
        }
    }
    out.push(']');
}

/// An op's name and attributes, from its serde form (`"name"` or `{"name": {fields}}`).
pub(crate) fn op_parts(op: &Op) -> (String, Vec<(String, Attr)>) {
    match to_attr(op) {
        Ok(Attr::Str(name)) => (name, vec![]),
        Ok(Attr::Map(mut m)) if m.len() == 1 => match m.remove(0) {
            (name, Attr::Map(fields)) => (name, fields),
            (name, other) => (name, vec![("value".to_string(), other)]),
        },
        _ => (op.name(), vec![]),
    }
}

/// Writes ` {attrs}` unless every attribute is absent.
pub(crate) fn write_attrs(out: &mut String, attrs: &[(String, Attr)]) {
    if attrs.iter().any(|(_, v)| *v != Attr::Null) {
        out.push(' ');
        write_map(out, attrs);
    }
}

struct Printer<'m> {
    m: &'m Model,
    /// `%name` or `%name#k` per value id.
    names: Vec<String>,
    out: String,
}

pub(crate) fn print_model(m: &Model) -> String {
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let names = m
        .values
        .iter()
        .map(|v| {
            let mut s = String::from("%");
            write_name(&mut s, &v.name);
            let k = seen.entry(v.name.as_str()).or_insert(0);
            if *k > 0 {
                let _ = write!(s, "#{k}");
            }
            *k += 1;
            s
        })
        .collect();
    let mut p = Printer {
        m,
        names,
        out: String::new(),
    };
    p.model();
    p.out
}

impl<'m> Printer<'m> {
    fn vref(&self, id: ValueId) -> String {
        match self.names.get(id.index()) {
            Some(s) => s.clone(),
            None => format!("%\"<invalid value id {}>\"", id.0),
        }
    }

    fn ty(&self, id: ValueId) -> Option<&'m TensorType> {
        self.m.values.get(id.index()).map(|v| &v.ty)
    }

    fn typed(&mut self, id: ValueId) {
        let s = self.vref(id);
        self.out.push_str(&s);
        self.out.push_str(": ");
        self.type_of(id);
    }

    fn type_of(&mut self, id: ValueId) {
        match self.m.values.get(id.index()) {
            Some(v) => write_type(&mut self.out, &v.ty),
            None => self.out.push_str("<invalid>"),
        }
    }

    fn model(&mut self) {
        let m = self.m;
        self.out.push_str("kiln 1\nmodel ");
        write_quoted(&mut self.out, &m.name);
        self.out.push('\n');

        let mut defined = HashSet::new();
        let mut natural: Vec<ValueId> = vec![];
        for &c in m.consts.keys() {
            defined.insert(c);
        }
        collect_defs(&m.body, &mut defined, &mut natural);
        let decls: Vec<ValueId> = (0..m.values.len() as u32)
            .map(ValueId)
            .filter(|v| !defined.contains(v))
            .collect();
        let order: Vec<ValueId> = decls
            .iter()
            .chain(m.consts.keys())
            .chain(natural.iter())
            .copied()
            .collect();

        for &v in &decls {
            self.out.push_str("value ");
            self.typed(v);
            self.out.push('\n');
        }
        for (&id, t) in &m.consts {
            self.out.push_str("const ");
            self.typed(id);
            self.out.push_str(" = ");
            self.dense(id, t);
            self.out.push('\n');
        }
        self.out.push_str("func");
        self.params(&m.body.params);
        self.out.push(' ');
        self.region_body(&m.body, 0);
        self.out.push('\n');

        if order.iter().enumerate().any(|(i, v)| v.index() != i) {
            self.out.push_str("order ");
            write_ranges(&mut self.out, &order);
            self.out.push('\n');
        }
    }

    fn params(&mut self, params: &[ValueId]) {
        self.out.push('(');
        for (i, &p) in params.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.typed(p);
        }
        self.out.push(')');
    }

    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
    }

    /// `{ nodes.. return results }`, the closing brace at `depth`.
    fn region_body(&mut self, r: &Region, depth: usize) {
        self.out.push_str("{\n");
        for n in &r.nodes {
            self.node(n, depth + 1);
        }
        self.indent(depth + 1);
        self.out.push_str("return");
        for (i, &v) in r.results.iter().enumerate() {
            self.out.push_str(if i == 0 { " " } else { ", " });
            let s = self.vref(v);
            self.out.push_str(&s);
        }
        self.out.push('\n');
        self.indent(depth);
        self.out.push('}');
    }

    fn node(&mut self, n: &Node, depth: usize) {
        self.indent(depth);
        for (i, &o) in n.outputs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            let s = self.vref(o);
            self.out.push_str(&s);
        }
        if !n.outputs.is_empty() {
            self.out.push_str(" = ");
        }
        let (name, attrs) = op_parts(&n.op);
        self.out.push_str(&name);
        self.out.push('(');
        for (i, inp) in n.inputs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            match inp {
                Some(v) => {
                    let s = self.vref(*v);
                    self.out.push_str(&s);
                }
                None => self.out.push('_'),
            }
        }
        self.out.push(')');
        write_attrs(&mut self.out, &attrs);
        for (i, &o) in n.outputs.iter().enumerate() {
            self.out.push_str(if i == 0 { " : " } else { ", " });
            self.type_of(o);
        }
        let default_name = n
            .outputs
            .first()
            .and_then(|o| self.m.values.get(o.index()))
            .map(|v| v.name.as_str());
        if n.name != default_name.unwrap_or("") {
            self.out.push_str(" @");
            write_name(&mut self.out, &n.name);
        }
        if !n.regions.is_empty() {
            self.out.push_str(" {\n");
            for (i, r) in n.regions.iter().enumerate() {
                self.indent(depth + 1);
                self.out.push_str(&region_label(&n.op, i, n.regions.len()));
                if !r.params.is_empty() {
                    self.params(&r.params);
                }
                self.out.push(' ');
                self.region_body(r, depth + 1);
                self.out.push('\n');
            }
            self.indent(depth);
            self.out.push('}');
        }
        self.out.push('\n');
    }

    fn dense(&mut self, id: ValueId, t: &Tensor) {
        self.out.push_str("dense<");
        let own = TensorType::known(t.dtype(), &t.shape);
        if self.ty(id) != Some(&own) {
            write_type(&mut self.out, &own);
            self.out.push(' ');
        }
        if !write_decimal(&mut self.out, &t.data) {
            self.out.push_str("hex \"");
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let bytes = t.data.to_le_bytes();
            let mut hex = Vec::with_capacity(bytes.len() * 2);
            for b in bytes {
                hex.push(HEX[(b >> 4) as usize]);
                hex.push(HEX[(b & 15) as usize]);
            }
            self.out
                .push_str(std::str::from_utf8(&hex).unwrap_or_default());
            self.out.push('"');
        }
        self.out.push('>');
    }
}

/// Region labels are only for the reader; the parser accepts any identifier.
fn region_label(op: &Op, i: usize, n: usize) -> String {
    match (op, i) {
        (Op::If, 0) => "then".into(),
        (Op::If, 1) => "else".into(),
        _ if n == 1 => "body".into(),
        _ => format!("region{i}"),
    }
}

/// Values in the order the parser numbers them: a region's params, then each
/// node's regions before its outputs (the order in which a builder creates them).
fn collect_defs(r: &Region, defined: &mut HashSet<ValueId>, out: &mut Vec<ValueId>) {
    for &p in &r.params {
        defined.insert(p);
        out.push(p);
    }
    for n in &r.nodes {
        for sub in &n.regions {
            collect_defs(sub, defined, out);
        }
        for &o in &n.outputs {
            defined.insert(o);
            out.push(o);
        }
    }
}

/// `0..3, 7, 3..7`: runs of consecutive ids as half-open ranges.
fn write_ranges(out: &mut String, ids: &[ValueId]) {
    let mut i = 0;
    let mut first = true;
    while i < ids.len() {
        let mut j = i + 1;
        while j < ids.len() && ids[j].0 == ids[j - 1].0.wrapping_add(1) {
            j += 1;
        }
        if !first {
            out.push_str(", ");
        }
        first = false;
        if j - i == 1 {
            let _ = write!(out, "{}", ids[i].0);
        } else {
            let _ = write!(out, "{}..{}", ids[i].0, ids[j - 1].0 as u64 + 1);
        }
        i = j;
    }
}

/// Writes `[a, b, ..]` when the data is small and decimals reproduce it bit
/// for bit (NaN payloads would not survive, so NaN goes to hex).
fn write_decimal(out: &mut String, s: &Storage) -> bool {
    if s.len() > MAX_DECIMAL_ELEMS {
        return false;
    }
    let items: Option<Vec<String>> = match s {
        Storage::F32(v) => v
            .iter()
            .map(|x| (!x.is_nan()).then(|| format!("{x:?}")))
            .collect(),
        Storage::F64(v) => v
            .iter()
            .map(|x| (!x.is_nan()).then(|| format!("{x:?}")))
            .collect(),
        Storage::F16(v) => v
            .iter()
            .map(|&b| half_text(f16::from_bits(b).to_f32()))
            .collect(),
        Storage::BF16(v) => v
            .iter()
            .map(|&b| half_text(bf16::from_bits(b).to_f32()))
            .collect(),
        Storage::Bool(v) => Some(v.iter().map(|b| b.to_string()).collect()),
        Storage::I8(v) => Some(v.iter().map(|x| x.to_string()).collect()),
        Storage::U8(v) => Some(v.iter().map(|x| x.to_string()).collect()),
        Storage::I16(v) => Some(v.iter().map(|x| x.to_string()).collect()),
        Storage::U16(v) => Some(v.iter().map(|x| x.to_string()).collect()),
        Storage::I32(v) => Some(v.iter().map(|x| x.to_string()).collect()),
        Storage::U32(v) => Some(v.iter().map(|x| x.to_string()).collect()),
        Storage::I64(v) => Some(v.iter().map(|x| x.to_string()).collect()),
        Storage::U64(v) => Some(v.iter().map(|x| x.to_string()).collect()),
    };
    let Some(items) = items else { return false };
    out.push('[');
    out.push_str(&items.join(", "));
    out.push(']');
    true
}

fn half_text(x: f32) -> Option<String> {
    (!x.is_nan()).then(|| format!("{x:?}"))
}

/// `name {attrs}`: an op on its own, as the binary form stores it.
pub(crate) fn print_op(op: &Op) -> String {
    let (name, attrs) = op_parts(op);
    let mut out = name;
    write_attrs(&mut out, &attrs);
    out
}
