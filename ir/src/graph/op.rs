//! kiln's normalised operator set.
//!
//! This is not ONNX verbatim: opset-version differences (attribute vs. input,
//! changed defaults, legacy broadcasting) are resolved by the frontend, and
//! families of ONNX ops share one variant (one elementwise family, one
//! reduction family, one pooling op). Parameters that ONNX allows to arrive as
//! runtime inputs (Reshape's shape, Slice's starts, …) are `Option`s: `Some`
//! once known, `None` while the node still takes them as an extra input. Such
//! a node is specialised (`crate::graph::specialize`) as soon as the input's
//! value is known, at compile time by constant folding or at run time.
//!
//! Every op's meaning is defined once, by its lowering to kernel IR in the
//! compiler; this file only names ops and their parameters.

use crate::dtype::DType;
use crate::shape::Dim;
use serde::{Deserialize, Serialize};

/// One-input elementwise functions. Parametrised activations carry their parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    /// Round half to even, as ONNX `Round`.
    Round,
    Sign,
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
    Sigmoid,
    Relu,
    /// Logical not on bool.
    Not,
    BitwiseNot,
    IsNan,
    IsInf {
        detect_positive: bool,
        detect_negative: bool,
    },
    Softplus,
    Softsign,
    HardSwish,
    Mish,
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Celu {
        alpha: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    ThresholdedRelu {
        alpha: f32,
    },
    /// `tanh: true` is the tanh approximation of GELU.
    Gelu {
        tanh: bool,
    },
    Shrink {
        bias: f32,
        lambd: f32,
    },
}

/// Two-input elementwise functions with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// Result has the sign of the divisor (Python `%`; ONNX `Mod` with fmod=0).
    Mod,
    /// Result has the sign of the dividend (C `fmod`; ONNX `Mod` with fmod=1).
    Fmod,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    BitShiftLeft,
    BitShiftRight,
    /// `x < 0 ? x * slope : x`, with the slope broadcast (ONNX `PRelu`).
    PRelu,
}

impl BinaryOp {
    /// Comparisons and logic ops produce bool.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Equal
                | BinaryOp::Less
                | BinaryOp::LessOrEqual
                | BinaryOp::Greater
                | BinaryOp::GreaterOrEqual
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
    Lp { p: f32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScatterReduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

/// ONNX Resize's `coordinate_transformation_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordTransform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

/// ONNX Resize's `nearest_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// One axis of a Slice, with ONNX's raw (unclamped, possibly negative) values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceAxis {
    pub axis: i64,
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

/// A scalar attribute value with its type (ConstantOfShape's fill value, Pad's constant).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalarValue {
    pub dtype: DType,
    pub value: f64,
}

/// The operators of kiln's graph IR. Input order follows ONNX where an ONNX op
/// exists, so that the frontend maps inputs positionally; optional inputs are
/// `None` entries in the node's input list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    // ---- elementwise family ----
    /// `(x) -> y`
    Unary { op: UnaryOp },
    /// `(a, b) -> y`, numpy broadcasting.
    Binary { op: BinaryOp },
    /// `(cond, a, b) -> y`, ONNX `Where`.
    Select,
    /// `(x) -> y`
    Cast { to: DType },
    /// `(x) -> x`: only where a graph output must alias another value; canonicalisation removes it elsewhere.
    Identity,
    /// `(x [, ratio, training_mode]) -> (y, mask)`: ONNX Dropout while its training flag or
    /// ratio arrives at run time. `active` (training with a non-zero ratio) is known once
    /// specialised; an inactive Dropout is the identity with an all-true mask, and an active
    /// one (a random draw) is refused when lowered.
    Dropout { active: Option<bool> },

    // ---- reductions ----
    /// `(x [, axes]) -> y`. `axes: Some(vec![])` reduces nothing when `noop_with_empty_axes`, else everything.
    Reduce {
        op: ReduceOp,
        axes: Option<Vec<i64>>,
        keep_dims: bool,
        noop_with_empty_axes: bool,
    },
    /// `(x) -> i64 indices`
    ArgReduce {
        max: bool,
        axis: i64,
        keep_dims: bool,
        select_last_index: bool,
    },
    /// `(x [, axis]) -> y`. `prod` makes it ONNX CumProd (a running product).
    CumSum {
        axis: Option<i64>,
        exclusive: bool,
        reverse: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        prod: bool,
    },

    // ---- linear algebra and convolution ----
    /// `(a, b) -> y`, numpy-style batched matrix product.
    MatMul,
    /// `(x, w [, bias]) -> y`. `pads` is `[begin_0.., end_0..]` over spatial axes; auto_pad is resolved by the frontend.
    Conv {
        kernel: Vec<usize>,
        strides: Vec<usize>,
        pads: Vec<usize>,
        dilations: Vec<usize>,
        group: usize,
    },
    /// `(x, w [, bias]) -> y`. `pads` as Conv; `output_padding` extends the end of each spatial axis.
    ConvTranspose {
        kernel: Vec<usize>,
        strides: Vec<usize>,
        pads: Vec<usize>,
        dilations: Vec<usize>,
        group: usize,
        output_padding: Vec<usize>,
    },
    /// `(x) -> y`: MaxPool, AveragePool and LpPool.
    Pool {
        kind: PoolKind,
        kernel: Vec<usize>,
        strides: Vec<usize>,
        pads: Vec<usize>,
        dilations: Vec<usize>,
        ceil_mode: bool,
    },
    /// `(x, scale, bias, mean, var) -> y` (inference form).
    BatchNorm { epsilon: f32 },
    /// `(x, scale, bias) -> y`
    InstanceNorm { epsilon: f32 },
    /// `(x, scale [, bias]) -> y`, normalising over axes `axis..rank`.
    LayerNorm { axis: i64, epsilon: f32 },
    /// `(x, scale, bias) -> y`
    GroupNorm { num_groups: usize, epsilon: f32 },
    /// `(x) -> y`
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    /// `(x) -> y`
    LpNorm { axis: i64, p: u32 },
    /// `(x) -> y`, (x - mean) / std over `axes`.
    MeanVarianceNorm { axes: Vec<i64> },
    /// `(x) -> y`. `log` gives LogSoftmax. Always over one axis (opset < 13 is rewritten by the frontend).
    Softmax { axis: i64, log: bool },
    /// `(x) -> y`
    Hardmax { axis: i64 },
    /// `(inputs..) -> y`
    Einsum { equation: String },

    // ---- data movement ----
    /// `(x [, shape]) -> y`: the output shape, fully resolved (no 0 or -1).
    Reshape { shape: Option<Vec<Dim>> },
    /// `(x, axes) -> y`: only while `axes` arrives at run time; becomes a Reshape once known.
    Squeeze { axes: Option<Vec<i64>> },
    /// `(x, axes) -> y`: only while `axes` arrives at run time; becomes a Reshape once known.
    Unsqueeze { axes: Option<Vec<i64>> },
    /// `(x) -> y`
    Transpose { perm: Vec<usize> },
    /// `(xs..) -> y`
    Concat { axis: i64 },
    /// `(x [, split]) -> ys..`
    Split {
        axis: i64,
        sizes: Option<Vec<usize>>,
    },
    /// `(x [, starts, ends, axes, steps]) -> y`
    Slice { axes: Option<Vec<SliceAxis>> },
    /// `(x, indices) -> y`
    Gather { axis: i64 },
    /// `(x, indices) -> y`
    GatherElements { axis: i64 },
    /// `(x, indices) -> y`
    GatherNd { batch_dims: usize },
    /// `(x, indices, updates) -> y`
    ScatterElements {
        axis: i64,
        reduction: ScatterReduction,
    },
    /// `(x, indices, updates) -> y`
    ScatterNd { reduction: ScatterReduction },
    /// `(x [, pads, value, axes]) -> y`. `pads` is `[begin_0.., end_0..]` over all axes; negative crops.
    Pad {
        mode: PadMode,
        pads: Option<Vec<i64>>,
        value: f64,
    },
    /// `(x [, shape]) -> y`
    Expand { shape: Option<Vec<i64>> },
    /// `(x [, repeats]) -> y`
    Tile { repeats: Option<Vec<usize>> },
    /// `(x) -> y`
    DepthToSpace { block: usize, crd: bool },
    /// `(x) -> y`
    SpaceToDepth { block: usize },
    /// `(x [, k]) -> y`
    Trilu { upper: bool, k: Option<i64> },
    /// `(x, roi, scales, sizes) -> y`: `scales` per axis, resolved from sizes when given.
    Resize {
        mode: ResizeMode,
        coord: CoordTransform,
        nearest: NearestMode,
        cubic_coeff: f32,
        exclude_outside: bool,
        extrapolation_value: f32,
        scales: Option<Vec<f32>>,
        sizes: Option<Vec<usize>>,
    },
    /// `(x, sequence_lens) -> y`
    ReverseSequence { batch_axis: usize, time_axis: usize },
    /// `(x, condition) -> y`
    Compress { axis: Option<i64> },

    // ---- shape and index generation ----
    /// `(x) -> i64[rank]`, dims `start..end`.
    Shape { start: i64, end: Option<i64> },
    /// `(x) -> i64 scalar`
    Size,
    /// `([shape]) -> y`
    ConstantOfShape {
        shape: Option<Vec<usize>>,
        value: ScalarValue,
    },
    /// `(start, limit, delta) -> y`
    Range,
    /// `(x) -> i64[rank, n]`
    NonZero,
    /// `(x [, k]) -> (values, indices)`
    TopK {
        axis: i64,
        largest: bool,
        sorted: bool,
        k: Option<usize>,
    },
    /// `(indices [, depth], values) -> y`
    OneHot { axis: i64, depth: Option<usize> },
    /// `(x) -> y`
    EyeLike { k: i64, dtype: Option<DType> },

    // ---- control flow (regions) ----
    /// `(cond) -> outs..`; regions: then, else. Each region has no params.
    If,
    /// `(max_trip, cond, carried..) -> (carried.., scan_outputs..)`; region: body
    /// `(iter, cond, carried..) -> (cond, carried.., scan_outputs..)`.
    Loop,
    /// `(states.., scan_inputs..) -> (states.., scan_outputs..)`; region: body.
    Scan {
        num_scan_inputs: usize,
        input_directions: Vec<bool>,
        output_directions: Vec<bool>,
        input_axes: Vec<i64>,
        output_axes: Vec<i64>,
    },

    // ---- fusion ----
    /// `(xs..) -> y`; region: body `(params..) -> y`, one param per input. A group of
    /// nodes the compiler runs as one kernel program: a root node and the
    /// elementwise nodes applied to its output. The members keep their own ops,
    /// so the group means exactly what its body means; only where it runs changes.
    Fused,
}

impl Op {
    /// A short name for histograms and error messages (`conv`, `unary.relu`, `reduce.mean`).
    pub fn name(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let base = match &v {
            serde_json::Value::String(s) => return s.clone(),
            serde_json::Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let family = match self {
            Op::Unary { op } => Some(first_key(&serde_json::to_value(op).ok())),
            Op::Binary { op } => Some(first_key(&serde_json::to_value(op).ok())),
            Op::Reduce { op, .. } => Some(first_key(&serde_json::to_value(op).ok())),
            Op::Pool { kind, .. } => Some(first_key(&serde_json::to_value(kind).ok())),
            _ => None,
        };
        match family {
            Some(f) => format!("{base}.{f}"),
            None => base,
        }
    }

    /// Elementwise ops map each output element from the same-index input elements
    /// (after broadcasting): the ops fusion may chain.
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary { .. } | Op::Binary { .. } | Op::Select | Op::Cast { .. } | Op::Identity
        )
    }

    /// Control-flow ops: nested regions run zero or more times, chosen at run time.
    pub fn has_regions(&self) -> bool {
        matches!(self, Op::If | Op::Loop | Op::Scan { .. })
    }
}

fn first_key(v: &Option<serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(m)) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}
