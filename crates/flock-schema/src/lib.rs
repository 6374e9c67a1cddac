//! Flock's declared artifact types: a type name and the JSON Schema of its payload, compiled
//! once, and the check of a payload against it with the failing path named.
#![doc = include_str!("../README.md")]

mod types;

pub use types::{TypeDeclaration, TypeSchemas};
