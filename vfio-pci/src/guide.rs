//! Writing a driver (placeholder).
