// `sqlx::migrate!` embeds ./migrations at compile time, but on stable Rust it cannot tell cargo to watch that
// directory: without this a new migration file alone would not rebuild the crate (sqlx's documented remedy).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
