//! Rebuilds the crate when a migration is added or changed: `embed_migrations!` reads the
//! `migrations/` folders at compile time, and cargo does not otherwise know it depends on them
//! (diesel_migrations' documented build script).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
