//! Single-thread throughput of the direct conv (`kiln_runtime::conv`) on
//! square-kernel, stride-1, "same"-padded layers, as a 3x3 layer of a CNN
//! runs it.
//!
//! `direct_conv_bench CINxCOUTxHxW[xK][,...] [SAMPLES]` prints, per layer,
//! the median GFLOP/s of calls with a bias and a ReLU clamp, each sample
//! lasting about 10 ms.

use std::time::Instant;

use kiln_runtime::conv::{kiln_conv2d_f32_avx512, pack_weights_vec, KilnConvArgs};

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
    let samples: usize = args.get(1).map_or(Ok(9), |s| s.parse())?;
    for shape in args
        .first()
        .map_or("64x64x56x56", String::as_str)
        .split(',')
    {
        let d: Vec<usize> = shape.split('x').map(str::parse).collect::<Result<_, _>>()?;
        let (cin, cout, h, w, k) = match d[..] {
            [a, b, c, e] => (a, b, c, e, 3),
            [a, b, c, e, f] => (a, b, c, e, f),
            _ => return Err(format!("bad layer {shape}: want CINxCOUTxHxW[xK]").into()),
        };
        let (hp, wp) = (h + k - 1, w + k - 1);
        let mut x = vec![0.0; cin * hp * wp];
        let mut wt = vec![0.0; cout * cin * k * k];
        let mut bias = vec![0.0; cout];
        fill(&mut x, 1);
        fill(&mut wt, 2);
        fill(&mut bias, 3);
        let packed = pack_weights_vec(cout, cin * k * k, &wt).map_err(|e| format!("{e:?}"))?;
        let mut y = vec![0.0; cout * h * w];
        let mut a = KilnConvArgs {
            x: x.as_ptr(),
            w: packed.as_ptr(),
            bias: bias.as_ptr(),
            y: y.as_mut_ptr(),
            cin,
            hp,
            wp,
            cout,
            oh: h,
            ow: w,
            kh: k,
            kw: k,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            phases: 1,
            begin: 0,
            end: 0,
            act_min: 0.0,
            act_max: f32::INFINITY,
            func: 0,
        };
        a.end = a.items();
        let call = || {
            // SAFETY: the buffers match the arguments.
            let rc = unsafe { kiln_conv2d_f32_avx512(&a) };
            assert_eq!(rc, 0, "direct conv refused {shape}: {rc}");
        };
        let flop = 2.0 * (cout * h * w * cin * k * k) as f64;
        let inner = ((1e-2 * 100e9 / flop) as usize).max(1);
        call();
        let mut rates = vec![];
        for _ in 0..samples {
            let t = Instant::now();
            for _ in 0..inner {
                call();
            }
            rates.push(flop * inner as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        rates.sort_by(f64::total_cmp);
        println!("{shape:>18} {:7.1} GFLOP/s", rates[rates.len() / 2]);
    }
    Ok(())
}
