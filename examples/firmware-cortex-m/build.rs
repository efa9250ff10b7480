//! Wires a kiln-compiled model into the firmware: links `model.o` from
//! `KILN_FW_MODEL_DIR` (made by `kiln compile --name model`), reads the arena
//! size and output sizes from `model.h`, and embeds the reference inputs and
//! outputs listed in `KILN_FW_IO_DIR/io.txt` (made by
//! `scripts/npz-to-firmware.py`). Writes `memory.x` for QEMU's mps2 boards.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-env-changed=KILN_FW_MODEL_DIR");
    println!("cargo:rerun-if-env-changed=KILN_FW_IO_DIR");
    let model = PathBuf::from(
        env::var_os("KILN_FW_MODEL_DIR")
            .expect("set KILN_FW_MODEL_DIR to a folder with model.o and model.h"),
    );
    let io = PathBuf::from(
        env::var_os("KILN_FW_IO_DIR").expect("set KILN_FW_IO_DIR to a folder with io.txt"),
    );
    // mps2-an386 / mps2-an500: 4 MB flash at 0, 4 MB RAM at 0x20000000.
    fs::write(
        out.join("memory.x"),
        "MEMORY\n{\n  FLASH : ORIGIN = 0x00000000, LENGTH = 4M\n  RAM : ORIGIN = 0x20000000, LENGTH = 4M\n}\n",
    )
    .expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");

    let obj = model.join("model.o");
    let header = model.join("model.h");
    for p in [&obj, &header, &io.join("io.txt")] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rustc-link-arg={}", obj.display());

    let h = fs::read_to_string(&header).unwrap_or_else(|e| panic!("{}: {e}", header.display()));
    let define = |name: &str| -> usize {
        h.lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .map(|v| v.trim().trim_end_matches('u'))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("model.h has no numeric {name}"))
    };
    let arena = define("MODEL_ARENA_SIZE");
    let align = define("MODEL_ARENA_ALIGN");
    assert!(
        align <= 64,
        "arena alignment {align} exceeds the firmware's 64"
    );
    let n_in = define("MODEL_NUM_INPUTS");
    let n_out = define("MODEL_NUM_OUTPUTS");

    let meta = fs::read_to_string(io.join("io.txt")).expect("read io.txt");
    let mut src = String::new();
    let _ = writeln!(src, "pub const ARENA_SIZE: usize = {arena};");
    let (mut ins, mut outs) = (vec![], vec![]);
    for line in meta.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [key, _code, kind, bytes] = f[..] else {
            panic!("bad io.txt line '{line}'")
        };
        let bin = io.join(format!("{key}.bin"));
        println!("cargo:rerun-if-changed={}", bin.display());
        let up = key.to_ascii_uppercase();
        let _ = writeln!(
            src,
            "static {up}: &Aligned<[u8; {bytes}]> = &Aligned(*include_bytes!({:?}));",
            bin.display().to_string()
        );
        if key.starts_with("in_") {
            ins.push(format!("&{up}.0"));
        } else {
            outs.push((format!("&{up}.0"), kind.as_bytes()[0], bytes.to_string()));
        }
    }
    assert_eq!(ins.len(), n_in, "model inputs vs reference inputs");
    assert_eq!(outs.len(), n_out, "model outputs vs reference outputs");
    let _ = writeln!(
        src,
        "pub static INPUTS: [&[u8]; {}] = [{}];",
        ins.len(),
        ins.join(", ")
    );
    let exp: Vec<String> = outs
        .iter()
        .map(|(p, k, _)| format!("({p}, b'{}')", *k as char))
        .collect();
    let _ = writeln!(
        src,
        "pub static EXPECTED: [(&[u8], u8); {}] = [{}];",
        outs.len(),
        exp.join(", ")
    );
    let total: usize = outs
        .iter()
        .map(|(_, _, b)| b.parse::<usize>().expect("size").div_ceil(8) * 8)
        .sum();
    let _ = writeln!(src, "pub const OUTPUT_BYTES: usize = {};", total.max(8));
    fs::write(out.join("io.rs"), src).expect("write io.rs");
}
