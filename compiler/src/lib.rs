//! kiln's compiler: frontends, graph passes, lowering to kernel IR, the graph
//! executor behind `kiln run`, and tensor file I/O. The `kiln` binary is a thin
//! CLI over this library.

pub mod aot;
pub mod compile;
pub mod exec;
pub mod frontend;
pub mod io;
pub mod lower;
pub mod native;
pub mod passes;
