//! `Stmt::Matmul` as C: a `bm x bn` register tile of accumulators over the
//! full tiles, then edge loops for the leftover rows and columns.
//!
//! In the tile each step of `p` loads `bm` values of A and `bn` of B and does
//! `bm*bn` multiply-adds, so loads and loop overhead are amortised over the
//! tile (a 4x4 tile on a Cortex-M4F: 8 loads + 16 VMLA + ~3 overhead per 16
//! MACs). Every element is still summed over `p` in increasing order starting
//! from zero (or from the old C value when accumulating), as the interpreter
//! does, so the results are bit-identical to the plain triple loop. Indices
//! are `ptrdiff_t` (the native word), never 64-bit on a 32-bit core.
//!
//! The same structure will carry int8 kernels: the tile's inner step becomes
//! pairs of int16 lanes fed to a dual multiply-accumulate (`SMLAD`).

use kiln_ir::kernel::Matmul;
use std::fmt::Write;

/// One matrix product ready to render.
pub(crate) struct Gemm<'a> {
    pub m: &'a Matmul,
    /// The C element type.
    pub ty: &'static str,
    /// C expressions for the offsets of A, B and C.
    pub offsets: [String; 3],
    /// A number unique within the kernel, for variable names.
    pub id: usize,
    pub bm: u64,
    pub bn: u64,
    /// Unroll the `p` loop of full tiles by two (halves the pointer updates
    /// and the loop test per multiply-accumulate).
    pub unroll_k: bool,
}

impl Gemm<'_> {
    pub(crate) fn render(&self, ind: usize) -> String {
        let mut o = String::new();
        let m = self.m;
        // A product with fewer rows than the tile (a matrix-vector product, batch
        // 1) spends the tile's spare accumulators on more columns instead.
        let (bm, bn) = if m.m < self.bm {
            (1, (self.bm * self.bn / 2).max(1).min(m.n.max(1)))
        } else {
            (self.bm, self.bn.min(m.n.max(1)))
        };
        let (mt, nt) = (m.m - m.m % bm, m.n - m.n % bn);
        let n = self.id;
        let ty = self.ty;
        let pad = |d: usize| " ".repeat(2 * (ind + d));
        let (ra, ca) = (m.a.row_stride, m.a.col_stride);
        let (rb, cb) = (m.b.row_stride, m.b.col_stride);
        let (rc, cc) = (m.c.row_stride, m.c.col_stride);
        let [oa, ob, oc] = &self.offsets;
        let _ = writeln!(
            o,
            "{}{{ /* C[{}x{}] {}= A[{}x{}] * B, {bm}x{bn} register tile */",
            pad(0),
            m.m,
            m.n,
            if m.accumulate { "+" } else { "" },
            m.m,
            m.k
        );
        let _ = writeln!(
            o,
            "{}const {ty} *const ma{n} = b{} + ({oa});\n{}const {ty} *const mb{n} = b{} + ({ob});\n{}{ty} *const mc{n} = b{} + ({oc});",
            pad(1),
            m.a.buf,
            pad(1),
            m.b.buf,
            pad(1),
            m.c.buf
        );
        let _ = writeln!(o, "{}ptrdiff_t i, j, p;", pad(1));
        let _ = writeln!(o, "{}for (i = 0; i < {mt}; i += {bm}) {{", pad(1));
        // Full tiles.
        let _ = writeln!(o, "{}for (j = 0; j < {nt}; j += {bn}) {{", pad(2));
        self.tile(&mut o, ind + 3, bm, bn);
        let _ = writeln!(o, "{}}}", pad(2));
        if nt < m.n {
            // Leftover columns of these rows: a bm x 1 tile.
            let _ = writeln!(o, "{}for (j = {nt}; j < {}; j++) {{", pad(2), m.n);
            self.tile(&mut o, ind + 3, bm, 1);
            let _ = writeln!(o, "{}}}", pad(2));
        }
        let _ = writeln!(o, "{}}}", pad(1));
        if mt < m.m {
            // Leftover rows: 1 x bn tiles, then 1 x 1.
            let _ = writeln!(o, "{}for (i = {mt}; i < {}; i++) {{", pad(1), m.m);
            let _ = writeln!(o, "{}for (j = 0; j < {nt}; j += {bn}) {{", pad(2));
            self.tile(&mut o, ind + 3, 1, bn);
            let _ = writeln!(o, "{}}}", pad(2));
            if nt < m.n {
                let _ = writeln!(o, "{}for (j = {nt}; j < {}; j++) {{", pad(2), m.n);
                self.tile(&mut o, ind + 3, 1, 1);
                let _ = writeln!(o, "{}}}", pad(2));
            }
            let _ = writeln!(o, "{}}}", pad(1));
        }
        let _ = writeln!(o, "{}}}", pad(0));
        // Strides as named constants keep the tile readable.
        let consts = format!(
            "{}enum {{ ra{n} = {ra}, ca{n} = {ca}, rb{n} = {rb}, cb{n} = {cb}, rc{n} = {rc}, cc{n} = {cc} }};\n",
            pad(1)
        );
        // Insert the constants right after the opening line.
        let first_nl = o.find('\n').map(|i| i + 1).unwrap_or(0);
        o.insert_str(first_nl, &consts);
        o
    }

    /// The `h x w` tile at rows `i..i+h`, columns `j..j+w`.
    fn tile(&self, o: &mut String, ind: usize, h: u64, w: u64) {
        let n = self.id;
        let ty = self.ty;
        let k = self.m.k;
        let pad = |d: usize| " ".repeat(2 * (ind + d));
        let _ = writeln!(
            o,
            "{}const {ty} *pa = ma{n} + i * ra{n};\n{}const {ty} *pb = mb{n} + j * cb{n};\n{}{ty} *pc = mc{n} + i * rc{n} + j * cc{n};",
            pad(0),
            pad(0),
            pad(0)
        );
        for r in 0..h {
            let init: Vec<String> = (0..w)
                .map(|c| {
                    if self.m.accumulate {
                        format!("acc{r}{c} = pc[{}]", cidx(r, c, n))
                    } else {
                        format!("acc{r}{c} = 0")
                    }
                })
                .collect();
            let _ = writeln!(o, "{}{ty} {};", pad(0), init.join(", "));
        }
        if self.unroll_k && h * w > 1 && k > 1 {
            let _ = writeln!(o, "{}KILN_UNROLL(2)", pad(0));
        }
        let _ = writeln!(o, "{}for (p = 0; p < {k}; p++) {{", pad(0));
        let av: Vec<String> = (0..h)
            .map(|r| format!("x{r} = pa[{}]", mul(r, &format!("ra{n}"))))
            .collect();
        let bv: Vec<String> = (0..w)
            .map(|c| format!("y{c} = pb[{}]", mul(c, &format!("cb{n}"))))
            .collect();
        let _ = writeln!(o, "{}const {ty} {};", pad(1), av.join(", "));
        let _ = writeln!(o, "{}const {ty} {};", pad(1), bv.join(", "));
        for r in 0..h {
            let line: Vec<String> = (0..w)
                .map(|c| format!("acc{r}{c} += x{r} * y{c};"))
                .collect();
            let _ = writeln!(o, "{}{}", pad(1), line.join(" "));
        }
        let _ = writeln!(o, "{}pa += ca{n};\n{}pb += rb{n};", pad(1), pad(1));
        let _ = writeln!(o, "{}}}", pad(0));
        for r in 0..h {
            let line: Vec<String> = (0..w)
                .map(|c| format!("pc[{}] = acc{r}{c};", cidx(r, c, n)))
                .collect();
            let _ = writeln!(o, "{}{}", pad(0), line.join(" "));
        }
    }
}

/// `r * name`, folded for 0 and 1.
fn mul(r: u64, name: &str) -> String {
    match r {
        0 => "0".into(),
        1 => name.into(),
        _ => format!("{r} * {name}"),
    }
}

/// The offset of tile element `(r, c)` from `pc`.
fn cidx(r: u64, c: u64, n: usize) -> String {
    match (r, c) {
        (0, 0) => "0".into(),
        (_, 0) => mul(r, &format!("rc{n}")),
        (0, _) => mul(c, &format!("cc{n}")),
        _ => format!(
            "{} + {}",
            mul(r, &format!("rc{n}")),
            mul(c, &format!("cc{n}"))
        ),
    }
}
