//! Single-thread throughput of the depthwise-convolution kernels on the
//! depthwise layers of MobileNet-V2 (3×3) and MobileNet-V3 (5×5).
//!
//! `dwconv_bench [VARIANT,...] [SAMPLES] [FILTER]` prints, per layer (those
//! whose label contains FILTER, e.g. `56x56`) and variant, the median and
//! the best GFLOP/s over SAMPLES samples (2 FLOPs per multiply-add, taps in
//! the padding counted as the layer's nominal work) and the ratio of the
//! medians to the scalar variant's. The variants take turns sample by
//! sample, so that a busy machine slows them alike. Every call adds a bias
//! and clamps to ReLU6, as the fused layers do. Defaults: every variant
//! this CPU runs, 15 samples.

use std::time::Instant;

use kiln_runtime::dwconv::{dwconv, out_dim, Activation, DwGeometry, Variant};

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

/// A layer: channels, input side, kernel side, stride (pads `k/2` all
/// round, as in the ONNX exports of both networks).
struct Layer {
    channels: usize,
    side: usize,
    k: usize,
    stride: usize,
}

impl Layer {
    fn geometry(&self) -> DwGeometry {
        let p = self.k / 2;
        let out = out_dim(self.side, self.k, self.stride, p, p, 1);
        DwGeometry {
            channels: self.channels,
            in_h: self.side,
            in_w: self.side,
            out_h: out,
            out_w: out,
            k_h: self.k,
            k_w: self.k,
            stride_h: self.stride,
            stride_w: self.stride,
            pad_top: p,
            pad_left: p,
            dil_h: 1,
            dil_w: 1,
        }
    }

    fn label(&self) -> String {
        let g = self.geometry();
        format!(
            "{}ch {}x{}->{}x{} {}x{} s{}",
            self.channels, self.side, self.side, g.out_h, g.out_w, self.k, self.k, self.stride
        )
    }
}

const LAYERS: [Layer; 11] = [
    // MobileNet-V2, 224×224 input.
    Layer {
        channels: 32,
        side: 112,
        k: 3,
        stride: 1,
    },
    Layer {
        channels: 96,
        side: 112,
        k: 3,
        stride: 2,
    },
    Layer {
        channels: 144,
        side: 56,
        k: 3,
        stride: 1,
    },
    Layer {
        channels: 144,
        side: 56,
        k: 3,
        stride: 2,
    },
    Layer {
        channels: 192,
        side: 28,
        k: 3,
        stride: 1,
    },
    Layer {
        channels: 384,
        side: 14,
        k: 3,
        stride: 1,
    },
    Layer {
        channels: 960,
        side: 7,
        k: 3,
        stride: 1,
    },
    // MobileNet-V3-Large's 5×5 layers.
    Layer {
        channels: 72,
        side: 56,
        k: 5,
        stride: 2,
    },
    Layer {
        channels: 120,
        side: 28,
        k: 5,
        stride: 1,
    },
    Layer {
        channels: 672,
        side: 14,
        k: 5,
        stride: 2,
    },
    Layer {
        channels: 960,
        side: 7,
        k: 5,
        stride: 1,
    },
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut variants: Vec<Variant> = match args.first().map(String::as_str) {
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
            .filter(|v| v.is_compiled() && v.is_supported())
            .collect(),
    };
    // The scalar variant first: the others are reported relative to it.
    variants.retain(|&v| v != Variant::Scalar);
    variants.insert(0, Variant::Scalar);
    let samples: usize = args.get(1).map_or(Ok(15), |s| s.parse())?;
    let filter = args.get(2).map_or("", String::as_str);
    let act = Activation::Clip { min: 0.0, max: 6.0 };

    println!(
        "{:<28} {:>8} {:>9} {:>9} {:>8}",
        "layer", "variant", "median", "best", "x scalar"
    );
    for layer in LAYERS.iter().filter(|l| l.label().contains(filter)) {
        let g = layer.geometry();
        let (mut sx, mut sw, mut sb, mut sy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let x = aligned(&mut sx, g.channels * g.in_h * g.in_w);
        fill(x, 1);
        let w = aligned(&mut sw, g.channels * g.k_h * g.k_w);
        fill(w, 2);
        let b = aligned(&mut sb, g.channels);
        fill(b, 3);
        let y = aligned(&mut sy, g.channels * g.out_h * g.out_w);
        let flops = 2.0 * (g.channels * g.out_h * g.out_w * g.k_h * g.k_w) as f64;
        // Enough calls per sample that one sample lasts about 5 ms with
        // the vector variants (tens of ms with the scalar one).
        let inner = ((2.0e8 / flops) as usize).max(1);
        for &variant in &variants {
            if !variant.is_supported() {
                return Err(format!("this CPU cannot run {}", variant.name()).into());
            }
            dwconv(variant, &g, x, w, Some(b), y, act)?;
        }
        let mut rates = vec![Vec::with_capacity(samples); variants.len()];
        for _ in 0..samples {
            for (&variant, r) in variants.iter().zip(&mut rates) {
                let t = Instant::now();
                for _ in 0..inner {
                    // Checked above with the same operands.
                    let _ = dwconv(variant, &g, x, w, Some(b), y, act);
                }
                r.push(flops * inner as f64 / t.elapsed().as_secs_f64() / 1e9);
            }
        }
        let mut scalar_median = None;
        for (&variant, r) in variants.iter().zip(&mut rates) {
            r.sort_by(f64::total_cmp);
            let median = r[r.len() / 2];
            let base = *scalar_median.get_or_insert(median);
            println!(
                "{:<28} {:>8} {:>9.2} {:>9.2} {:>8.2}",
                layer.label(),
                variant.name(),
                median,
                r[r.len() - 1],
                median / base
            );
        }
    }
    Ok(())
}
