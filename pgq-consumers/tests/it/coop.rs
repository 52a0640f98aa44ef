//! Cooperative sub-consumers.
