//! Single-thread f32 GEMM throughput of the runtime's kernels.
//!
//! `gemm_bench [VARIANT,...] [SHAPE,...] [SAMPLES]` times `C = A·B`, a
//! SHAPE being `N` (square) or `MxNxK`, and prints one line per sample,
//! `sample kiln-<variant> <shape> <GFLOP/s>`, for `scripts/bench-gemm.sh` to
//! set beside numpy. A call includes packing `A` (activations) but not
//! packing `B`, which the compiler does once when it embeds the weights; the
//! packing time is printed separately as `pack_b kiln-<variant> <n> <ms>`.
//! Defaults: every variant this CPU runs, N = 256,512,1024, 15 samples.

use std::time::Instant;

use kiln_runtime::gemm::{pack_b, sgemm, Epilogue, Variant};

/// `len` floats starting on a 64-byte boundary (as the compiler lays out
/// weights and arena buffers), backed by `store`.
fn aligned(store: &mut Vec<f32>, len: usize) -> &mut [f32] {
    *store = vec![0.0; len + 16];
    let skip = store.as_ptr().align_offset(64);
    &mut store[skip..skip + len]
}

fn fill(buf: &mut [f32], seed: u32) {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    for v in buf {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *v = (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
    }
}

/// `"N"` → `N × N × N`; `"MxNxK"` → that shape. Zero sizes are refused.
fn parse_shape(token: &str) -> Result<(String, [usize; 3]), String> {
    let dims: Vec<usize> = token
        .split('x')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad shape {token}: {e}"))?;
    let shape = match dims[..] {
        [n] => [n, n, n],
        [m, n, k] => [m, n, k],
        _ => return Err(format!("bad shape {token}: want N or MxNxK")),
    };
    if shape.contains(&0) {
        return Err(format!("bad shape {token}: zero size"));
    }
    Ok((token.to_string(), shape))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let variants: Vec<Variant> = match args.first().map(String::as_str) {
        Some(list) if list != "all" => list
            .split(',')
            .map(|name| {
                Variant::ALL
                    .into_iter()
                    .find(|v| v.name() == name)
                    .ok_or_else(|| format!("unknown variant {name}"))
            })
            .collect::<Result<_, _>>()?,
        _ => Variant::ALL
            .into_iter()
            .filter(|v| v.is_compiled() && v.is_supported() && *v != Variant::Scalar)
            .collect(),
    };
    let shapes: Vec<(String, [usize; 3])> = args
        .get(1)
        .map_or("256,512,1024", String::as_str)
        .split(',')
        .map(parse_shape)
        .collect::<Result<_, _>>()?;
    let samples: usize = args.get(2).map_or(Ok(15), |s| s.parse())?;

    for (label, [m, n, k]) in &shapes {
        let (m, n, k) = (*m, *n, *k);
        let (mut sa, mut sb, mut sc) = (Vec::new(), Vec::new(), Vec::new());
        let a = aligned(&mut sa, m * k);
        fill(a, 1);
        let b = aligned(&mut sb, k * n);
        fill(b, 2);
        let c = aligned(&mut sc, m * n);
        for &variant in &variants {
            if !variant.is_supported() {
                return Err(format!("this CPU cannot run {}", variant.name()).into());
            }
            let (mut sp, mut ss) = (Vec::new(), Vec::new());
            let packed = aligned(&mut sp, variant.packed_b_len(k, n));
            let t = Instant::now();
            pack_b(variant, k, n, b, n, 1, packed)?;
            let pack_ms = t.elapsed().as_secs_f64() * 1e3;
            println!("pack_b kiln-{} {label} {pack_ms:.3}", variant.name());
            let scratch = aligned(&mut ss, variant.scratch_len(m, k));
            let epi = Epilogue::default();
            // Enough calls per sample that one sample lasts about 10 ms.
            let inner = ((1usize << 27) / (m * n * k)).max(1);
            let flops = 2.0 * (m * n * k) as f64 * inner as f64;
            sgemm(variant, m, n, k, a, k, packed, c, n, &epi, scratch)?;
            for _ in 0..samples {
                let t = Instant::now();
                for _ in 0..inner {
                    sgemm(variant, m, n, k, a, k, packed, c, n, &epi, scratch)?;
                }
                let secs = t.elapsed().as_secs_f64();
                let gflops = flops / secs / 1e9;
                println!("sample kiln-{} {label} {gflops:.2}", variant.name());
            }
        }
    }
    Ok(())
}
