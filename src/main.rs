//! meshcast command-line entry point.

fn main() {}
