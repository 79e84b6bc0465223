//! The provider seam: where cloud (or local VM) resources are created and removed.
pub mod aws;
