//! The media blob store (`store`, an `object_store` backend) and the rules on types, sizes and
//! names it enforces (`model`). Attachment rows, operations and routes are the `media` feature.

pub mod blobs;
pub mod model;

pub use blobs::MediaStore;
