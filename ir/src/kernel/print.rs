//! A readable text form of kernel IR, for `kiln inspect --kernels` and for
//! reading lowerings while writing them.

use super::*;
use std::fmt::{self, Write};

impl fmt::Display for KernelProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.buffers.iter().enumerate() {
            let role = match b.role {
                BufferRole::Input(n) => format!("input {n}"),
                BufferRole::Output(n) => format!("output {n}"),
                BufferRole::Scratch => "scratch".into(),
            };
            let first = if b.written_first {
                " written-first"
            } else {
                ""
            };
            writeln!(
                f,
                "buf b{i}: {}[{}] {role}{first}  // {}",
                b.dtype, b.len, b.name
            )?;
        }
        for k in &self.kernels {
            if let Some(super::call::LibraryCall::ExpRows(e)) = &k.call {
                writeln!(
                    f,
                    "// same as exp_rows(x=b{}, m=b{}, y=b{}, {} rows of {})",
                    e.x, e.m, e.y, e.rows, e.len
                )?;
            }
            if let Some(super::call::LibraryCall::Depthwise2d(d)) = &k.call {
                writeln!(
                    f,
                    "// same as depthwise2d(x=b{}, w=b{}, bias={}, y=b{}, {}x{}x{}x{} -> {}x{}, \
                     kernel {}x{}, stride {}x{}, pads {},{}, dilation {}x{}, clamp [{}, {}])",
                    d.x,
                    d.w,
                    d.bias.map_or("none".into(), |b| format!("b{b}")),
                    d.y,
                    d.batch,
                    d.channels,
                    d.in_h,
                    d.in_w,
                    d.out_h,
                    d.out_w,
                    d.k_h,
                    d.k_w,
                    d.stride_h,
                    d.stride_w,
                    d.pad_top,
                    d.pad_left,
                    d.dil_h,
                    d.dil_w,
                    d.act.0,
                    d.act.1
                )?;
                if let Some(func) = d.func {
                    writeln!(f, "//   applying {func:?} before the clamp")?;
                }
            }
            if let Some(super::call::LibraryCall::Conv2d(c)) = &k.call {
                writeln!(
                    f,
                    "// same as conv2d(x=b{}, w=b{}, bias={}, y=b{}, {}x{}x{}x{} -> {}x{}x{}, \
                     kernel {}x{}, stride {}x{}, dilation {}x{}, {} phases, clamp [{}, {}])",
                    c.x,
                    c.w,
                    c.bias.map_or("none".into(), |b| format!("b{b}")),
                    c.y,
                    c.batch,
                    c.cin,
                    c.in_h,
                    c.in_w,
                    c.cout,
                    c.out_h,
                    c.out_w,
                    c.k_h,
                    c.k_w,
                    c.stride_h,
                    c.stride_w,
                    c.dil_h,
                    c.dil_w,
                    c.phases,
                    c.act.0,
                    c.act.1
                )?;
                if let Some(func) = c.func {
                    writeln!(f, "//   applying {func:?} before the clamp")?;
                }
            }
            if let Some(super::call::LibraryCall::MaxPool2d(m)) = &k.call {
                writeln!(
                    f,
                    "// same as maxpool2d(x=b{}, y=b{}, {}x{}x{} -> {}x{}, kernel {}x{}, \
                     stride {}x{}, dilation {}x{})",
                    m.x,
                    m.y,
                    m.planes,
                    m.in_h,
                    m.in_w,
                    m.out_h,
                    m.out_w,
                    m.k_h,
                    m.k_w,
                    m.stride_h,
                    m.stride_w,
                    m.dil_h,
                    m.dil_w
                )?;
            }
            writeln!(f, "kernel {} {{", k.name)?;
            let mut s = String::new();
            block(&mut s, &k.body, 1);
            f.write_str(&s)?;
            writeln!(f, "}}")?;
        }
        Ok(())
    }
}

fn block(out: &mut String, stmts: &[Stmt], depth: usize) {
    for s in stmts {
        let pad = "  ".repeat(depth);
        match s {
            Stmt::For { var, extent, body } => {
                let _ = writeln!(out, "{pad}for v{var} in 0..{extent} {{");
                block(out, body, depth + 1);
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::Let { var, value } => {
                let _ = writeln!(out, "{pad}let v{var} = {value}");
            }
            Stmt::Store { buf, index, value } => {
                let _ = writeln!(out, "{pad}b{buf}[{index}] = {value}");
            }
            Stmt::If {
                cond,
                then_body,
                else_body,
            } => {
                let _ = writeln!(out, "{pad}if {cond} {{");
                block(out, then_body, depth + 1);
                if !else_body.is_empty() {
                    let _ = writeln!(out, "{pad}}} else {{");
                    block(out, else_body, depth + 1);
                }
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::While { cond, body } => {
                let _ = writeln!(out, "{pad}while {cond} {{");
                block(out, body, depth + 1);
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::Matmul(m) => {
                let v = |v: &MatView| {
                    format!(
                        "b{}[{} ; {}, {}]",
                        v.buf, v.offset, v.row_stride, v.col_stride
                    )
                };
                let op = if m.accumulate { "+=" } else { "=" };
                let _ = writeln!(
                    out,
                    "{pad}matmul {}x{}x{}: {} {op} {} * {}",
                    m.m,
                    m.n,
                    m.k,
                    v(&m.c),
                    v(&m.a),
                    v(&m.b)
                );
            }
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::F(v, t) => write!(f, "{v:?}{t}"),
            Expr::I(v, DType::I64) => write!(f, "{v}"),
            Expr::I(v, t) => write!(f, "{v}{t}"),
            Expr::B(b) => write!(f, "{b}"),
            Expr::Var(v) => write!(f, "v{v}"),
            Expr::Load { buf, index } => write!(f, "b{buf}[{index}]"),
            Expr::Unary(op, a) => write!(f, "{}({a})", format!("{op:?}").to_lowercase()),
            Expr::Binary(op, a, b) => {
                let sym = match op {
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "*",
                    BinOp::Div => "/",
                    BinOp::Rem => "%",
                    BinOp::Eq => "==",
                    BinOp::Ne => "!=",
                    BinOp::Lt => "<",
                    BinOp::Le => "<=",
                    BinOp::Gt => ">",
                    BinOp::Ge => ">=",
                    BinOp::And => "&",
                    BinOp::Or => "|",
                    BinOp::Xor => "^",
                    BinOp::Shl => "<<",
                    BinOp::Shr => ">>",
                    _ => return write!(f, "{}({a}, {b})", format!("{op:?}").to_lowercase()),
                };
                write!(f, "({a} {sym} {b})")
            }
            Expr::Select(c, a, b) => write!(f, "select({c}, {a}, {b})"),
            Expr::Cast(t, a) => write!(f, "{t}({a})"),
            Expr::Reduce {
                op,
                var,
                extent,
                body,
            } => {
                write!(
                    f,
                    "{}(v{var} in 0..{extent}: {body})",
                    format!("{op:?}").to_lowercase()
                )
            }
        }
    }
}
