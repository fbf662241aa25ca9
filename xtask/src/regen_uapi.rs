//! `cargo xtask regen-uapi`: placeholder until the generator lands.
pub fn main(_args: &[String]) -> crate::Result {
    Err("not implemented yet".into())
}
