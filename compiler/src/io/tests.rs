use super::*;
use kiln_ir::{DType, Storage};
use onnx_protobuf::{Message, TensorProto};

fn roundtrip(t: &Tensor) -> Tensor {
    decode_npy(&encode_npy(t)).expect("decode")
}

#[test]
fn npy_roundtrip_all_dtypes() {
    for dt in DType::ALL {
        if dt == DType::BF16 {
            continue;
        }
        let t = Tensor {
            shape: vec![2, 3],
            data: Storage::from_i64s(dt, 0..6),
        };
        assert_eq!(roundtrip(&t), t, "{dt}");
    }
    let s = Tensor::scalar_f64(DType::F32, 1.5);
    assert_eq!(roundtrip(&s), s);
    let v = Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]);
    assert_eq!(roundtrip(&v), v);
    let e = Tensor::zeros(DType::F32, vec![0, 4]);
    assert_eq!(roundtrip(&e), e);
}

#[test]
fn npy_header_alignment() {
    let b = encode_npy(&Tensor::from_f32(vec![1, 1, 28, 28], vec![0.0; 784]));
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    assert_eq!(b[10 + hlen - 1], b'\n');
}

#[test]
fn bf16_written_as_f32() {
    let t = Tensor {
        shape: vec![2],
        data: Storage::from_f64s(DType::BF16, [1.0, -2.0]),
    };
    assert_eq!(roundtrip(&t), Tensor::from_f32(vec![2], vec![1.0, -2.0]));
}

fn npy_with_header(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY".to_vec();
    b.push(major);
    b.push(0);
    if major == 1 {
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        b.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn npy_v2_v3_and_errors() {
    let data: Vec<u8> = [1i32, 2].iter().flat_map(|x| x.to_le_bytes()).collect();
    for major in [2, 3] {
        let b = npy_with_header(
            major,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\n",
            &data,
        );
        assert_eq!(
            decode_npy(&b).unwrap(),
            Tensor {
                shape: vec![2],
                data: Storage::I32(vec![1, 2])
            }
        );
    }
    let f = npy_with_header(
        1,
        "{'descr': '<i4', 'fortran_order': True, 'shape': (2,), }\n",
        &data,
    );
    assert!(decode_npy(&f).unwrap_err().contains("Fortran"));
    let be = npy_with_header(
        1,
        "{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }\n",
        &data,
    );
    assert!(decode_npy(&be).unwrap_err().contains("big-endian"));
    let short = npy_with_header(
        1,
        "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }\n",
        &data,
    );
    assert!(decode_npy(&short).unwrap_err().contains("truncated"));
    assert!(decode_npy(b"hello").is_err());
    let b = encode_npy(&Tensor::from_f32(vec![4], vec![1.0; 4]));
    for cut in 0..b.len() {
        assert!(decode_npy(&b[..cut]).is_err());
    }
}

#[test]
fn pb_raw_and_typed() {
    let mut p = TensorProto::new();
    p.dims = vec![2, 2];
    p.data_type = 1;
    p.float_data = vec![1.0, 2.0, 3.0, 4.0];
    let t = decode_tensor_proto(&p.write_to_bytes().unwrap()).unwrap();
    assert_eq!(t, Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));

    let mut p = TensorProto::new();
    p.dims = vec![3];
    p.data_type = 7;
    p.raw_data = [5i64, -6, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_i64(vec![3], vec![5, -6, 7])
    );

    let mut p = TensorProto::new();
    p.dims = vec![3];
    p.data_type = 9;
    p.int32_data = vec![1, 0, 1];
    assert_eq!(
        tensor_from_proto(&p).unwrap().data,
        Storage::Bool(vec![true, false, true])
    );

    let mut p = TensorProto::new();
    p.dims = vec![2];
    p.data_type = 10;
    p.int32_data = vec![0x3c00, 0xc000];
    assert_eq!(tensor_from_proto(&p).unwrap().to_f64_vec(), vec![1.0, -2.0]);

    let mut p = TensorProto::new();
    p.data_type = 1;
    p.float_data = vec![1.0, 2.0];
    assert!(tensor_from_proto(&p).unwrap_err().contains("elements"));
}

#[test]
fn npz_stored_and_deflated() {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let a = Tensor::from_f32(vec![2], vec![1.0, 2.0]);
        let b = Tensor::from_i64(vec![1], vec![9]);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let defl = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file("in_0.npy", stored).unwrap();
        z.write_all(&encode_npy(&a)).unwrap();
        z.start_file("out_0.npy", defl).unwrap();
        z.write_all(&encode_npy(&b)).unwrap();
        z.finish().unwrap();
    }
    let v = decode_npz(buf.get_ref()).unwrap();
    assert_eq!(v[0].0, "in_0");
    assert_eq!(
        v[1],
        ("out_0".to_string(), Tensor::from_i64(vec![1], vec![9]))
    );
}

#[test]
fn errors_name_the_file() {
    let e = read_npy(Path::new("/nonexistent/x.npy")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.npy"));
    let e = read_tensor(Path::new("x.txt")).unwrap_err();
    assert!(e.to_string().contains("x.txt"));
}
