//! NumPy's `.npy` format: a magic string, a version, a Python dict literal
//! header (`descr`, `fortran_order`, `shape`), then the raw elements.

use kiln_ir::{DType, Storage, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Decodes a `.npy` file held in memory.
pub fn decode_npy(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let header =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| "the .npy header is not UTF-8")?;
    let (dtype, shape) = parse_header(header)?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let need = count.checked_mul(dtype.size()).ok_or("shape overflows")?;
    let body = &bytes[end..];
    if body.len() < need {
        return Err(format!(
            "data is truncated: shape {shape:?} needs {need} bytes, file has {}",
            body.len()
        ));
    }
    let data = Storage::from_le_bytes(dtype, &body[..need]).ok_or("bad data length")?;
    Tensor::new(shape, data).ok_or_else(|| "element count does not match the shape".into())
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (1, 28, 28), }`.
fn parse_header(h: &str) -> Result<(DType, Vec<usize>), String> {
    let descr = dict_value(h, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_start_matches(['\'', '"']);
    let descr: String = descr
        .chars()
        .take_while(|c| *c != '\'' && *c != '"')
        .collect();
    let fortran = dict_value(h, "fortran_order").ok_or("header has no 'fortran_order'")?;
    if fortran.starts_with("True") {
        return Err(
            "Fortran-order arrays are not supported (save with np.ascontiguousarray)".into(),
        );
    }
    let shape_src = dict_value(h, "shape").ok_or("header has no 'shape'")?;
    let inner = shape_src
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("bad shape in header: {shape_src}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("bad dimension '{s}' in header"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((parse_descr(&descr)?, shape))
}

/// The text after `'key':` in the header dict, trimmed.
fn dict_value<'a>(h: &'a str, key: &str) -> Option<&'a str> {
    let pos = h
        .find(&format!("'{key}'"))
        .or_else(|| h.find(&format!("\"{key}\"")))?;
    let rest = &h[pos + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

fn parse_descr(d: &str) -> Result<DType, String> {
    let (order, code) = match d.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &d[1..]),
        _ => ('=', d),
    };
    if order == '>' && !matches!(code, "i1" | "u1" | "b1") {
        return Err(format!("big-endian arrays ('{d}') are not supported"));
    }
    Ok(match code {
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "i2" => DType::I16,
        "u2" => DType::U16,
        "i4" => DType::I32,
        "u4" => DType::U32,
        "i8" => DType::I64,
        "u8" => DType::U64,
        "b1" => DType::Bool,
        _ => return Err(format!("unsupported dtype '{d}'")),
    })
}

fn descr(dt: DType) -> &'static str {
    match dt {
        DType::F16 => "<f2",
        DType::F32 | DType::BF16 => "<f4",
        DType::F64 => "<f8",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::I64 => "<i8",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
    }
}

/// Encodes a tensor as `.npy`. NumPy has no bfloat16, so bf16 is widened to
/// f32 (exactly) rather than written as an opaque type NumPy cannot read.
pub fn encode_npy(t: &Tensor) -> Vec<u8> {
    let t = if t.dtype() == DType::BF16 {
        std::borrow::Cow::Owned(t.cast(DType::F32))
    } else {
        std::borrow::Cow::Borrowed(t)
    };
    let shape = match t.shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        descr(t.dtype())
    );
    // The data starts on a 64-byte boundary, as NumPy writes it, and the header ends with '\n'.
    let v1 = header.len() + 1 + 10 <= u16::MAX as usize;
    let pre = if v1 { 10 } else { 12 };
    let total = (pre + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - pre - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + t.byte_len());
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.data.to_le_bytes());
    out
}
