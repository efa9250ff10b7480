//! Renderers from kernel IR to target code (the CPU and firmware backends build here).
//!
//! The compiler produces an [`plan::AotProgram`] (lowered nodes plus a memory
//! plan); the renderers here turn it into source code without depending on
//! the compiler, so the data flows one way: compiler → targets.

pub mod c;
pub mod cpu;
pub mod header;
pub mod plan;
