//! Compiles an ONNX (or `.kiln`) model from a `build.rs`, for the crate's own
//! target, into a static library with typed Rust bindings:
//!
//! ```no_run
//! // build.rs
//! kiln_build::Build::new("model.onnx").name("mnist").compile().unwrap();
//! ```
//! ```ignore
//! // main.rs (with `kiln-runtime` as a dependency)
//! include!(concat!(env!("OUT_DIR"), "/mnist.rs"));
//! let mut arena = MnistArena::new();
//! Mnist::run(&input, &mut logits, &mut arena)?;
//! ```
//!
//! The model goes through the same driver as `kiln compile`. Triples with a
//! native backend get its object; any other triple, or [`Build::portable_c`],
//! gets portable C99 compiled by the target's C compiler (`CC_<triple>`,
//! `TARGET_CC`, `CC`, or a known cross compiler). The object is archived into
//! `OUT_DIR/libkiln_model_NAME.a` and cargo is told to link it.

mod archive;
mod bindings;

pub use archive::{defined_symbols, write_archive};
pub use bindings::{render as render_bindings, type_name, BindingSpec};

use kiln_compiler::compile::{compile_model, default_name, CompileError, CompileOptions, EmitKind};
use kiln_ir::DType;
use kiln_targets::header::sanitize;
use kiln_targets::plan::AotIo;
use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;

/// Why a model could not be built into the crate.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("kiln-build: environment variable {0} is not set (is this running inside build.rs?)")]
    Env(&'static str),
    #[error("kiln-build: cannot load model '{path}': {msg}")]
    Load { path: PathBuf, msg: String },
    #[error("kiln-build: compiling '{path}' for {target}: {source}")]
    Compile {
        path: PathBuf,
        target: String,
        source: CompileError,
    },
    #[error("kiln-build: no C compiler known for target '{0}'; set CC_{1} or TARGET_CC")]
    NoCompiler(String, String),
    #[error("kiln-build: `{cmd}` failed: {msg}")]
    Cc { cmd: String, msg: String },
    #[error("kiln-build: '{path}': {msg}")]
    Artifact { path: PathBuf, msg: String },
    #[error("kiln-build: cannot write '{path}': {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a build produced (all under the output directory).
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The C identifier prefix: `NAME_run`, `NAME.rs`, `libkiln_model_NAME.a`.
    pub name: String,
    /// The Rust type the bindings define (`mnist_mlp` → `MnistMlp`).
    pub type_name: String,
    pub object: PathBuf,
    pub archive: PathBuf,
    pub header: PathBuf,
    pub bindings: PathBuf,
    /// Which backend produced the object: the native one, or `c99` + a C compiler.
    pub backend: String,
    pub arena_size: usize,
}

/// Builder for one model; see the crate docs.
#[derive(Clone, Debug)]
pub struct Build {
    model: PathBuf,
    name: Option<String>,
    target: Option<String>,
    cpu: Option<String>,
    out_dir: Option<PathBuf>,
    cc: Option<PathBuf>,
    portable_c: bool,
    cargo_metadata: bool,
}

/// `Build::new(model).compile()`.
pub fn compile(model: impl AsRef<Path>) -> Result<Compiled, BuildError> {
    Build::new(model).compile()
}

fn env(var: &'static str) -> Result<String, BuildError> {
    std::env::var(var).map_err(|_| BuildError::Env(var))
}

impl Build {
    /// A model path; a relative one is taken from `CARGO_MANIFEST_DIR`.
    pub fn new(model: impl AsRef<Path>) -> Self {
        Build {
            model: model.as_ref().to_path_buf(),
            name: None,
            target: None,
            cpu: None,
            out_dir: None,
            cc: None,
            portable_c: false,
            cargo_metadata: true,
        }
    }

    /// The C identifier prefix (default: the model file's stem, sanitised).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The target triple (default: cargo's `TARGET`).
    pub fn target(mut self, triple: &str) -> Self {
        self.target = Some(triple.to_string());
        self
    }

    /// The ISA level or core, as `kiln compile --cpu` (default: `$KILN_CPU`,
    /// else the target's default, which is the build machine's own features
    /// when the target is the host).
    pub fn cpu(mut self, cpu: &str) -> Self {
        self.cpu = Some(cpu.to_string());
        self
    }

    /// Where files go (default: cargo's `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The C compiler for C output (default: see the crate docs).
    pub fn cc(mut self, cc: impl AsRef<Path>) -> Self {
        self.cc = Some(cc.as_ref().to_path_buf());
        self
    }

    /// Emit portable C99 and compile it with the target's C compiler instead
    /// of using the native backend.
    pub fn portable_c(mut self, yes: bool) -> Self {
        self.portable_c = yes;
        self
    }

    /// Whether to print `cargo:` link directives (default: yes).
    pub fn cargo_metadata(mut self, yes: bool) -> Self {
        self.cargo_metadata = yes;
        self
    }

    /// Compiles the model, archives it, writes the bindings and (unless
    /// disabled) tells cargo to link the archive.
    pub fn compile(&self) -> Result<Compiled, BuildError> {
        let model_path = if self.model.is_relative() {
            match std::env::var_os("CARGO_MANIFEST_DIR") {
                Some(d) => PathBuf::from(d).join(&self.model),
                None => self.model.clone(),
            }
        } else {
            self.model.clone()
        };
        let target = match &self.target {
            Some(t) => t.clone(),
            None => env("TARGET")?,
        };
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => PathBuf::from(env("OUT_DIR")?),
        };
        if self.cargo_metadata {
            println!("cargo:rerun-if-changed={}", model_path.display());
            for v in [
                "CC",
                "TARGET_CC",
                &format!("CC_{}", target.replace('-', "_")),
            ] {
                println!("cargo:rerun-if-env-changed={v}");
            }
        }
        let load_err = |msg: String| BuildError::Load {
            path: model_path.clone(),
            msg,
        };
        let model = kiln_compiler::frontend::load_model(&model_path)
            .map_err(|e| load_err(e.to_string()))?;
        let name = sanitize(self.name.as_deref().unwrap_or(&default_name(&model_path)));
        let compile_err = |source| BuildError::Compile {
            path: model_path.clone(),
            target: target.clone(),
            source,
        };
        let work = out_dir.join(format!("kiln-{name}"));
        // A previous build's files must not stand in for this one's.
        match std::fs::remove_dir_all(&work) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(BuildError::Io {
                    path: work,
                    source: e,
                })
            }
            _ => {}
        }
        let mut opts = CompileOptions {
            target: target.clone(),
            cpu: self
                .cpu
                .clone()
                .or_else(|| std::env::var("KILN_CPU").ok().filter(|c| !c.is_empty())),
            name: Some(name.clone()),
            cc: self.cc.clone(),
            emit: if self.portable_c {
                EmitKind::C
            } else {
                EmitKind::Native
            },
            single_threaded: false,
        };
        let out = match compile_model(&model, &name, &opts, &work) {
            Err(CompileError::Target { triple, why }) if !self.portable_c => {
                if self.cargo_metadata {
                    println!(
                        "cargo:warning=kiln: no native backend for {triple} ({why}); compiling portable C"
                    );
                }
                opts.emit = EmitKind::C;
                compile_model(&model, &name, &opts, &work)
            }
            r => r,
        }
        .map_err(compile_err)?;
        let object = work.join(format!("{name}.o"));
        let header = work.join(format!("{name}.h"));
        let backend = if object.is_file() {
            out.backend.to_string()
        } else {
            let source = work.join(format!("{name}.c"));
            if !source.is_file() {
                return Err(BuildError::Artifact {
                    path: work,
                    msg: format!(
                        "the {} backend wrote neither {name}.o nor {name}.c",
                        out.backend
                    ),
                });
            }
            let cc = cc_command(self.cc.as_deref(), &target)?;
            run_cc(cc, &source, &object, &work)?;
            format!("{} + cc", out.backend)
        };
        let obj = std::fs::read(&object).map_err(|source| BuildError::Io {
            path: object.clone(),
            source,
        })?;
        let lib = format!("kiln_model_{name}");
        let archive = out_dir.join(format!("lib{lib}.a"));
        let bytes = write_archive("model.o", &obj).map_err(|msg| BuildError::Artifact {
            path: object.clone(),
            msg,
        })?;
        write(&archive, bytes.as_slice())?;
        let manifest_path = work.join(format!("{name}.json"));
        let (inputs, outputs, arena_size) = read_manifest(&manifest_path)?;
        let bindings = out_dir.join(format!("{name}.rs"));
        let text = render_bindings(&BindingSpec {
            name: &name,
            inputs: &inputs,
            outputs: &outputs,
            arena_size,
            source: &model_path.display().to_string(),
        });
        write(&bindings, text.as_bytes())?;
        if self.cargo_metadata {
            println!("cargo:rustc-link-search=native={}", out_dir.display());
            println!("cargo:rustc-link-lib=static={lib}");
        }
        Ok(Compiled {
            type_name: type_name(&name),
            name,
            object,
            archive,
            header,
            bindings,
            backend,
            arena_size,
        })
    }
}

/// The interface the driver wrote to `NAME.json`: inputs, outputs, arena bytes.
fn read_manifest(path: &Path) -> Result<(Vec<AotIo>, Vec<AotIo>, usize), BuildError> {
    let bad = |msg: String| BuildError::Artifact {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let tensors = |key: &str| -> Result<Vec<AotIo>, BuildError> {
        let list = v[key]
            .as_array()
            .ok_or_else(|| bad(format!("no '{key}' list")))?;
        list.iter()
            .map(|t| {
                let name = t["name"]
                    .as_str()
                    .ok_or_else(|| bad("tensor without a name".into()))?;
                let dtype = t["dtype"]
                    .as_str()
                    .and_then(DType::from_name)
                    .ok_or_else(|| bad(format!("tensor '{name}': unknown dtype {}", t["dtype"])))?;
                let shape = t["shape"]
                    .as_array()
                    .ok_or_else(|| bad(format!("tensor '{name}' without a shape")))?
                    .iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| bad(format!("tensor '{name}': bad shape")))?;
                Ok(AotIo {
                    name: name.to_string(),
                    dtype,
                    shape,
                })
            })
            .collect()
    };
    let arena = v["arena_size"]
        .as_u64()
        .and_then(|a| usize::try_from(a).ok())
        .ok_or_else(|| bad("no arena_size".into()))?;
    Ok((tensors("inputs")?, tensors("outputs")?, arena))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    std::fs::write(path, bytes).map_err(|source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The C compiler and target flags for `triple`: `cc` if given, else
/// `CC_<triple>` / `CC_<triple_with_underscores>`, `TARGET_CC`, `CC` (host
/// builds only), else a conventional name for the triples kiln targets.
fn cc_command(cc: Option<&Path>, triple: &str) -> Result<Command, BuildError> {
    let host = std::env::var("HOST").ok();
    let from_env = [
        format!("CC_{triple}"),
        format!("CC_{}", triple.replace('-', "_")),
        "TARGET_CC".into(),
    ]
    .into_iter()
    .chain(
        host.as_deref()
            .filter(|h| *h == triple)
            .map(|_| "CC".to_string()),
    )
    .find_map(|v| std::env::var_os(v).filter(|s| !s.is_empty()));
    let flags: &[&str] = match triple {
        t if t.starts_with("thumbv7em") && t.ends_with("eabihf") => &[
            "-mthumb",
            "-mcpu=cortex-m4",
            "-mfloat-abi=hard",
            "-mfpu=fpv4-sp-d16",
        ],
        t if t.starts_with("thumbv7em") => &["-mthumb", "-mcpu=cortex-m4", "-mfloat-abi=soft"],
        t if t.starts_with("thumbv7m") => &["-mthumb", "-mcpu=cortex-m3"],
        t if t.starts_with("thumbv6m") => &["-mthumb", "-mcpu=cortex-m0"],
        t if t.starts_with("thumbv8m.main") && t.ends_with("eabihf") => &[
            "-mthumb",
            "-mcpu=cortex-m33",
            "-mfloat-abi=hard",
            "-mfpu=fpv5-sp-d16",
        ],
        t if t.starts_with("thumbv8m.main") => &["-mthumb", "-mcpu=cortex-m33"],
        _ => &["-fPIC"],
    };
    let program = match (cc, from_env) {
        (Some(c), _) => c.as_os_str().to_owned(),
        (None, Some(c)) => c,
        (None, None) => {
            let guess = if host.as_deref() == Some(triple)
                || host.is_none() && triple.starts_with(std::env::consts::ARCH)
            {
                "cc".to_string()
            } else if triple.starts_with("thumb") {
                "arm-none-eabi-gcc".to_string()
            } else if let Some(arch) = triple.strip_suffix("-unknown-linux-gnu") {
                format!("{arch}-linux-gnu-gcc")
            } else {
                return Err(BuildError::NoCompiler(
                    triple.into(),
                    triple.replace('-', "_"),
                ));
            };
            guess.into()
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(flags);
    Ok(cmd)
}

fn run_cc(
    mut cmd: Command,
    source: &Path,
    object: &Path,
    include: &Path,
) -> Result<(), BuildError> {
    cmd.args([
        "-std=c99",
        "-O2",
        "-ffunction-sections",
        "-fdata-sections",
        "-c",
        "-I",
    ])
    .arg(include)
    .arg(source)
    .arg("-o")
    .arg(object);
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| BuildError::Cc {
        cmd: shown.clone(),
        msg: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(BuildError::Cc {
            cmd: shown,
            msg: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(())
}
