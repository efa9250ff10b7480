//! Graph passes that canonicalise a model before lowering: what every backend
//! wants done once. `simplify` runs them to a fixed point:
//!
//! - identity removal (Identity, and Dropout, which the frontend maps to Identity),
//! - specialisation of ops whose parameter inputs became constant,
//! - shape folding (`Shape`/`Size` of statically shaped values become constants),
//! - constant folding, which evaluates nodes through the same lowering and
//!   interpreter as `kiln run` (no op is computed a second way here),
//! - BatchNorm folded into the Conv that feeds it, and so is a per-channel
//!   Mul or Add after a Conv (BatchNorm as TensorFlow exports write it),
//! - common-subexpression elimination and dead-code elimination.
//!
//! `optimize` is `simplify` followed by the passes that pick how the model
//! runs rather than what it computes: operator fusion ([`fuse`]). The
//! ahead-of-time path and `kiln inspect --after-passes` use it. `kiln run`
//! does not: its executor runs one node at a time on the interpreter,
//! specialising shapes on the values it is given, so a fused group would buy
//! nothing there (it runs a `fused` node through its body if given one).

mod affine;
mod fold;
mod fuse;
mod rewrite;

use kiln_ir::Model;
use thiserror::Error;

pub use affine::fold_channel_affine_into_conv;
pub use fold::{fold_constants, fold_shapes, reinfer_types};
pub use fuse::{fuse, fused_patterns};
pub use rewrite::{
    count_uses, cse, dce, fold_batchnorm_into_conv, remove_identities, replace_uses,
};

#[derive(Debug, Error)]
pub enum PassError {
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
}

/// Runs the canonicalisation passes until nothing changes.
pub fn simplify(model: &mut Model) -> Result<(), PassError> {
    for _ in 0..16 {
        let mut changed = false;
        changed |= remove_identities(model);
        changed |= fold_shapes(model);
        changed |= fold_constants(model)?;
        changed |= fold_batchnorm_into_conv(model)?;
        changed |= fold_channel_affine_into_conv(model)?;
        changed |= cse(model);
        changed |= dce(model);
        if !changed {
            break;
        }
    }
    Ok(())
}

/// Canonicalises the model, then fuses operators. The result computes the
/// same values as the simplified model, within floating-point rounding (a
/// fused group keeps each member's arithmetic, only no longer rounding its
/// intermediate values to memory in between).
pub fn optimize(model: &mut Model) -> Result<(), PassError> {
    simplify(model)?;
    fuse(model)?;
    Ok(())
}
