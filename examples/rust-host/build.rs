//! Compiles the example model for the target this crate is built for.

fn main() {
    if let Err(e) = kiln_build::Build::new("../mnist_mlp/mnist_mlp.onnx")
        .name("mnist_mlp")
        .compile()
    {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
