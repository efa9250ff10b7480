//! kiln's text form (written by the text-format work).
