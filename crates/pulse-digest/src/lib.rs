//! Weekly digests and the daemon that sends them: everything `pulse run` and `pulse digest` need that the analyst
//! service does not (the SMTP client and the PNG rasteriser live here, so the server never links them).
//!
//! - [`digest`]: one tenant's week against the week before and a year earlier, its disclosure-controlled figures,
//!   rendered as text and HTML with charts;
//! - [`raster`]: SVG charts to PNG for mail clients that do not draw SVG;
//! - [`mail`]: the MIME message and the SMTP client;
//! - [`delivery`]: sending a list's digest for a week at most once per recipient, under the list's lease;
//! - [`daemon`]: the scheduler daemon, running the schedules of [`pulse_app::scheduler`].

pub mod daemon;
pub mod delivery;
pub mod digest;
pub mod mail;
pub mod raster;
pub mod render;
