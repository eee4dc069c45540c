//! Checked little-endian access to guest memory (skeleton).
