//! The parser: text form to a model.
//!
//! Values are collected first (definitions in text order, uses by name) and
//! numbered at the end, so uses may precede definitions and the `order`
//! directive can place each definition at its arena id.

use super::attr::{from_attr, Attr};
use super::dense::{decimals_to_storage, decode_hex};
use super::lexer::{lex, Tok, Token};
use super::TextError;
use crate::dtype::DType;
use crate::graph::{Model, Node, Op, Region, ValueId, ValueInfo};
use crate::shape::{Dim, TensorType};
use crate::tensor::{Storage, Tensor};
use std::collections::HashMap;

/// Deepest nesting of regions, attribute values and decimal lists: bounds the recursion on hostile input.
const MAX_DEPTH: usize = 64;

type Key = (String, u32);

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    defs: Vec<ValueInfo>,
    keys: HashMap<Key, usize>,
    /// Each use: the name it refers to and where it is written.
    uses: Vec<(Key, usize, usize)>,
    consts: Vec<(usize, Tensor)>,
    depth: usize,
}

type R<T> = Result<T, TextError>;

pub(crate) fn parse_model(src: &str) -> R<Model> {
    let mut p = Parser::new(src)?;
    p.model()
}

pub(crate) fn parse_op(src: &str) -> R<Op> {
    let mut p = Parser::new(src)?;
    let (name, line, col) = p.ident()?;
    let attrs = if p.is_punct('{') {
        Some(p.attr_map()?)
    } else {
        None
    };
    p.expect_eof()?;
    make_op(name, attrs, line, col)
}

fn make_op(name: String, attrs: Option<Vec<(String, Attr)>>, line: usize, col: usize) -> R<Op> {
    let a = match attrs {
        None => Attr::Str(name.clone()),
        Some(m) => Attr::Map(vec![(name.clone(), Attr::Map(m))]),
    };
    from_attr::<Op>(a).map_err(|e| TextError {
        line,
        col,
        msg: format!("op `{name}`: {e}"),
    })
}

impl Parser {
    fn new(src: &str) -> R<Parser> {
        Ok(Parser {
            toks: lex(src)?,
            pos: 0,
            defs: vec![],
            keys: HashMap::new(),
            uses: vec![],
            consts: vec![],
            depth: 0,
        })
    }

    fn peek(&self) -> &Token {
        // The token list always ends with Eof, and `bump` never passes it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.pos + k).min(self.toks.len() - 1)].tok
    }

    /// Takes the current token (the parser never looks back, so its text is moved out, not copied).
    fn bump(&mut self) -> Token {
        match self.toks.get_mut(self.pos) {
            Some(t) if t.tok != Tok::Eof => {
                self.pos += 1;
                let (line, col) = (t.line, t.col);
                std::mem::replace(
                    t,
                    Token {
                        tok: Tok::Eof,
                        line,
                        col,
                    },
                )
            }
            _ => self.peek().clone(),
        }
    }

    fn here(&self) -> (usize, usize) {
        let t = self.peek();
        (t.line, t.col)
    }

    fn err_here(&self, msg: impl Into<String>) -> TextError {
        let t = self.peek();
        TextError {
            line: t.line,
            col: t.col,
            msg: msg.into(),
        }
    }

    fn unexpected(&self, what: &str) -> TextError {
        self.err_here(format!(
            "expected {what}, found {}",
            self.peek().tok.describe()
        ))
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn is_ident(&self, s: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(i) if i == s)
    }

    fn expect(&mut self, c: char) -> R<()> {
        if !self.is_punct(c) {
            return Err(self.unexpected(&format!("`{c}`")));
        }
        self.bump();
        Ok(())
    }

    fn expect_kw(&mut self, kw: &str) -> R<()> {
        if !self.is_ident(kw) {
            return Err(self.unexpected(&format!("`{kw}`")));
        }
        self.bump();
        Ok(())
    }

    fn expect_eof(&self) -> R<()> {
        if self.peek().tok != Tok::Eof {
            return Err(self.unexpected("end of input"));
        }
        Ok(())
    }

    fn ident(&mut self) -> R<(String, usize, usize)> {
        if !matches!(self.peek().tok, Tok::Ident(_)) {
            return Err(self.unexpected("an identifier"));
        }
        match self.bump() {
            Token {
                tok: Tok::Ident(s),
                line,
                col,
            } => Ok((s, line, col)),
            _ => Err(self.unexpected("an identifier")),
        }
    }

    fn string(&mut self) -> R<String> {
        if !matches!(self.peek().tok, Tok::Str(_)) {
            return Err(self.unexpected("a string"));
        }
        match self.bump().tok {
            Tok::Str(s) => Ok(s),
            _ => Err(self.unexpected("a string")),
        }
    }

    fn value_tok(&mut self) -> R<(Key, usize, usize)> {
        if !matches!(self.peek().tok, Tok::Value(..)) {
            return Err(self.unexpected("a value (`%name`)"));
        }
        match self.bump() {
            Token {
                tok: Tok::Value(name, k),
                line,
                col,
            } => Ok(((name, k), line, col)),
            _ => Err(self.unexpected("a value (`%name`)")),
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_here(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn define(&mut self, (key, line, col): (Key, usize, usize), ty: TensorType) -> R<ValueId> {
        if self.keys.contains_key(&key) {
            return Err(TextError {
                line,
                col,
                msg: format!("value {} is defined twice", key_text(&key)),
            });
        }
        let idx = self.defs.len();
        self.keys.insert(key.clone(), idx);
        self.defs.push(ValueInfo { name: key.0, ty });
        Ok(ValueId(idx as u32))
    }

    /// A use, numbered among uses until every definition is known.
    fn use_value(&mut self) -> R<ValueId> {
        let u = self.value_tok()?;
        self.uses.push(u);
        Ok(ValueId((self.uses.len() - 1) as u32))
    }

    // ------------------------------------------------------------- top level

    fn model(&mut self) -> R<Model> {
        self.expect_kw("kiln")?;
        match &self.peek().tok {
            Tok::Num(v) if v == "1" => {
                self.bump();
            }
            Tok::Num(v) => {
                return Err(self.err_here(format!(
                    "unsupported format version {v} (this reader knows 1)"
                )))
            }
            _ => return Err(self.unexpected("the format version")),
        }
        let mut name = String::new();
        if self.is_ident("model") {
            self.bump();
            name = self.string()?;
        }
        let mut body = None;
        let mut order = None;
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Eof => break,
                Tok::Ident(kw) if kw == "value" => {
                    self.bump();
                    let v = self.value_tok()?;
                    self.expect(':')?;
                    let ty = self.tensor_type()?;
                    self.define(v, ty)?;
                }
                Tok::Ident(kw) if kw == "const" => {
                    self.bump();
                    self.constant()?;
                }
                Tok::Ident(kw) if kw == "func" => {
                    if body.is_some() {
                        return Err(self.err_here("a model has one `func`"));
                    }
                    self.bump();
                    let params = if self.is_punct('(') {
                        self.params()?
                    } else {
                        vec![]
                    };
                    let mut r = self.region_body()?;
                    r.params = params;
                    body = Some(r);
                }
                Tok::Ident(kw) if kw == "order" => {
                    if order.is_some() {
                        return Err(self.err_here("a model has at most one `order`"));
                    }
                    self.bump();
                    order = Some((self.order()?, t.line, t.col));
                }
                _ => return Err(self.unexpected("`value`, `const`, `func` or `order`")),
            }
        }
        let Some(body) = body else {
            return Err(self.err_here("the model has no `func`"));
        };
        self.finish(name, body, order)
    }

    fn finish(
        &mut self,
        name: String,
        body: Region,
        order: Option<(Vec<u32>, usize, usize)>,
    ) -> R<Model> {
        let n = self.defs.len();
        let ids: Vec<u32> = match order {
            None => (0..n as u32).collect(),
            Some((ids, line, col)) => {
                let err = |msg: String| TextError { line, col, msg };
                if ids.len() != n {
                    return Err(err(format!(
                        "`order` lists {} ids but the model defines {n} values",
                        ids.len()
                    )));
                }
                let mut seen = vec![false; n];
                for &i in &ids {
                    match seen.get_mut(i as usize) {
                        Some(s) if !*s => *s = true,
                        _ => {
                            return Err(err(format!("`order`: id {i} is out of range or repeated")))
                        }
                    }
                }
                ids
            }
        };
        let mut values = vec![None; n];
        for (d, info) in self.defs.drain(..).enumerate() {
            values[ids[d] as usize] = Some(info);
        }
        let values: Vec<ValueInfo> = values.into_iter().flatten().collect();
        let mut use_ids = Vec::with_capacity(self.uses.len());
        for (key, line, col) in &self.uses {
            match self.keys.get(key) {
                Some(&d) => use_ids.push(ValueId(ids[d])),
                None => {
                    return Err(TextError {
                        line: *line,
                        col: *col,
                        msg: format!("value {} is not defined", key_text(key)),
                    })
                }
            }
        }
        let mut body = body;
        renumber(&mut body, &ids, &use_ids);
        let consts = self
            .consts
            .drain(..)
            .map(|(d, t)| (ValueId(ids[d]), t))
            .collect();
        Ok(Model {
            name,
            values,
            consts,
            body,
        })
    }

    fn order(&mut self) -> R<Vec<u32>> {
        let mut ids = vec![];
        loop {
            let t = self.peek().clone();
            let Tok::Num(s) = &t.tok else {
                return Err(self.unexpected("an id or a range `a..b`"));
            };
            let bad = || TextError {
                line: t.line,
                col: t.col,
                msg: format!("`{s}` is not an id or a range `a..b`"),
            };
            match s.split_once("..") {
                Some((a, b)) => {
                    let a: u32 = a.parse().map_err(|_| bad())?;
                    let b: u32 = b.parse().map_err(|_| bad())?;
                    if b < a || ids.len() + (b - a) as usize > self.defs.len() {
                        return Err(bad());
                    }
                    ids.extend(a..b);
                }
                None => ids.push(s.parse().map_err(|_| bad())?),
            }
            self.bump();
            if !self.is_punct(',') {
                return Ok(ids);
            }
            self.bump();
        }
    }

    fn params(&mut self) -> R<Vec<ValueId>> {
        self.expect('(')?;
        let mut out = vec![];
        while !self.is_punct(')') {
            if !out.is_empty() {
                self.expect(',')?;
            }
            let v = self.value_tok()?;
            self.expect(':')?;
            let ty = self.tensor_type()?;
            out.push(self.define(v, ty)?);
        }
        self.bump();
        Ok(out)
    }

    fn tensor_type(&mut self) -> R<TensorType> {
        let (name, line, col) = self.ident()?;
        let dtype = DType::from_name(&name).ok_or_else(|| TextError {
            line,
            col,
            msg: format!("unknown element type `{name}`"),
        })?;
        self.expect('[')?;
        let mut shape = vec![];
        while !self.is_punct(']') {
            if !shape.is_empty() {
                self.expect(',')?;
            }
            let t = self.bump();
            shape.push(match t.tok {
                Tok::Num(s) => Dim::Known(s.parse().map_err(|_| TextError {
                    line: t.line,
                    col: t.col,
                    msg: format!("`{s}` is not a dimension size"),
                })?),
                Tok::Ident(s) | Tok::Str(s) => Dim::Sym(s),
                other => {
                    return Err(TextError {
                        line: t.line,
                        col: t.col,
                        msg: format!("expected a dimension, found {}", other.describe()),
                    })
                }
            });
        }
        self.bump();
        Ok(TensorType { dtype, shape })
    }

    // ------------------------------------------------------------- regions

    /// `{ stmt.. return %a, %b }`
    fn region_body(&mut self) -> R<Region> {
        self.enter()?;
        self.expect('{')?;
        let mut r = Region::default();
        while !self.is_ident("return") {
            if self.peek().tok == Tok::Eof {
                return Err(self.unexpected("`return`"));
            }
            let n = self.node()?;
            r.nodes.push(n);
        }
        self.bump();
        while !self.is_punct('}') {
            if !r.results.is_empty() {
                self.expect(',')?;
            }
            r.results.push(self.use_value()?);
        }
        self.bump();
        self.depth -= 1;
        Ok(r)
    }

    /// `%a, %b = op(%x, _) {attrs} : ty, ty @name { label(params) {..} .. }`
    fn node(&mut self) -> R<Node> {
        let mut outs = vec![];
        if matches!(self.peek().tok, Tok::Value(..)) {
            loop {
                outs.push(self.value_tok()?);
                if !self.is_punct(',') {
                    break;
                }
                self.bump();
            }
            self.expect('=')?;
        }
        let (op_name, line, col) = self.ident()?;
        self.expect('(')?;
        let mut inputs = vec![];
        while !self.is_punct(')') {
            if !inputs.is_empty() {
                self.expect(',')?;
            }
            if self.is_ident("_") {
                self.bump();
                inputs.push(None);
            } else {
                inputs.push(Some(self.use_value()?));
            }
        }
        self.bump();
        let attrs = if self.is_punct('{') && self.attr_block_ahead() {
            Some(self.attr_map()?)
        } else {
            None
        };
        let op = make_op(op_name, attrs, line, col)?;
        let mut types = vec![];
        if !outs.is_empty() {
            self.expect(':')?;
            for i in 0..outs.len() {
                if i > 0 {
                    self.expect(',')?;
                }
                types.push(self.tensor_type()?);
            }
        }
        let name = match self.peek().tok {
            Tok::At(_) => match self.bump().tok {
                Tok::At(s) => s,
                _ => String::new(),
            },
            _ => outs
                .first()
                .map(|((n, _), _, _)| n.clone())
                .unwrap_or_default(),
        };
        let mut regions = vec![];
        if self.is_punct('{') {
            self.bump();
            while !self.is_punct('}') {
                self.ident()?; // the label is for the reader
                let params = if self.is_punct('(') {
                    self.params()?
                } else {
                    vec![]
                };
                let mut r = self.region_body()?;
                r.params = params;
                regions.push(r);
            }
            self.bump();
        }
        let outputs = outs
            .into_iter()
            .zip(types)
            .map(|(v, ty)| self.define(v, ty))
            .collect::<R<Vec<_>>>()?;
        Ok(Node {
            name,
            op,
            inputs,
            outputs,
            regions,
        })
    }

    /// After a `{`: attributes start with `}` or with `key:`; a region block with a label.
    fn attr_block_ahead(&self) -> bool {
        match self.peek_at(1) {
            Tok::Punct('}') => true,
            Tok::Ident(_) | Tok::Str(_) => *self.peek_at(2) == Tok::Punct(':'),
            _ => false,
        }
    }

    // ------------------------------------------------------------ attributes

    fn attr_map(&mut self) -> R<Vec<(String, Attr)>> {
        self.enter()?;
        self.expect('{')?;
        let mut out: Vec<(String, Attr)> = vec![];
        while !self.is_punct('}') {
            if !out.is_empty() {
                self.expect(',')?;
            }
            let t = self.bump();
            let key = match t.tok {
                Tok::Ident(s) | Tok::Str(s) => s,
                other => {
                    return Err(TextError {
                        line: t.line,
                        col: t.col,
                        msg: format!("expected an attribute name, found {}", other.describe()),
                    })
                }
            };
            if out.iter().any(|(k, _)| *k == key) {
                return Err(TextError {
                    line: t.line,
                    col: t.col,
                    msg: format!("attribute `{key}` given twice"),
                });
            }
            self.expect(':')?;
            let v = self.attr()?;
            out.push((key, v));
        }
        self.bump();
        self.depth -= 1;
        Ok(out)
    }

    fn attr(&mut self) -> R<Attr> {
        Ok(match self.peek().tok {
            Tok::Num(_) | Tok::Ident(_) | Tok::Str(_) => match self.bump().tok {
                Tok::Num(s) => Attr::Num(s),
                Tok::Ident(s) => match s.as_str() {
                    "null" => Attr::Null,
                    "true" => Attr::Bool(true),
                    "false" => Attr::Bool(false),
                    _ => Attr::Str(s),
                },
                Tok::Str(s) => Attr::Str(s),
                _ => Attr::Null,
            },
            Tok::Punct('{') => Attr::Map(self.attr_map()?),
            Tok::Punct('[') => {
                self.enter()?;
                self.bump();
                let mut items = vec![];
                while !self.is_punct(']') {
                    if !items.is_empty() {
                        self.expect(',')?;
                    }
                    items.push(self.attr()?);
                }
                self.bump();
                self.depth -= 1;
                Attr::List(items)
            }
            _ => return Err(self.unexpected("an attribute value")),
        })
    }

    // ------------------------------------------------------------- constants

    /// `const %w: ty = dense<[ty] (hex "..." | [..])>`
    fn constant(&mut self) -> R<()> {
        let v = self.value_tok()?;
        self.expect(':')?;
        let ty = self.tensor_type()?;
        self.expect('=')?;
        self.expect_kw("dense")?;
        self.expect('<')?;
        let (line, col) = self.here();
        let own = if matches!(self.peek().tok, Tok::Ident(ref s) if s != "hex") {
            self.tensor_type()?
        } else {
            ty.clone()
        };
        let dims = own.dims().ok_or_else(|| TextError {
            line,
            col,
            msg: "a constant's shape must be fully known (give `dense<dtype[dims] ...>`)".into(),
        })?;
        let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let (line, col) = self.here();
        let at = |msg: String| TextError { line, col, msg };
        let data = if self.is_ident("hex") {
            self.bump();
            let s = self.string()?;
            let bytes = decode_hex(&s).ok_or_else(|| at("invalid hex data".into()))?;
            let expect = count.and_then(|c| c.checked_mul(own.dtype.size()));
            if expect != Some(bytes.len()) {
                return Err(at(format!(
                    "{} bytes of data for {}",
                    bytes.len(),
                    type_text(&own)
                )));
            }
            Storage::from_le_bytes(own.dtype, &bytes).ok_or_else(|| at("bad data length".into()))?
        } else {
            self.expect('[')?;
            let mut items = vec![];
            self.decimal_list(&mut items)?;
            if count != Some(items.len()) {
                return Err(at(format!(
                    "{} elements of data for {}",
                    items.len(),
                    type_text(&own)
                )));
            }
            decimals_to_storage(own.dtype, &items)?
        };
        self.expect('>')?;
        let id = self.define(v, ty)?;
        self.consts.push((id.index(), Tensor { shape: dims, data }));
        Ok(())
    }

    /// Elements of a (possibly nested, then flattened) list; the `[` is consumed.
    fn decimal_list(&mut self, items: &mut Vec<Token>) -> R<()> {
        self.enter()?;
        let mut first = true;
        while !self.is_punct(']') {
            if !first {
                self.expect(',')?;
            }
            first = false;
            if self.is_punct('[') {
                self.bump();
                self.decimal_list(items)?;
            } else {
                match self.peek().tok {
                    Tok::Num(_) | Tok::Ident(_) => items.push(self.bump()),
                    _ => return Err(self.unexpected("a number")),
                }
            }
        }
        self.bump();
        self.depth -= 1;
        Ok(())
    }
}

fn type_text(ty: &TensorType) -> String {
    let mut s = String::new();
    super::print::write_type(&mut s, ty);
    s
}

fn key_text((name, k): &Key) -> String {
    let mut s = String::from("%");
    super::print::write_name(&mut s, name);
    if *k > 0 {
        s.push_str(&format!("#{k}"));
    }
    s
}

/// Replaces definition indices (params, outputs) and use indices (inputs, results) by final ids.
fn renumber(r: &mut Region, ids: &[u32], uses: &[ValueId]) {
    for p in &mut r.params {
        *p = ValueId(ids[p.index()]);
    }
    for n in &mut r.nodes {
        for i in n.inputs.iter_mut().flatten() {
            *i = uses[i.index()];
        }
        for sub in &mut n.regions {
            renumber(sub, ids, uses);
        }
        for o in &mut n.outputs {
            *o = ValueId(ids[o.index()]);
        }
    }
    for v in &mut r.results {
        *v = uses[v.index()];
    }
}
