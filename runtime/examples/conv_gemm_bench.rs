//! Single-thread throughput of the packed-`A` GEMM, the shape every
//! convolution in NCHW takes: `C (C_out × pixels) = W · X` with the weights
//! packed at compile time and the activations `X` read as they lie.
//!
//! `conv_gemm_bench VARIANT MxNxK[,...] [SAMPLES]` prints, per shape, the
//! median GFLOP/s of calls with a per-row bias and a ReLU epilogue (as a
//! fused conv runs them), each sample lasting about 10 ms.

use std::time::Instant;

use kiln_runtime::gemm::{pack_a_vec, sgemm_pa, Activation, Epilogue, Variant};

fn fill(buf: &mut [f32], seed: u32) {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    for v in buf {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *v = (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map_or("avx512", String::as_str);
    let variant = Variant::ALL
        .into_iter()
        .find(|v| v.name() == name)
        .ok_or_else(|| format!("unknown variant {name}"))?;
    let samples: usize = args.get(2).map_or(Ok(9), |s| s.parse())?;
    for shape in args.get(1).map_or("16x12544x32", String::as_str).split(',') {
        let d: Vec<usize> = shape.split('x').map(str::parse).collect::<Result<_, _>>()?;
        let [m, n, k] = d[..] else {
            return Err(format!("bad shape {shape}: want MxNxK").into());
        };
        let mut w = vec![0.0; m * k];
        let mut x = vec![0.0; k * n];
        let mut bias = vec![0.0; m];
        fill(&mut w, 1);
        fill(&mut x, 2);
        fill(&mut bias, 3);
        let a = pack_a_vec(variant, m, k, &w, k, 1)?;
        let mut c = vec![0.0; m * n];
        let mut scratch = vec![0.0; variant.scratch_len_pa(n, k)];
        let epi = Epilogue {
            bias: Some(&bias),
            bias_rows: true,
            activation: Activation::Relu,
            ..Epilogue::default()
        };
        let flop = 2.0 * (m * n * k) as f64;
        let inner = ((1e-2 * 100e9 / flop) as usize).max(1);
        // One untimed call: page faults on C and a cold clock stay out.
        sgemm_pa(variant, m, n, k, &a, &x, n, &mut c, n, &epi, &mut scratch)?;
        let mut rates = vec![];
        for _ in 0..samples {
            let t = Instant::now();
            for _ in 0..inner {
                sgemm_pa(variant, m, n, k, &a, &x, n, &mut c, n, &epi, &mut scratch)?;
            }
            rates.push(flop * inner as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        rates.sort_by(f64::total_cmp);
        println!("{shape:>16} {:7.1} GFLOP/s", rates[rates.len() / 2]);
    }
    Ok(())
}
