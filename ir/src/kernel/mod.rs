//! Kernel IR: what every graph op lowers to, and what renderers translate.
//!
//! A [`KernelProgram`] is a list of buffers (the op's inputs, outputs and
//! scratch) and kernels. A kernel is a nest of counted loops whose bodies
//! store scalar expressions into buffers at computed element indices. Loads
//! and stores index buffers by element (row-major offsets computed by the
//! lowering), so layouts are decided at lowering time, never at run time.
//!
//! Two constructs keep it both expressive and fast to run:
//! - [`Expr::Reduce`]: a reduction over a counted loop as an expression, so a
//!   lowering never needs read-modify-write accumulation, and the innermost loop
//!   of a nest stays free of loop-carried dependences (the interpreter runs it
//!   as a vector; a renderer can unroll or vectorise it).
//! - [`Stmt::Matmul`]: the GEMM building block, `C = A·B (+C)` over strided
//!   2-D views. Conv, MatMul and Gemm lower onto it; the CPU backend maps it
//!   to packed micro-kernels.
//!
//! Types: every expression has a [`DType`]. Loop variables and indices are
//! i64. Binary operands have equal types (the lowering inserts casts).

pub mod analysis;
pub mod build;
pub mod call;
pub mod interp;
pub mod print;
pub mod rewrite;
pub mod verify;

use crate::dtype::DType;
use serde::{Deserialize, Serialize};

/// Index of a buffer in [`KernelProgram::buffers`].
pub type BufId = u32;
/// A loop variable or a `let`-bound scalar. Unique within a kernel.
pub type VarId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferRole {
    /// The op's input `i`: read-only.
    Input(usize),
    /// The op's output `i`.
    Output(usize),
    /// Scratch memory private to the program, uninitialised.
    Scratch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BufferDecl {
    pub name: String,
    pub dtype: DType,
    /// Length in elements.
    pub len: usize,
    pub role: BufferRole,
    /// The lowering's promise that the program writes every element of an
    /// output, and every element of a scratch buffer that it reads, before
    /// reading it: the buffer's initial contents never matter, so renderers
    /// skip zero-filling it (megabytes per run for conv outputs and im2col
    /// blocks). The interpreter fills such buffers with a poison value (NaN
    /// for floats) instead of zeros, so a false promise shows up in every
    /// test that runs the lowering.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub written_first: bool,
}

/// The lowering of one graph node (or of a fused group of nodes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelProgram {
    pub buffers: Vec<BufferDecl>,
    pub kernels: Vec<Kernel>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    pub name: String,
    pub body: Vec<Stmt>,
    /// A library routine computing exactly what `body` computes, which a
    /// renderer may call instead (see [`call`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<call::LibraryCall>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stmt {
    /// `for var in 0..extent { body }`
    For {
        var: VarId,
        extent: u64,
        body: Vec<Stmt>,
    },
    /// Binds a scalar for the rest of the enclosing block.
    Let {
        var: VarId,
        value: Expr,
    },
    /// `buf[index] = value` (value converted to the buffer's dtype).
    Store {
        buf: BufId,
        index: Expr,
        value: Expr,
    },
    If {
        cond: Expr,
        then_body: Vec<Stmt>,
        else_body: Vec<Stmt>,
    },
    Matmul(Matmul),
    /// `while cond { body }`: the one loop whose trip count is decided at run
    /// time (a compiled ONNX Loop). `cond` is a scalar bool re-evaluated before
    /// each iteration; the body communicates through buffers. Never vectorised.
    While {
        cond: Expr,
        body: Vec<Stmt>,
    },
}

/// `C[i, j] = sum_p A[i, p] * B[p, j]` (plus the old `C[i, j]` when `accumulate`),
/// for `i < m, j < n, p < k`, over strided views. All three views have the same dtype.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Matmul {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub a: MatView,
    pub b: MatView,
    pub c: MatView,
    pub accumulate: bool,
}

/// A strided 2-D view into a buffer: element `(i, j)` is at `offset + i*row_stride + j*col_stride`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatView {
    pub buf: BufId,
    /// May depend on enclosing loop variables.
    pub offset: Expr,
    pub row_stride: i64,
    pub col_stride: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Tanh,
    Erf,
    Floor,
    Ceil,
    /// Half to even.
    Round,
    /// Logical not (bool) or bitwise not (integers).
    Not,
    IsNan,
    IsInf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Integer division truncates toward zero.
    Div,
    /// Remainder with the sign of the dividend (C `%`, `fmod`).
    Rem,
    Pow,
    Max,
    Min,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Logical on bool, bitwise on integers.
    And,
    Or,
    Xor,
    Shl,
    /// Logical shift for unsigned types, arithmetic for signed.
    Shr,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedOp {
    Sum,
    Prod,
    Max,
    Min,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// A float constant of the given float dtype.
    F(f64, DType),
    /// An integer constant of the given integer dtype.
    I(i64, DType),
    B(bool),
    /// A loop variable (i64) or let-bound scalar.
    Var(VarId),
    Load {
        buf: BufId,
        index: Box<Expr>,
    },
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `cond ? a : b`
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    Cast(DType, Box<Expr>),
    /// Folds `body` over `var in 0..extent` with `op`, starting from the op's
    /// identity (for Max/Min: the first element; an empty Max/Min is the
    /// dtype's lowest/highest value).
    Reduce {
        op: RedOp,
        var: VarId,
        extent: u64,
        body: Box<Expr>,
    },
}
