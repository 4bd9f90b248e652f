//! Compose files as configuration.
mod yaml;
mod interpolate;
mod address;
