//! The Rust client (being written).
