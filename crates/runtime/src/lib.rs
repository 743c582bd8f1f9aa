//! The runtime side of a deploy: content arrives from the registry into a
//! content-addressed [`cache`], verified byte by byte; layers are [`unpack`]ed into a
//! root filesystem without ever writing outside it; [`pull`] ties the two to the
//! registry client.

pub mod cache;
pub mod durable;
pub mod pull;
pub mod rootfs;
pub mod runc;
pub mod unpack;
