//! One module per command group; each turns parsed flags into admin calls and the answers
//! into a [`Render`] value.
//! (`gwctl dev` is not here: it runs servers rather than calling them; see the `dev` module.)

pub mod apply;
pub mod cert;
pub mod completions;
pub mod consumer;
mod deleted;
pub mod health;
pub mod jwt;
pub mod nodes;
pub mod policy;
pub mod service;
pub mod stats;

pub use deleted::Deleted;
