//! Tensor files: .npy, .npz, ONNX TensorProto .pb.
