//! Cortex-M firmware targets: which core and float ABI a triple means, how to
//! build the rendered C into `NAME.o` with `arm-none-eabi-gcc`, and a check
//! of the object's ARM build attributes.
//!
//! The check exists because a soft-float object links silently into
//! hard-float firmware with some linkers (rust-lld among them) and then
//! computes garbage: float arguments travel in core registers on one side and
//! in VFP registers on the other. `Tag_ABI_VFP_args` records which convention
//! an object uses and `Tag_FP_arch` whether it contains FPU instructions.

use super::{render_with, CError, RenderOptions};
use crate::plan::AotProgram;
use object::{Object, ObjectSection, ObjectSymbol, SectionKind};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How floating-point values are passed and computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatAbi {
    /// No FPU use; float arguments in core registers (`-mfloat-abi=soft`).
    Soft,
    /// FPU instructions and float arguments in VFP registers (`-mfloat-abi=hard`).
    Hard,
}

/// A Cortex-M core and ABI, chosen from a Rust target triple and an optional `--cpu`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareTarget {
    /// The triple as given (`thumbv7em-none-eabihf`, …).
    pub triple: String,
    /// The core, as gcc's `-mcpu` spells it (`cortex-m4`, `cortex-m7`, …).
    pub cpu: String,
    pub float_abi: FloatAbi,
    /// gcc's `-mfpu` for hard-float targets.
    pub fpu: Option<&'static str>,
    /// Whether the core executes double-precision float instructions.
    pub fp64: bool,
}

/// The cores each triple accepts; the first is the default.
const CORES: &[(&str, FloatAbi, &[&str])] = &[
    (
        "thumbv6m-none-eabi",
        FloatAbi::Soft,
        &["cortex-m0plus", "cortex-m0"],
    ),
    ("thumbv7m-none-eabi", FloatAbi::Soft, &["cortex-m3"]),
    (
        "thumbv7em-none-eabi",
        FloatAbi::Soft,
        &["cortex-m4", "cortex-m7"],
    ),
    (
        "thumbv7em-none-eabihf",
        FloatAbi::Hard,
        &["cortex-m4", "cortex-m7"],
    ),
    ("thumbv8m.main-none-eabi", FloatAbi::Soft, &["cortex-m33"]),
    ("thumbv8m.main-none-eabihf", FloatAbi::Hard, &["cortex-m33"]),
];

impl FirmwareTarget {
    /// Resolves `triple` and `cpu` (default: the triple's usual core); an
    /// error names what is accepted.
    pub fn parse(triple: &str, cpu: Option<&str>) -> Result<Self, CError> {
        let (_, abi, cores) = CORES.iter().find(|(t, ..)| *t == triple).ok_or_else(|| {
            let known: Vec<&str> = CORES.iter().map(|c| c.0).collect();
            CError::Target(format!(
                "unknown firmware triple '{triple}' (known: {})",
                known.join(", ")
            ))
        })?;
        let cpu = match cpu {
            None => cores[0],
            Some(c) => {
                let c = c.to_ascii_lowercase();
                *cores.iter().find(|k| **k == c).ok_or_else(|| {
                    CError::Target(format!(
                        "cpu '{c}' does not fit '{triple}' (use one of: {})",
                        cores.join(", ")
                    ))
                })?
            }
        };
        let (fpu, fp64) = match (abi, cpu) {
            (FloatAbi::Soft, _) => (None, false),
            // The M7 of QEMU's mps2-an500 (and most parts) has the double-precision FPv5.
            (FloatAbi::Hard, "cortex-m7") => (Some("fpv5-d16"), true),
            (FloatAbi::Hard, "cortex-m33") => (Some("fpv5-sp-d16"), false),
            (FloatAbi::Hard, _) => (Some("fpv4-sp-d16"), false),
        };
        Ok(FirmwareTarget {
            triple: triple.to_string(),
            cpu: cpu.to_string(),
            float_abi: *abi,
            fpu,
            fp64,
        })
    }

    /// Whether `triple` names a firmware target this module handles.
    pub fn is_firmware_triple(triple: &str) -> bool {
        triple.starts_with("thumb")
    }

    /// gcc flags selecting the core, instruction set and float ABI.
    pub fn cflags(&self) -> Vec<String> {
        let mut f = vec![format!("-mcpu={}", self.cpu), "-mthumb".to_string()];
        match (self.float_abi, self.fpu) {
            (FloatAbi::Hard, Some(fpu)) => {
                f.push(format!("-mfpu={fpu}"));
                f.push("-mfloat-abi=hard".into());
            }
            _ => f.push("-mfloat-abi=soft".into()),
        }
        f
    }

    /// Rendering choices for this core: float math in single precision (no
    /// soft-double calls on single-precision or FPU-less cores) and loop
    /// blocking that fits the register file.
    pub fn render_options(&self) -> RenderOptions {
        RenderOptions {
            f32_math: true,
            // 4x4 accumulators plus 4+4 operands use 24 of the 32 S registers;
            // without an FPU the accumulators live on the stack anyway, so a
            // smaller tile avoids spilling the 13 usable core registers.
            block_m: if self.float_abi == FloatAbi::Hard {
                4
            } else {
                2
            },
            block_n: if self.float_abi == FloatAbi::Hard {
                4
            } else {
                2
            },
            jam: if self.float_abi == FloatAbi::Hard {
                4
            } else {
                2
            },
            // Small kernel windows (3x3, 10x4) unrolled give immediate-offset loads.
            unroll: 16,
        }
    }
}

/// What [`build_firmware`] produced.
#[derive(Clone, Debug)]
pub struct FirmwareArtifact {
    pub c_file: PathBuf,
    pub h_file: PathBuf,
    /// `NAME.o`, when a compiler was found.
    pub object: Option<PathBuf>,
    /// The compiler used for `object`.
    pub compiler: Option<PathBuf>,
    /// Bytes of code in the object (`.text*`).
    pub text_bytes: Option<u64>,
    /// Bytes of read-only data in the object (weights and tables).
    pub rodata_bytes: Option<u64>,
    pub arena_size: usize,
    pub arena_lower_bound: usize,
}

/// `cc` if given (it must exist), else `arm-none-eabi-gcc` from `PATH`, else none.
pub fn find_compiler(cc: Option<&Path>) -> Result<Option<PathBuf>, CError> {
    if let Some(cc) = cc {
        if cc.components().count() > 1 {
            if !cc.is_file() {
                return Err(CError::Target(format!(
                    "compiler '{}' does not exist",
                    cc.display()
                )));
            }
            return Ok(Some(cc.to_path_buf()));
        }
        return which(cc.as_os_str()).map(Some).ok_or_else(|| {
            CError::Target(format!("compiler '{}' not found in PATH", cc.display()))
        });
    }
    Ok(which(std::ffi::OsStr::new("arm-none-eabi-gcc")))
}

fn which(name: &std::ffi::OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Renders `NAME.c`/`NAME.h` into `out_dir` and, when a compiler is found (or
/// `cc` is given), builds `NAME.o` for `target` and checks its float ABI.
pub fn build_firmware(
    prog: &AotProgram,
    name: &str,
    target: &FirmwareTarget,
    cc: Option<&Path>,
    out_dir: &Path,
) -> Result<FirmwareArtifact, CError> {
    let src = render_with(prog, name, &target.render_options())?;
    std::fs::create_dir_all(out_dir).map_err(|e| io_err(out_dir, e))?;
    let c_file = out_dir.join(format!("{}.c", src.name));
    let h_file = out_dir.join(format!("{}.h", src.name));
    std::fs::write(&c_file, &src.source).map_err(|e| io_err(&c_file, e))?;
    std::fs::write(&h_file, &src.header).map_err(|e| io_err(&h_file, e))?;
    let mut art = FirmwareArtifact {
        c_file,
        h_file,
        object: None,
        compiler: None,
        text_bytes: None,
        rodata_bytes: None,
        arena_size: prog.arena_size,
        arena_lower_bound: prog.arena_lower_bound,
    };
    let Some(gcc) = find_compiler(cc)? else {
        return Ok(art);
    };
    let obj = out_dir.join(format!("{}.o", src.name));
    compile_object(&gcc, target, &art.c_file, &obj)?;
    let bytes = std::fs::read(&obj).map_err(|e| io_err(&obj, e))?;
    check_object(&bytes, target)?;
    let (text, rodata) = object_sizes(&bytes)?;
    art.text_bytes = Some(text);
    art.rodata_bytes = Some(rodata);
    art.object = Some(obj);
    art.compiler = Some(gcc);
    Ok(art)
}

/// The flags every firmware object is built with, besides the core's.
/// `-ffp-contract=fast` lets gcc fuse `acc += x * y` into one VFMA (strict
/// C99 mode would otherwise split it into VMUL + VADD, twice the instructions
/// in every multiply-accumulate loop); fused rounding stays well inside the
/// f32 tolerance.
pub const COMMON_CFLAGS: &[&str] = &[
    "-std=c99",
    "-O2",
    "-ffp-contract=fast",
    "-ffreestanding",
    "-fno-common",
    "-ffunction-sections",
    "-fdata-sections",
    "-Wall",
    "-Werror",
];

fn compile_object(gcc: &Path, t: &FirmwareTarget, c: &Path, obj: &Path) -> Result<(), CError> {
    let out = Command::new(gcc)
        .args(t.cflags())
        .args(COMMON_CFLAGS)
        .arg("-c")
        .arg(c)
        .arg("-o")
        .arg(obj)
        .output()
        .map_err(|e| CError::Target(format!("running '{}': {e}", gcc.display())))?;
    if !out.status.success() {
        return Err(CError::Target(format!(
            "'{}' failed on {}:\n{}",
            gcc.display(),
            c.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn io_err(p: &Path, e: std::io::Error) -> CError {
    CError::Target(format!("{}: {e}", p.display()))
}

/// Bytes of code and of read-only data in an object or ELF image: the sizes
/// of its allocated sections by kind (relocatable objects have no symbol sizes
/// for every section, section sizes are exact).
pub fn object_sizes(bytes: &[u8]) -> Result<(u64, u64), CError> {
    let f = object::File::parse(bytes)
        .map_err(|e| CError::Target(format!("object does not parse: {e}")))?;
    let (mut text, mut ro) = (0, 0);
    for s in f.sections() {
        match s.kind() {
            SectionKind::Text => text += s.size(),
            SectionKind::ReadOnlyData | SectionKind::ReadOnlyString => ro += s.size(),
            _ => {}
        }
    }
    Ok((text, ro))
}

/// The sum of the sizes of defined symbols whose names start with `prefix`,
/// split into code and data: the model's footprint inside a linked image.
pub fn symbol_sizes(bytes: &[u8], prefix: &str) -> Result<(u64, u64), CError> {
    let f = object::File::parse(bytes)
        .map_err(|e| CError::Target(format!("image does not parse: {e}")))?;
    let (mut text, mut data) = (0, 0);
    for s in f.symbols() {
        if !s.is_definition() || !s.name().is_ok_and(|n| n.starts_with(prefix)) {
            continue;
        }
        match s.kind() {
            object::SymbolKind::Text => text += s.size(),
            object::SymbolKind::Data => data += s.size(),
            _ => {}
        }
    }
    Ok((text, data))
}

/// The float-related ARM build attributes of an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArmFloatAttrs {
    /// `Tag_ABI_VFP_args` (28): 0 = base AAPCS (core registers), 1 = VFP registers.
    pub vfp_args: u64,
    /// `Tag_FP_arch` (10): 0 = no FPU instructions allowed.
    pub fp_arch: u64,
}

/// Checks that `bytes` (an ELF object) was built for `t`'s float ABI.
pub fn check_object(bytes: &[u8], t: &FirmwareTarget) -> Result<ArmFloatAttrs, CError> {
    let f = object::File::parse(bytes)
        .map_err(|e| CError::Target(format!("object does not parse: {e}")))?;
    let sec = f.section_by_name(".ARM.attributes").ok_or_else(|| {
        CError::Target("object has no .ARM.attributes section (not built for ARM?)".into())
    })?;
    let data = sec
        .data()
        .map_err(|e| CError::Target(format!(".ARM.attributes: {e}")))?;
    let a = parse_arm_attributes(data)?;
    let ok = match t.float_abi {
        FloatAbi::Hard => a.vfp_args == 1 && a.fp_arch != 0,
        FloatAbi::Soft => a.vfp_args == 0 && a.fp_arch == 0,
    };
    if !ok {
        return Err(CError::Target(format!(
            "object float ABI does not match {} ({}): Tag_ABI_VFP_args={} Tag_FP_arch={}, \
             expected {}",
            t.triple,
            t.cpu,
            a.vfp_args,
            a.fp_arch,
            match t.float_abi {
                FloatAbi::Hard => "Tag_ABI_VFP_args=1 (VFP registers) and an FPU",
                FloatAbi::Soft => "Tag_ABI_VFP_args=0 (core registers) and no FPU",
            }
        )));
    }
    Ok(a)
}

/// Parses the "aeabi" subsection of an `.ARM.attributes` section (ARM IHI
/// 0045 "Build attributes"): `'A'`, then `len:u32 "aeabi\0"` followed by
/// `tag:uleb size:u32 attrs…` blocks, where each attribute is a ULEB tag and
/// either a ULEB or a NUL-terminated string.
pub fn parse_arm_attributes(data: &[u8]) -> Result<ArmFloatAttrs, CError> {
    let bad = |m: &str| CError::Target(format!(".ARM.attributes: {m}"));
    if data.first() != Some(&b'A') {
        return Err(bad("not format version 'A'"));
    }
    let mut out = ArmFloatAttrs::default();
    let mut pos = 1;
    while pos + 4 <= data.len() {
        let len = u32_at(data, pos).ok_or_else(|| bad("truncated"))? as usize;
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= data.len() && len >= 4);
        let end = end.ok_or_else(|| bad("bad subsection length"))?;
        let body = &data[pos + 4..end];
        let nul = body
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| bad("vendor name"))?;
        if &body[..nul] == b"aeabi" {
            parse_aeabi(&body[nul + 1..], &mut out).ok_or_else(|| bad("malformed attributes"))?;
        }
        pos = end;
    }
    Ok(out)
}

fn u32_at(d: &[u8], p: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(p..p + 4)?.try_into().ok()?))
}

fn uleb(d: &[u8], p: &mut usize) -> Option<u64> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let b = *d.get(*p)?;
        *p += 1;
        if shift < 64 {
            v |= u64::from(b & 0x7f) << shift;
        }
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

fn parse_aeabi(d: &[u8], out: &mut ArmFloatAttrs) -> Option<()> {
    let mut pos = 0;
    while pos < d.len() {
        let start = pos;
        let kind = uleb(d, &mut pos)?;
        let size = u32_at(d, pos)? as usize;
        pos += 4;
        let end = start.checked_add(size).filter(|e| *e <= d.len())?;
        // Only file-scope attributes (Tag_File = 1) describe the whole object.
        if kind == 1 {
            let mut p = pos;
            while p < end {
                let tag = uleb(d, &mut p)?;
                // Tags 4, 5, 67 and odd tags above 32 hold strings; 32 holds a number and a string.
                let is_str = matches!(tag, 4 | 5 | 67) || (tag > 32 && tag % 2 == 1);
                if tag == 32 {
                    uleb(d, &mut p)?;
                }
                if is_str || tag == 32 {
                    let n = d.get(p..end)?.iter().position(|b| *b == 0)?;
                    p += n + 1;
                    continue;
                }
                let v = uleb(d, &mut p)?;
                match tag {
                    10 => out.fp_arch = v,
                    28 => out.vfp_args = v,
                    _ => {}
                }
            }
        }
        pos = end;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_triples_and_cpus() {
        let t = FirmwareTarget::parse("thumbv7em-none-eabihf", None).unwrap();
        assert_eq!(t.cpu, "cortex-m4");
        assert!(t.cflags().contains(&"-mfpu=fpv4-sp-d16".to_string()));
        let t = FirmwareTarget::parse("thumbv7em-none-eabihf", Some("cortex-m7")).unwrap();
        assert!(t.fp64);
        let t = FirmwareTarget::parse("thumbv7m-none-eabi", None).unwrap();
        assert!(t.cflags().contains(&"-mfloat-abi=soft".to_string()));
        assert!(FirmwareTarget::parse("thumbv7m-none-eabi", Some("cortex-m4")).is_err());
        assert!(FirmwareTarget::parse("riscv32imc-unknown-none-elf", None).is_err());
    }

    #[test]
    fn rejects_malformed_attributes() {
        assert!(parse_arm_attributes(b"B").is_err());
        assert!(parse_arm_attributes(b"A\xff\xff\xff\xff").is_err());
        // A well-formed section written by hand: Tag_FP_arch=6, Tag_ABI_VFP_args=1.
        let mut file = vec![1u8, 0, 0, 0, 0, 10, 6, 28, 1];
        let n = file.len() as u32;
        file[1..5].copy_from_slice(&n.to_le_bytes());
        let mut sub = vec![0u8; 4];
        sub.extend_from_slice(b"aeabi\0");
        sub.extend_from_slice(&file);
        let n = sub.len() as u32;
        sub[0..4].copy_from_slice(&n.to_le_bytes());
        let mut sec = vec![b'A'];
        sec.extend_from_slice(&sub);
        let a = parse_arm_attributes(&sec).unwrap();
        assert_eq!(
            a,
            ArmFloatAttrs {
                vfp_args: 1,
                fp_arch: 6
            }
        );
    }
}
