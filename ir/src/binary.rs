//! kiln's binary form (written by the binary-format work).
