//! Compose files as configuration.
mod yaml;
