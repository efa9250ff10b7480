//! `kiln run`: run a model on the reference backend (the kernel-IR
//! interpreter) and write every output as `.npy`.

use super::{model, CmdResult, Failure};
use anyhow::{anyhow, Context};
use kiln_compiler::{exec, io};
use kiln_ir::{Model, Tensor};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum Backend {
    /// The kernel-IR interpreter, which defines every op's meaning
    #[default]
    Reference,
    /// The code `kiln compile` generates for this machine, compiled in-process
    /// for the given input shapes and run
    Native,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model (.onnx, .kiln or .kilnb)
    pub model: PathBuf,
    /// An input as NAME=FILE, or FILE to bind the next unbound graph input in order
    /// (.npy or ONNX TensorProto .pb)
    #[arg(short, long = "input", value_name = "[NAME=]FILE")]
    pub inputs: Vec<String>,
    /// Directory for the outputs, written as <output name>.npy
    #[arg(short, long = "out-dir", value_name = "OUTDIR")]
    pub out_dir: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    pub backend: Backend,
}

/// One `-i` argument. A spec that names an existing file is a bare file even
/// if it contains '=', so paths with '=' still work.
fn parse_spec(s: &str) -> (Option<&str>, &Path) {
    match s.split_once('=') {
        Some((name, file)) if !Path::new(s).exists() => (Some(name), Path::new(file)),
        _ => (None, Path::new(s)),
    }
}

/// Pairs each graph input with a file: named specs by name, then bare ones in graph order.
pub fn bind_inputs<'a>(m: &Model, specs: &'a [String]) -> Result<Vec<Option<&'a Path>>, Failure> {
    let params = m.inputs();
    let mut bound: Vec<Option<&Path>> = vec![None; params.len()];
    let mut bare = Vec::new();
    for s in specs {
        match parse_spec(s) {
            (Some(name), file) => {
                let i = params
                    .iter()
                    .position(|&p| m.value(p).name == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> =
                            params.iter().map(|&p| m.value(p).name.as_str()).collect();
                        Failure::Usage(format!(
                            "the model has no input named '{name}' (its inputs: {})",
                            names.join(", ")
                        ))
                    })?;
                if bound[i].is_some() {
                    return Err(Failure::Usage(format!("input '{name}' is given twice")));
                }
                bound[i] = Some(file);
            }
            (None, file) => bare.push(file),
        }
    }
    let mut free = (0..params.len())
        .filter(|&i| bound[i].is_none())
        .collect::<Vec<_>>()
        .into_iter();
    for file in bare {
        let i = free.next().ok_or_else(|| {
            Failure::Usage(format!(
                "too many inputs: the model takes {}, '{}' is one too many",
                params.len(),
                file.display()
            ))
        })?;
        bound[i] = Some(file);
    }
    Ok(bound)
}

/// Output file name: the value name with every char outside `[A-Za-z0-9._-]` replaced by `_`.
pub fn output_file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        format!("output{s}")
    } else {
        s
    }
}

pub fn main(a: Args) -> CmdResult {
    let t0 = Instant::now();
    let mut m = model::load(&a.model)?;
    model::simplify(&mut m)?;
    let t_load = t0.elapsed();

    let files = bind_inputs(&m, &a.inputs)?;
    let mut inputs = Vec::with_capacity(files.len());
    for (&p, file) in m.inputs().iter().zip(&files) {
        let info = m.value(p);
        let file = file.ok_or_else(|| {
            anyhow!(
                "missing input '{}' ({}); pass it with -i {}=FILE",
                info.name,
                info.ty,
                info.name
            )
        })?;
        let t: Tensor =
            io::read_tensor(file).with_context(|| format!("reading input '{}'", info.name))?;
        tracing::debug!(
            "input '{}' <- {} ({:?} {})",
            info.name,
            file.display(),
            t.shape,
            t.dtype()
        );
        exec::check_input(&m, p, &t).map_err(anyhow::Error::from)?;
        inputs.push(t);
    }

    let t1 = Instant::now();
    let outs = match a.backend {
        Backend::Reference => exec::run_model(&m, inputs).context("running the model")?,
        Backend::Native => kiln_compiler::native::run_native(&m, &inputs)
            .context("running the model on the native backend")?,
    };
    let t_run = t1.elapsed();

    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("cannot create '{}'", a.out_dir.display()))?;
    let mut used = std::collections::HashSet::new();
    for (&v, t) in m.outputs().iter().zip(&outs) {
        let mut name = output_file_name(&m.value(v).name);
        // Distinct outputs may sanitise to the same name; keep both files.
        let base = name.clone();
        let mut k = 1;
        while !used.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        io::write_npy(&a.out_dir.join(format!("{name}.npy")), t).map_err(anyhow::Error::from)?;
    }
    eprintln!(
        "kiln run: loaded in {:.1} ms, ran in {:.1} ms ({:?} backend{}), wrote {} output(s) to {}",
        t_load.as_secs_f64() * 1e3,
        t_run.as_secs_f64() * 1e3,
        a.backend,
        if matches!(a.backend, Backend::Native) {
            ", compile included"
        } else {
            ""
        },
        outs.len(),
        a.out_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitises_names() {
        assert_eq!(output_file_name("out:0/x y"), "out_0_x_y");
        assert_eq!(output_file_name("logits.1-a"), "logits.1-a");
        assert_eq!(output_file_name(".."), "output..");
    }

    #[test]
    fn spec_parsing() {
        assert_eq!(
            parse_spec("x=/tmp/a.npy"),
            (Some("x"), Path::new("/tmp/a.npy"))
        );
        assert_eq!(parse_spec("a.npy"), (None, Path::new("a.npy")));
    }
}
