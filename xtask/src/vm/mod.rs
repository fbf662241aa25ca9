//! `cargo xtask vm` / `cargo xtask demo`: placeholder until the harness lands.
pub fn main(_args: &[String]) -> crate::Result {
    Err("not implemented yet".into())
}
pub fn demo(_args: &[String]) -> crate::Result {
    Err("not implemented yet".into())
}
