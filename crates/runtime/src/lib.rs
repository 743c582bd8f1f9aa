//! The runtime side of a deploy: content arrives from the registry into a
//! content-addressed [`cache`], verified byte by byte; layers are [`unpack`]ed into a
//! root filesystem without ever writing outside it; [`pull`] ties the two to the
//! registry client, and [`proofs`] let a project use cached content only once the
//! registry proved it serves that content to the project's own credentials.
//! [`runc`] runs an unpacked image with what its service sets over it
//! ([`settings`]: environment, secrets, command, a [`volume`]). An [`estargz`]
//! layer is read in place, each chunk fetched by `Range` and verified, and an
//! image of such layers starts [`lazy`]ly, before its layers are downloaded.

pub mod cache;
pub mod durable;
pub mod estargz;
pub mod lazy;
pub mod log;
pub mod network;
pub mod proofs;
pub mod pull;
pub mod rootfs;
pub mod run_dir;
pub mod runc;
pub mod sandbox;
pub mod settings;
pub mod unpack;
pub mod volume;
