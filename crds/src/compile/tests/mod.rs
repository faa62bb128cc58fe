//! Unit tests of `compile()`, one file per kind of resource plus the properties of the whole
//! (determinism, secrecy, metadata checks). Resource builders are in [`fixtures`], the world
//! they are compiled in and lookups into the output in [`world`].
//!
//! These tests exercise the public `compile()` only, never a submodule directly, so the
//! submodules can be reshaped without rewriting them.

mod budgets;
mod fixtures;
mod general;
mod prices;
mod providers;
mod services;
mod tokens;
mod world;
