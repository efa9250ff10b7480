//! Constant data in the text form: decimal lists and hex bytes.

use super::lexer::{Tok, Token};
use super::TextError;
use crate::dtype::DType;
use crate::tensor::Storage;

type R<T> = Result<T, TextError>;

/// Converts decimal elements to `dtype`, rejecting integers out of range and non-numbers.
pub(crate) fn decimals_to_storage(dtype: DType, items: &[Token]) -> R<Storage> {
    let text = |t: &Token| match &t.tok {
        Tok::Num(s) | Tok::Ident(s) => s.clone(),
        _ => String::new(),
    };
    let bad = |t: &Token| TextError {
        line: t.line,
        col: t.col,
        msg: format!("`{}` is not a {} value", text(t), dtype.name()),
    };
    if dtype.is_float() {
        if dtype == DType::F32 {
            // Parsed directly as f32, not rounded twice through f64.
            let v = items
                .iter()
                .map(|t| text(t).parse::<f32>().map_err(|_| bad(t)))
                .collect::<R<Vec<_>>>()?;
            return Ok(Storage::F32(v));
        }
        let v = items
            .iter()
            .map(|t| text(t).parse::<f64>().map_err(|_| bad(t)))
            .collect::<R<Vec<_>>>()?;
        return Ok(Storage::from_f64s(dtype, v));
    }
    if dtype == DType::Bool {
        let v = items
            .iter()
            .map(|t| match text(t).as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad(t)),
            })
            .collect::<R<Vec<_>>>()?;
        return Ok(Storage::Bool(v));
    }
    let (lo, hi) = dtype.min_max();
    let mut v = Vec::with_capacity(items.len());
    for t in items {
        let s = text(t);
        let x: i128 = s.parse().map_err(|_| bad(t))?;
        if (x as f64) < lo || (x as f64) > hi {
            return Err(bad(t));
        }
        v.push(x);
    }
    Ok(match dtype {
        DType::U64 => Storage::U64(v.iter().map(|&x| x as u64).collect()),
        _ => Storage::from_i64s(dtype, v.iter().map(|&x| x as i64)),
    })
}

pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks_exact(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}
