//! Exactness of numbers through the text form.

use super::{parse, parse_op, print, print_op};
use crate::graph::{Model, Op, PadMode, UnaryOp};
use crate::tensor::{Storage, Tensor};

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn float_attributes_are_exact() {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20000 {
        let bits = xorshift(&mut s);
        let a = f32::from_bits(bits as u32);
        let v = f64::from_bits(bits);
        if a.is_nan() || v.is_nan() {
            continue;
        }
        let op = Op::Unary {
            op: UnaryOp::LeakyRelu { alpha: a },
        };
        assert_eq!(parse_op(&print_op(&op)).unwrap(), op, "{}", print_op(&op));
        let op = Op::Pad {
            mode: PadMode::Edge,
            pads: Some(vec![i64::MIN, -1]),
            value: v,
        };
        assert_eq!(parse_op(&print_op(&op)).unwrap(), op, "{}", print_op(&op));
    }
}

#[test]
fn every_half_precision_value_survives_decimal_printing() {
    for bf in [false, true] {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        for chunk in bits.chunks(16) {
            let data = if bf {
                Storage::BF16(chunk.to_vec())
            } else {
                Storage::F16(chunk.to_vec())
            };
            let mut m = Model::default();
            m.add_const("c", Tensor::new(vec![chunk.len()], data.clone()).unwrap());
            let back = parse(&print(&m)).unwrap();
            assert_eq!(
                back.consts.values().next().unwrap().data.to_le_bytes(),
                data.to_le_bytes()
            );
        }
    }
}

#[test]
fn op_without_attributes_reads_optional_fields_as_none() {
    assert_eq!(parse_op("reshape").unwrap(), Op::Reshape { shape: None });
    assert_eq!(parse_op("mat_mul {}").unwrap(), Op::MatMul);
    assert_eq!(print_op(&Op::Slice { axes: None }), "slice");
    assert!(parse_op("conv").unwrap_err().msg.contains("missing field"));
    assert!(parse_op("unary {op: {leaky_relu: {alpha: x}}}").is_err());
    assert!(parse_op("concat {axis: 1.5}").is_err());
}
