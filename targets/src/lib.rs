//! Renderers from kernel IR to target code (the CPU and firmware backends build here).
