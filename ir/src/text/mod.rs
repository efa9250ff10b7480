//! kiln's text form of a model (`.kiln`): readable, diffable and writable by hand.
//!
//! ```text
//! kiln 1
//! model "mnist_mlp"
//! const %fc1.weight: f32[784,128] = dense<hex "0a0b...">   // little-endian bytes
//! const %shape: i64[2] = dense<[-1, 784]>                  // small or hand-written data
//! func(%input: f32[N,1,28,28], %cond: bool[]) {
//!   %flat = reshape(%input) {shape: [N, 784]} : f32[N,784]
//!   %h = mat_mul(%flat, %fc1.weight) : f32[N,128] @"/fc1/MatMul"
//!   %y = unary(%h) {op: relu} : f32[N,128]
//!   %a, %b = split(%y) {axis: 1, sizes: [64, 64]} : f32[N,64], f32[N,64]
//!   %c = if(%cond) : f32[N,64] {
//!     then { return %a }
//!     else { %z = unary(%b) {op: {leaky_relu: {alpha: 0.01}}} : f32[N,64]
//!            return %z }
//!   }
//!   return %c
//! }
//! ```
//!
//! - **Ops and attributes** are derived from the serde form of [`Op`]: a unit
//!   variant is its bare name, a struct variant prints its fields as
//!   `{field: value}`, so a new op needs no change here. Attribute values are
//!   JSON-like: numbers, `true`/`false`, lists, maps, and strings, which print bare
//!   when they are identifiers (enum variants such as `relu`, dtypes, symbolic
//!   dims). `None` fields are left out; a missing optional field reads as `None`.
//!   Floats print in their shortest exact form and `inf`, `-inf`, `nan` are allowed.
//! - **Values** are `%name` when the name is made of `[A-Za-z0-9_.:/-]` (and does not end
//!   in `:`), else `%"quoted \"name\""`. Names need not be unique in a model: later
//!   holders of a name print as `%name#1`, `%name#2`. A definition may come after
//!   its uses. A value no node, param or const defines is declared with
//!   `value %v: f32[3]`.
//! - **Nodes** are `outputs = op(inputs) {attrs} : output types @node_name { regions }`.
//!   An absent optional input is `_`. The `@name` is left out when the node is named
//!   like its first output. Regions carry a label for the reader (`then`, `else`,
//!   `body`), optional params `body(%i: i64[], %c: bool[])`, and end with `return`.
//! - **Types** are `dtype[d0,d1,..]`; a dim is a number, an identifier (a symbol) or
//!   a quoted string (a symbol that is not an identifier, such as `"?"`).
//! - **Constants** hold little-endian bytes as `hex "..."`, or a decimal list
//!   (possibly nested, read flattened) for small tensors. `dense<i64[3] ...>` gives the
//!   tensor its own type when it differs from the value's declared type.
//! - **Value ids** are the order of definition: `value` declarations, consts,
//!   the func's params, then through the nodes, a node's regions before its outputs
//!   (the order a builder creates them in). When a model's arena is in another
//!   order, the printer ends with `order 0..4, 9, 4..9`, the arena id of each
//!   definition in text order, so that `parse(print(m)) == m` exactly.
//! - `//` starts a comment.

mod attr;
mod dense;
mod lexer;
mod parse;
mod print;
#[cfg(test)]
mod tests;

use crate::graph::{Model, Op};

/// A syntax or consistency error, at a 1-based line and column.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{line}:{col}: {msg}")]
pub struct TextError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// The text form of `model`. `parse(&print(m)) == Ok(m)` for every model whose
/// value ids are in range and each defined once.
pub fn print(model: &Model) -> String {
    print::print_model(model)
}

/// Reads a model in the text form.
pub fn parse(src: &str) -> Result<Model, TextError> {
    parse::parse_model(src)
}

/// One op with its attributes, `name {attrs}` as in a node but without inputs.
pub fn print_op(op: &Op) -> String {
    print::print_op(op)
}

/// Reads an op written by [`print_op`].
pub fn parse_op(src: &str) -> Result<Op, TextError> {
    parse::parse_op(src)
}
