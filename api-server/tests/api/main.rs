//! HTTP-level tests of the api-server, each run on PostgreSQL and on SQLite.

mod auth;
mod common;
mod errors;
mod first_run;
mod openapi;
mod projects;
mod queue;
mod release;
mod review;
mod settings;
mod startup;
mod worker;
