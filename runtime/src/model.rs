//! The safe Rust face of a generated model: a static description of its
//! inputs, outputs and arena ([`ModelInfo`]), the [`Model`] trait the
//! generated bindings implement around the raw `NAME_run`, and [`run`], which
//! checks every buffer against the description before the call. Nothing here
//! allocates; [`OwnedArena`] and [`Session`] (feature `std`) do.

use core::ffi::{c_int, c_void};
use core::fmt;
use core::marker::PhantomData;

/// Alignment, in bytes, the generated code requires of the arena.
pub const ARENA_ALIGN: usize = 64;

/// Element types, numbered as ONNX's `TensorProto.DataType` (the header's
/// `KILN_DTYPE_*` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DType {
    F32 = 1,
    U8 = 2,
    I8 = 3,
    U16 = 4,
    I16 = 5,
    I32 = 6,
    I64 = 7,
    Bool = 9,
    F16 = 10,
    F64 = 11,
    U32 = 12,
    U64 = 13,
    BF16 = 16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// The dtype of a `KILN_DTYPE_*` code, if kiln knows it.
    pub const fn from_code(code: u32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            4 => DType::U16,
            5 => DType::I16,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            12 => DType::U32,
            13 => DType::U64,
            16 => DType::BF16,
            _ => return None,
        })
    }

    /// Lower-case name, as kiln's tools print it (`f32`, `i64`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::BF16 => "bf16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One input or output of a compiled model (dense, row-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: &'static str,
    pub dtype: DType,
    pub dims: &'static [usize],
    /// Bytes of the caller's buffer: elements × dtype size.
    pub size: usize,
}

impl TensorInfo {
    /// Number of elements (1 for a scalar).
    pub const fn elems(&self) -> usize {
        let mut n = 1;
        let mut i = 0;
        while i < self.dims.len() {
            n *= self.dims[i];
            i += 1;
        }
        n
    }
}

/// Everything a caller must know to run a compiled model, fixed at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// The C identifier prefix (`NAME` of `NAME_run`).
    pub name: &'static str,
    pub inputs: &'static [TensorInfo],
    pub outputs: &'static [TensorInfo],
    /// Bytes of scratch memory `NAME_run` needs, aligned to [`ARENA_ALIGN`].
    pub arena_size: usize,
}

/// The generated `NAME_run`: `inputs[i]`/`outputs[i]` point at dense buffers of
/// the described sizes, `arena` at `arena_size` bytes aligned to 64; 0 = success.
pub type RawRunFn =
    unsafe extern "C" fn(*const *const c_void, *const *mut c_void, *mut c_void) -> c_int;

/// A compiled model, implemented by the bindings `kiln-build` generates.
///
/// # Safety
/// [`Model::INFO`] must describe exactly the buffers [`Model::RAW_RUN`]
/// reads and writes: [`run`] trusts it to keep every access in bounds.
pub unsafe trait Model {
    const INFO: &'static ModelInfo;
    const RAW_RUN: RawRunFn;
}

/// Element types a typed slice may have; `DTYPE` is what the model must expect.
///
/// # Safety
/// `DTYPE.size()` must equal `size_of::<Self>()`, and every bit pattern the
/// model can write must be a valid `Self`.
pub unsafe trait Element: Copy {
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => {$(
        // SAFETY: plain integers and floats: right size, every bit pattern valid.
        unsafe impl Element for $t { const DTYPE: DType = DType::$d; }
    )*};
}
element!(f32 => F32, f64 => F64, i8 => I8, u8 => U8, i16 => I16, u16 => U16,
         i32 => I32, u32 => U32, i64 => I64, u64 => U64);

/// A borrowed input buffer with its element type.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    ptr: *const c_void,
    bytes: usize,
    dtype: DType,
    _borrow: PhantomData<&'a [u8]>,
}

impl<'a> Input<'a> {
    /// A slice declared as `dtype` rather than `T`'s own: `u8` for `bool`,
    /// `u16` for `f16` and `bf16` tensors. [`run`] still checks the byte length.
    pub fn with_dtype<T: Element>(dtype: DType, s: &'a [T]) -> Self {
        Input {
            ptr: s.as_ptr().cast(),
            bytes: core::mem::size_of_val(s),
            dtype,
            _borrow: PhantomData,
        }
    }

    /// Raw bytes declared as `dtype`.
    pub fn from_bytes(dtype: DType, bytes: &'a [u8]) -> Self {
        Self::with_dtype(dtype, bytes)
    }
}

impl<'a, T: Element> From<&'a [T]> for Input<'a> {
    fn from(s: &'a [T]) -> Self {
        Input {
            ptr: s.as_ptr().cast(),
            bytes: core::mem::size_of_val(s),
            dtype: T::DTYPE,
            _borrow: PhantomData,
        }
    }
}

/// A borrowed output buffer with its element type.
#[derive(Debug)]
pub struct Output<'a> {
    ptr: *mut c_void,
    bytes: usize,
    dtype: DType,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl<'a> Output<'a> {
    /// A slice declared as `dtype` rather than `T`'s own (see
    /// [`Input::with_dtype`]); any bits the model writes are a valid `T`.
    pub fn with_dtype<T: Element>(dtype: DType, s: &'a mut [T]) -> Self {
        Output {
            ptr: s.as_mut_ptr().cast(),
            bytes: core::mem::size_of_val(s),
            dtype,
            _borrow: PhantomData,
        }
    }

    /// Raw bytes declared as `dtype`.
    pub fn from_bytes(dtype: DType, bytes: &'a mut [u8]) -> Self {
        Self::with_dtype(dtype, bytes)
    }
}

impl<'a, T: Element> From<&'a mut [T]> for Output<'a> {
    fn from(s: &'a mut [T]) -> Self {
        Output {
            ptr: s.as_mut_ptr().cast(),
            bytes: core::mem::size_of_val(s),
            dtype: T::DTYPE,
            _borrow: PhantomData,
        }
    }
}

/// Why [`run`] refused or failed. Tensor errors carry the index and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunError {
    /// Wrong number of input (`output: false`) or output buffers.
    Count {
        output: bool,
        expected: usize,
        got: usize,
    },
    /// A buffer of the wrong element type.
    DType {
        output: bool,
        index: usize,
        name: &'static str,
        expected: DType,
        got: DType,
    },
    /// A buffer of the wrong length, in bytes.
    Size {
        output: bool,
        index: usize,
        name: &'static str,
        expected: usize,
        got: usize,
    },
    /// The arena is smaller than the model needs.
    ArenaTooSmall { needed: usize, got: usize },
    /// The arena does not start on a [`ARENA_ALIGN`]-byte boundary.
    ArenaMisaligned { align: usize },
    /// More inputs or outputs than [`run`] passes without allocating.
    TooManyTensors { max: usize },
    /// The generated code returned this non-zero status.
    Status(i32),
}

fn kind(output: bool) -> &'static str {
    if output {
        "output"
    } else {
        "input"
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RunError::Count {
                output,
                expected,
                got,
            } => write!(f, "expected {expected} {}s, got {got}", kind(output)),
            RunError::DType {
                output,
                index,
                name,
                expected,
                got,
            } => write!(
                f,
                "{} {index} '{name}': expected {expected} elements, got {got}",
                kind(output)
            ),
            RunError::Size {
                output,
                index,
                name,
                expected,
                got,
            } => write!(
                f,
                "{} {index} '{name}': expected {expected} bytes, got {got}",
                kind(output)
            ),
            RunError::ArenaTooSmall { needed, got } => {
                write!(f, "arena too small: needs {needed} bytes, got {got}")
            }
            RunError::ArenaMisaligned { align } => {
                write!(f, "arena not aligned to {align} bytes")
            }
            RunError::TooManyTensors { max } => {
                write!(f, "more than {max} inputs or outputs")
            }
            RunError::Status(s) => write!(f, "generated code returned status {s}"),
        }
    }
}

impl core::error::Error for RunError {}

/// `N` bytes aligned for the generated code; `Arena<{ NAME_ARENA_SIZE }>` can
/// live in a `static` on firmware. Derefs to `[u8]`.
#[repr(C, align(64))]
pub struct Arena<const N: usize>(pub [u8; N]);

impl<const N: usize> Arena<N> {
    pub const fn new() -> Self {
        Arena([0; N])
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::ops::Deref for Arena<N> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> core::ops::DerefMut for Arena<N> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// Checks one side's buffers against the description.
fn check(
    output: bool,
    want: &[TensorInfo],
    got: impl ExactSizeIterator<Item = (DType, usize)>,
) -> Result<(), RunError> {
    if want.len() != got.len() {
        return Err(RunError::Count {
            output,
            expected: want.len(),
            got: got.len(),
        });
    }
    for (index, (t, (dtype, bytes))) in want.iter().zip(got).enumerate() {
        if t.dtype != dtype {
            return Err(RunError::DType {
                output,
                index,
                name: t.name,
                expected: t.dtype,
                got: dtype,
            });
        }
        if t.size != bytes {
            return Err(RunError::Size {
                output,
                index,
                name: t.name,
                expected: t.size,
                got: bytes,
            });
        }
    }
    Ok(())
}

/// The most inputs or outputs [`run`] passes without allocating; larger
/// models are rejected with [`RunError::TooManyTensors`] rather than risking the stack.
const MAX_IO: usize = 64;

/// Runs `M` on `inputs`, writing `outputs`, with `arena` as scratch memory.
///
/// Every buffer is checked against [`Model::INFO`] first (count, element type,
/// exact byte length; the arena for size and 64-byte alignment), so no
/// mistake of the caller reaches the generated code.
pub fn run<M: Model>(
    inputs: &[Input<'_>],
    outputs: &mut [Output<'_>],
    arena: &mut [u8],
) -> Result<(), RunError> {
    let info = M::INFO;
    check(
        false,
        info.inputs,
        inputs.iter().map(|b| (b.dtype, b.bytes)),
    )?;
    check(
        true,
        info.outputs,
        outputs.iter().map(|b| (b.dtype, b.bytes)),
    )?;
    if inputs.len().max(outputs.len()) > MAX_IO {
        return Err(RunError::TooManyTensors { max: MAX_IO });
    }
    let needed = info.arena_size.max(1);
    if arena.len() < needed {
        return Err(RunError::ArenaTooSmall {
            needed,
            got: arena.len(),
        });
    }
    if !(arena.as_ptr() as usize).is_multiple_of(ARENA_ALIGN) {
        return Err(RunError::ArenaMisaligned { align: ARENA_ALIGN });
    }
    let mut ins = [core::ptr::null::<c_void>(); MAX_IO];
    for (p, b) in ins.iter_mut().zip(inputs) {
        *p = b.ptr;
    }
    let mut outs = [core::ptr::null_mut::<c_void>(); MAX_IO];
    for (p, b) in outs.iter_mut().zip(outputs.iter()) {
        *p = b.ptr;
    }
    // SAFETY: every buffer matches INFO in count, dtype and byte length, the
    // arena is large and aligned enough, and the borrows keep them alive and
    // unaliased (outputs are `&mut`) for the call; `Model`'s contract says
    // INFO bounds every access of RAW_RUN.
    let status = unsafe { (M::RAW_RUN)(ins.as_ptr(), outs.as_ptr(), arena.as_mut_ptr().cast()) };
    if status == 0 {
        Ok(())
    } else {
        Err(RunError::Status(status))
    }
}

#[cfg(feature = "std")]
pub use owned::{OwnedArena, Session};

#[cfg(feature = "std")]
mod owned {
    use super::{run, Input, Model, Output, RunError, ARENA_ALIGN};
    use std::vec::Vec;

    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u8; ARENA_ALIGN]);

    /// A heap arena of at least `len` bytes, aligned to [`ARENA_ALIGN`].
    pub struct OwnedArena {
        lines: Vec<Line>,
        len: usize,
    }

    impl OwnedArena {
        pub fn new(len: usize) -> Self {
            OwnedArena {
                lines: std::vec![Line([0; ARENA_ALIGN]); len.div_ceil(ARENA_ALIGN)],
                len,
            }
        }

        pub fn as_mut_slice(&mut self) -> &mut [u8] {
            let len = self.len;
            let ptr = self.lines.as_mut_ptr().cast::<u8>();
            // SAFETY: `lines` holds `len.div_ceil(64) * 64 >= len` initialised
            // bytes, borrowed mutably through `self`.
            unsafe { core::slice::from_raw_parts_mut(ptr, len) }
        }
    }

    /// A model with its own arena: one per thread that runs it.
    pub struct Session<M: Model> {
        arena: OwnedArena,
        _model: core::marker::PhantomData<M>,
    }

    impl<M: Model> Default for Session<M> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<M: Model> Session<M> {
        pub fn new() -> Self {
            Session {
                arena: OwnedArena::new(M::INFO.arena_size.max(1)),
                _model: core::marker::PhantomData,
            }
        }

        /// [`run`] with this session's arena.
        pub fn run(
            &mut self,
            inputs: &[Input<'_>],
            outputs: &mut [Output<'_>],
        ) -> Result<(), RunError> {
            run::<M>(inputs, outputs, self.arena.as_mut_slice())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for generated code: output 0 = input 0 * 2 + input 1, using
    /// the arena as scratch, and a status of 7 when the first input is NaN.
    unsafe extern "C" fn fake_run(
        ins: *const *const c_void,
        outs: *const *mut c_void,
        arena: *mut c_void,
    ) -> c_int {
        let a = core::slice::from_raw_parts(*ins as *const f32, 3);
        let b = core::slice::from_raw_parts(*ins.add(1) as *const i32, 3);
        let s = core::slice::from_raw_parts_mut(arena as *mut f32, 3);
        let o = core::slice::from_raw_parts_mut(*outs as *mut f32, 3);
        if a[0].is_nan() {
            return 7;
        }
        for i in 0..3 {
            s[i] = a[i] * 2.0;
            o[i] = s[i] + b[i] as f32;
        }
        0
    }

    struct Fake;
    static FAKE: ModelInfo = ModelInfo {
        name: "fake",
        inputs: &[
            TensorInfo {
                name: "a",
                dtype: DType::F32,
                dims: &[3],
                size: 12,
            },
            TensorInfo {
                name: "b",
                dtype: DType::I32,
                dims: &[1, 3],
                size: 12,
            },
        ],
        outputs: &[TensorInfo {
            name: "y",
            dtype: DType::F32,
            dims: &[3],
            size: 12,
        }],
        arena_size: 12,
    };
    unsafe impl Model for Fake {
        const INFO: &'static ModelInfo = &FAKE;
        const RAW_RUN: RawRunFn = fake_run;
    }

    #[test]
    fn checks_then_runs() {
        let a = [1.0f32, 2.0, 3.0];
        let b = [10i32, 20, 30];
        let mut y = [0f32; 3];
        let mut arena = Arena::<64>::new();
        run::<Fake>(
            &[a[..].into(), b[..].into()],
            &mut [(&mut y[..]).into()],
            &mut arena,
        )
        .unwrap();
        assert_eq!(y, [12.0, 24.0, 36.0]);
        assert_eq!(FAKE.inputs[1].elems(), 3);
    }

    #[test]
    fn rejects_bad_buffers() {
        let a = [1.0f32, 2.0, 3.0];
        let b = [10i32, 20, 30];
        let bf = [1.0f32; 3];
        let mut y = [0f32; 3];
        let mut arena = Arena::<128>::new();
        let e = run::<Fake>(&[a[..].into()], &mut [(&mut y[..]).into()], &mut arena);
        assert!(matches!(
            e,
            Err(RunError::Count {
                output: false,
                expected: 2,
                got: 1
            })
        ));
        let e = run::<Fake>(
            &[a[..].into(), bf[..].into()],
            &mut [(&mut y[..]).into()],
            &mut arena,
        );
        assert!(matches!(
            e,
            Err(RunError::DType {
                index: 1,
                name: "b",
                ..
            })
        ));
        let e = run::<Fake>(
            &[a[..2].into(), b[..].into()],
            &mut [(&mut y[..]).into()],
            &mut arena,
        );
        assert!(matches!(
            e,
            Err(RunError::Size {
                expected: 12,
                got: 8,
                ..
            })
        ));
        let e = run::<Fake>(&[a[..].into(), b[..].into()], &mut [], &mut arena);
        assert!(matches!(e, Err(RunError::Count { output: true, .. })));
        let e = run::<Fake>(
            &[a[..].into(), b[..].into()],
            &mut [(&mut y[..]).into()],
            &mut arena[..8],
        );
        assert_eq!(e, Err(RunError::ArenaTooSmall { needed: 12, got: 8 }));
        let e = run::<Fake>(
            &[a[..].into(), b[..].into()],
            &mut [(&mut y[..]).into()],
            &mut arena[1..],
        );
        assert_eq!(e, Err(RunError::ArenaMisaligned { align: 64 }));
        let nan = [f32::NAN; 3];
        let e = run::<Fake>(
            &[nan[..].into(), b[..].into()],
            &mut [(&mut y[..]).into()],
            &mut arena,
        );
        assert_eq!(e, Err(RunError::Status(7)));
        assert_eq!(y, [0.0; 3], "nothing ran on refused calls");
    }

    #[cfg(feature = "std")]
    #[test]
    fn session_owns_an_aligned_arena() {
        let mut s = Session::<Fake>::new();
        let (a, b, mut y) = ([0.5f32; 3], [1i32; 3], [0f32; 3]);
        s.run(&[a[..].into(), b[..].into()], &mut [(&mut y[..]).into()])
            .unwrap();
        assert_eq!(y, [2.0; 3]);
        let mut o = OwnedArena::new(100);
        assert_eq!(o.as_mut_slice().len(), 100);
        assert_eq!(o.as_mut_slice().as_ptr() as usize % 64, 0);
    }
}
