//! Every reference model in `../shared/models`: load, simplify, run on the
//! recorded inputs, compare with onnxruntime's outputs — on the reference
//! backend (the interpreter) and on the native backend (the generated machine
//! code for this machine, as `kiln run --backend native`).

use kiln_tests::{compare_all, load_io, model_path, run_file, run_file_native};

fn check(name: &str) {
    let path = model_path(name);
    assert!(path.is_file(), "model file '{}' is missing", path.display());
    let (inputs, want) = load_io(name);
    assert!(
        !want.is_empty(),
        "{name}: the .io.npz holds no out_* arrays"
    );
    let t = std::time::Instant::now();
    let got = run_file_native(&path, &inputs).unwrap_or_else(|e| panic!("{name}: native: {e}"));
    eprintln!(
        "{name}: native compile + run in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    if let Err(e) = compare_all(&got, &want) {
        panic!("{name}: native backend: {e}");
    }
    let t = std::time::Instant::now();
    let got = run_file(&path, inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!(
        "{name}: reference backend ran in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    if let Err(e) = compare_all(&got, &want) {
        panic!("{name}: reference backend: {e}");
    }
}

macro_rules! model_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*

        /// Keeps this list in step with the folder: a new model needs a test.
        #[test]
        fn every_shared_model_has_a_test() {
            let listed = [$(stringify!($name)),*];
            let mut found: Vec<String> = std::fs::read_dir(kiln_tests::models_dir())
                .expect("read models dir")
                .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".onnx").map(str::to_string))
                .collect();
            found.sort();
            let missing: Vec<&String> = found.iter().filter(|f| !listed.contains(&f.as_str())).collect();
            assert!(missing.is_empty(), "models without a test: {missing:?}");
        }
    };
}

model_tests!(
    bert_tiny,
    keras_kws_dscnn,
    kws_dscnn,
    lstm_speech,
    mnist_cnn,
    mnist_mlp,
    mobilenet_v2,
    onnxzoo_light_inception_v1,
    onnxzoo_light_resnet50,
    onnxzoo_light_squeezenet,
    squeezenet1_1,
    tf_cond,
    tf_while_loop,
    tiny_transformer,
);
