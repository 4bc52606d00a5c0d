//! BHR, the "Black Hole Router" block registry, and its HTTP API.
//!
//! * [`registry`]: BHR's data and rules in memory, time as an argument, no I/O.
//! * [`model`]: the records and settings.
//! * [`duration`]: BHR's duration syntax.

pub mod duration;
pub mod model;
pub mod registry;
