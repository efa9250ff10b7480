//! A static library (`ar` archive) holding one object, written without an
//! external `ar`: the host's `ar` often cannot index a cross target's
//! objects, and linkers refuse an archive without a symbol index.
//!
//! The format is the System V / GNU one (what GNU ld, lld and MSVC's
//! link.exe read): the `!<arch>` magic, a `/` member listing each global
//! symbol with the offset of the member that defines it, then the object.

use object::{Object, ObjectSymbol};

/// The `ar` magic.
const MAGIC: &[u8] = b"!<arch>\n";
/// Bytes of a member header.
const HEADER: usize = 60;

/// A member header: fixed-width ASCII fields, space-padded. Timestamps and
/// owners are zero so that the archive is reproducible.
fn header(out: &mut Vec<u8>, name: &str, size: usize) {
    let mut h = format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n", 0, 0, 0, 644);
    h.truncate(HEADER);
    out.extend_from_slice(h.as_bytes());
}

/// The global symbols `obj` defines, in symbol-table order.
pub fn defined_symbols(obj: &[u8]) -> Result<Vec<String>, String> {
    let file = object::File::parse(obj).map_err(|e| format!("not an object file: {e}"))?;
    let mut names = vec![];
    for s in file.symbols() {
        if s.is_global() && !s.is_undefined() {
            let n = s.name().map_err(|e| format!("bad symbol name: {e}"))?;
            if !n.is_empty() {
                names.push(n.to_string());
            }
        }
    }
    Ok(names)
}

/// An archive with `obj` as its only member, named `member` (at most 15 bytes).
pub fn write_archive(member: &str, obj: &[u8]) -> Result<Vec<u8>, String> {
    if member.len() > 15 {
        return Err(format!("member name '{member}' is longer than 15 bytes"));
    }
    let syms = defined_symbols(obj)?;
    let mut table = Vec::new();
    table.extend_from_slice(
        &u32::try_from(syms.len())
            .map_err(|e| e.to_string())?
            .to_be_bytes(),
    );
    let names_len: usize = syms.iter().map(|s| s.len() + 1).sum();
    let table_len = 4 + 4 * syms.len() + names_len;
    let member_at = MAGIC.len() + HEADER + table_len + table_len % 2;
    let member_at = u32::try_from(member_at).map_err(|_| "symbol table too large".to_string())?;
    for _ in &syms {
        table.extend_from_slice(&member_at.to_be_bytes());
    }
    for s in &syms {
        table.extend_from_slice(s.as_bytes());
        table.push(0);
    }
    let mut out = MAGIC.to_vec();
    header(&mut out, "/", table.len());
    out.extend_from_slice(&table);
    if out.len() % 2 == 1 {
        out.push(b'\n');
    }
    header(&mut out, &format!("{member}/"), obj.len());
    out.extend_from_slice(obj);
    if out.len() % 2 == 1 {
        out.push(b'\n');
    }
    Ok(out)
}
