//! cli (being written by the lead)
pub fn main() -> i32 { 0 }
