//! Review loop benchmark (being written).
fn main() {}
