//! Loading and saving models for the commands, by file extension.

use anyhow::{bail, Context, Result};
use kiln_ir::Model;
use std::path::Path;

/// Loads `.onnx`, `.kiln` or `.kilnb`.
pub fn load(path: &Path) -> Result<Model> {
    tracing::info!("loading {}", path.display());
    kiln_compiler::frontend::load_model(path)
        .with_context(|| format!("failed to load '{}'", path.display()))
}

/// Runs the graph passes every command sees the model through.
pub fn simplify(model: &mut Model) -> Result<()> {
    let before: usize = model.op_histogram().values().sum();
    kiln_compiler::passes::simplify(model).context("simplifying the model")?;
    let after: usize = model.op_histogram().values().sum();
    tracing::info!("simplified: {before} nodes -> {after}");
    Ok(())
}

/// Writes kiln's text (`.kiln`) or binary (`.kilnb`) form, chosen by `path`'s extension.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    let bytes: Vec<u8> = match path.extension().and_then(|e| e.to_str()) {
        Some("kiln") => kiln_ir::text::print(model).into_bytes(),
        Some("kilnb") => kiln_ir::binary::encode(model),
        Some("onnx") => bail!("writing ONNX is not supported; convert to .kiln or .kilnb"),
        _ => bail!(
            "'{}': unknown output format (expected a .kiln or .kilnb file name)",
            path.display()
        ),
    };
    std::fs::write(path, bytes).with_context(|| format!("cannot write '{}'", path.display()))
}
