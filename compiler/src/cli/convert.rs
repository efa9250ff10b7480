//! `kiln convert`: ONNX to kiln's own forms, and between text and binary.

use super::{model, CmdResult};
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model to convert (.onnx, .kiln or .kilnb)
    pub model: PathBuf,
    /// Where to write it; .kiln writes the text form, .kilnb the binary form
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
}

pub fn main(a: Args) -> CmdResult {
    let m = model::load(&a.model)?;
    model::save(&m, &a.output).with_context(|| format!("converting '{}'", a.model.display()))?;
    Ok(())
}
