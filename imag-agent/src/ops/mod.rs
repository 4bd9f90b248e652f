//! The operator's surface: `/metrics`, the control socket and the status table. Everything here
//! reads what the orchestrator publishes ([`crate::report::Snapshot`] on a `watch` channel) and
//! sends commands in as [`crate::orchestrator::Input`]s; nothing below imports it.

pub mod control;
pub mod metrics;
pub mod table;
