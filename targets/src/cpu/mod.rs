pub(crate) mod math;
