//! Authentication of clients: JWT verification (`jwt`), its keys (`jws`), JWKS fetching
//! (`jwks`) and the cache of verified tokens (`cache`).

pub mod cache;
pub mod jwks;
pub mod jws;
pub mod jwt;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
