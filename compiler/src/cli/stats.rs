//! Model statistics for `kiln inspect`, computed from the graph and its
//! inferred shapes only (no pass or lowering involved), so they describe the
//! model as given.

use kiln_ir::{Model, Node, Op};

/// Multiply-accumulates of the compute-heavy ops. `unknown` counts nodes whose
/// shapes were symbolic, so a total is never silently partial.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Macs {
    pub total: u64,
    pub unknown: usize,
}

pub fn macs(model: &Model) -> Macs {
    let mut m = Macs::default();
    model.visit_nodes(&mut |n| match node_macs(model, n) {
        Some(Some(k)) => m.total += k,
        Some(None) => m.unknown += 1,
        None => {}
    });
    m
}

fn dims(model: &Model, n: &Node, input: bool, i: usize) -> Option<Vec<u64>> {
    let v = if input {
        (*n.inputs.get(i)?)?
    } else {
        *n.outputs.get(i)?
    };
    Some(model.ty(v).dims()?.into_iter().map(|d| d as u64).collect())
}

/// `None` for ops without MACs; `Some(None)` when the shapes are not all known.
pub fn node_macs(model: &Model, n: &Node) -> Option<Option<u64>> {
    let out = || dims(model, n, false, 0);
    Some(match &n.op {
        // Gemm arrives as MatMul (+ Add): out elements × shared dim.
        Op::MatMul => (|| {
            let a = dims(model, n, true, 0)?;
            let k = *a.last()?;
            Some(out()?.iter().product::<u64>() * k)
        })(),
        // Each output element reads C_in/group × kernel weights.
        Op::Conv { .. } => (|| {
            let w = dims(model, n, true, 1)?;
            Some(out()?.iter().product::<u64>() * w.iter().skip(1).product::<u64>())
        })(),
        // Each input element scatters into C_out/group × kernel outputs; w is [C_in, C_out/group, k...].
        Op::ConvTranspose { .. } => (|| {
            let x = dims(model, n, true, 0)?;
            let w = dims(model, n, true, 1)?;
            Some(x.iter().product::<u64>() * w.iter().skip(1).product::<u64>())
        })(),
        _ => return None,
    })
}

/// Human-readable byte count (KiB/MiB), as cargo prints sizes.
pub fn human_bytes(b: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, Region, TensorType};

    #[test]
    fn matmul_and_conv_macs() {
        let mut m = Model::default();
        let a = m.add_value("a", TensorType::known(DType::F32, &[2, 3, 4]));
        let b = m.add_value("b", TensorType::known(DType::F32, &[4, 5]));
        let y = m.add_value("y", TensorType::known(DType::F32, &[2, 3, 5]));
        let x = m.add_value("x", TensorType::known(DType::F32, &[1, 8, 10, 10]));
        let w = m.add_value("w", TensorType::known(DType::F32, &[16, 4, 3, 3]));
        let z = m.add_value("z", TensorType::known(DType::F32, &[1, 16, 8, 8]));
        let conv = Op::Conv {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            group: 2,
        };
        m.body = Region {
            params: vec![a, b, x, w],
            nodes: vec![
                Node {
                    name: "mm".into(),
                    op: Op::MatMul,
                    inputs: vec![Some(a), Some(b)],
                    outputs: vec![y],
                    regions: vec![],
                },
                Node {
                    name: "c".into(),
                    op: conv,
                    inputs: vec![Some(x), Some(w)],
                    outputs: vec![z],
                    regions: vec![],
                },
            ],
            results: vec![y, z],
        };
        assert_eq!(
            macs(&m),
            Macs {
                total: 2 * 3 * 5 * 4 + 16 * 64 * 4 * 9,
                unknown: 0
            }
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }
}
