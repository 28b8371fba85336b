//! The Graph API surface we use, in Meta's exact shapes, shared by the simulator (which writes them) and the
//! ingester's client (which reads them), so the two cannot drift apart.
//!
//! - [`wire`]: response bodies (insights, posts, page fields, debug_token, batch) and error bodies.
//! - [`errors`]: what to do about each error code, decided in one place that tests can read without a network.
//! - [`appsecret_proof`]: the HMAC Meta requires when an app enables it.
//! - [`usage`]: the `x-app-usage` / `x-business-use-case-usage` headers.

pub mod errors;
mod proof;
pub mod usage;
pub mod wire;

pub use errors::{ErrorClass, classify};
pub use proof::appsecret_proof;
pub use usage::Usage;
pub use wire::{GraphError, GraphErrorBody};
