//! Test fixtures shared by the uprox crates' tests.
