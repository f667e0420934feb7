//! The processes envd started, addressable by pid or tag.

#[derive(Default)]
pub struct ProcessRegistry {}
