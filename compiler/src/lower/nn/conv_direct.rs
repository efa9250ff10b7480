//! Whether an im2col convolution carries a direct-conv library call (the
//! runtime's `kiln_conv2d_f32_avx512`), and the call itself. The body the
//! lowering builds stays the definition; a backend that can honour the
//! call replaces the body with it.

use super::super::window::{Source, Window};
use kiln_ir::kernel::call::{Conv2d, LibraryCall};
use kiln_ir::kernel::BufId;

/// The direct-conv call of an im2col conv, where one pays: 2-D, f32, one
/// group, the GEMM not transposed, and a shape [`direct_pays`] accepts. The
/// call reads the padded copy the im2col reads, phase-split or not.
#[allow(clippy::too_many_arguments)]
pub(super) fn direct_call(
    src: &Source,
    phases: usize,
    one_block: bool,
    (g, oc, cg, kk): (usize, usize, usize, usize),
    dt: kiln_ir::DType,
    (w, bias, y): (BufId, Option<BufId>, BufId),
    win: &Window,
    osp: &[usize],
) -> Option<LibraryCall> {
    let phased_ok = phases == 1 || phases == win.strides[1];
    if src.dims.len() != 4
        || osp.len() != 2
        || !direct_pays(g, oc, cg * kk, win.strides[1] == 1 || phases > 1, osp[1])
        || !phased_ok
        || one_block
        || dt != kiln_ir::DType::F32
    {
        return None;
    }
    let u = |v: usize| v as u64;
    Some(LibraryCall::Conv2d(Conv2d {
        x: src.buf,
        w,
        bias,
        y,
        batch: u(src.dims[0]),
        cin: u(src.dims[1]),
        cout: u(oc),
        in_h: u(src.dims[2]),
        in_w: u(src.dims[3]),
        out_h: u(osp[0]),
        out_w: u(osp[1]),
        k_h: u(win.kernel[0]),
        k_w: u(win.kernel[1]),
        stride_h: u(win.strides[0]),
        stride_w: u(win.strides[1]),
        dil_h: u(win.dilations[0]),
        dil_w: u(win.dilations[1]),
        phases: u(phases),
        act: (f32::NEG_INFINITY, f32::INFINITY),
        func: None,
    }))
}

/// Whether the direct-conv routine beats the im2col GEMM on a conv of `g`
/// groups, `oc` output channels, `depth` (`cin·kh·kw`), output rows of
/// `ow` pixels and taps that each read `contiguous` pixels. From a depth
/// of 64 its tiles hold 32 channels in the lanes, so the channel blocks
/// must be nearly full. Below that it runs with pixels in the lanes, so
/// the taps must read contiguous pixels and the rows must fill 3/4 of the
/// 16-lane vectors they take; what it saves there is the column matrix,
/// as large as the GEMM's work at such depths (SqueezeNet 1.1's 3x3 RGB
/// stem, one thread: 0.80 -> 0.66 ms in the model, MobileNetV2's 0.40 ->
/// 0.35). With channels in the lanes such stems had lost (MobileNetV2's
/// 416 -> 472 us), and KWS's 10x4 stem over 5-pixel rows still would (9.9
/// -> 15.5 us), which the row fill keeps out.
fn direct_pays(g: usize, oc: usize, depth: usize, contiguous: bool, ow: usize) -> bool {
    if g != 1 {
        return false;
    }
    if depth >= DIRECT_MIN_DEPTH {
        let blocks = oc.div_ceil(DIRECT_CHANNEL_BLOCK) * DIRECT_CHANNEL_BLOCK;
        return blocks * 7 <= oc * 8;
    }
    contiguous && ow.div_ceil(16) * 16 * 3 <= ow * 4
}

/// Output channels per block of the direct-conv routine's tiles.
const DIRECT_CHANNEL_BLOCK: usize = 32;
/// The depth (`cin·kh·kw`) from which the direct-conv routine holds
/// channels in the lanes (`ROWS_MAX_DEPTH` in the runtime).
const DIRECT_MIN_DEPTH: usize = 64;
