//! Shapes world: seeded synthetic clips, captions and ground-truth tracks.

pub mod caption;
