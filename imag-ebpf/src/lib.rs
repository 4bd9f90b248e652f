//! The eBPF programs live in the `imag` binary target (`src/main.rs`); this library target only
//! exists so that the agent can name this crate as a build dependency and be rebuilt with it.
#![no_std]
