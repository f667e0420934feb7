//! HTTP serving behaviour shared by SoulBox's two HTTP servers: the API and proxy (`soulbox-server`) and the agent
//! in every sandbox (`soulbox-envd`). Nothing here knows E2B's wire shapes; those live in `soulbox-protocol`.

pub mod linger;

pub use linger::linger_on_unread_body;
