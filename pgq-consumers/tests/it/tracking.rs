//! Remote batch tracking.
