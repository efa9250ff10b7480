//! The runtime that links with kiln's generated code. `no_std` so that it fits firmware.
#![no_std]
