//! The processes envd started: one [`handle::ProcessHandle`] per process (its input queue and output
//! [`fanout::Fanout`]), kept in the [`registry::ProcessRegistry`] that the agent's state owns. The `process`
//! service starts and supervises them; this table only knows what is running and how to reach it.

pub mod fanout;
pub mod handle;
pub mod registry;

pub use registry::ProcessRegistry;
