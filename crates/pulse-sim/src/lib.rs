//! `pulse sim`: a faithful, deterministic local stand-in for the Facebook Graph API's Page Insights.
//!
//! No machine here reaches Meta, and no deployment's tests should. The simulator serves the part of the Graph API we
//! use, in Meta's shapes (see `pulse-graph`), over a synthetic world generated from a scenario file and a seed:
//!
//! - [`scenario`]: the TOML scenario format, and the bundled `case-study`, `current` and `national` scenarios;
//! - [`world`]: tenants, practices, pages, posts, campaigns, events and every page's true daily series, generated
//!   lazily from (seed, page, day);
//! - [`api`]: requests to responses (insights, posts, post insights, page fields, debug_token, batch), errors with
//!   Meta's codes, usage headers, paging;
//! - [`faults`]: throttling, transient errors, slow and broken bodies, dying tokens, permission errors, an empty page
//!   with `next`, a metric retired mid-run;
//! - [`login`]: Facebook Login (the consent dialog, code and long-lived token exchanges, `/me/accounts`,
//!   `/me/permissions`, `debug_token` of the tokens it issues, tokens that die and data access that lapses);
//! - [`truth`]: what was injected, for tests of the pipelines;
//! - [`server`]: the HTTP server.

pub mod api;
pub mod faults;
pub mod login;
pub mod rng;
pub mod scenario;
pub mod server;
pub mod truth;
pub mod world;

pub use api::{Request, Response, Sim};
pub use scenario::{Scenario, ScenarioError};
pub use server::{RunningSim, serve, start};
pub use world::{PageLogin, World};
