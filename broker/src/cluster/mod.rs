//! The cluster (being built; see ARCHITECTURE.md "Cluster"). So far: the
//! replicated metadata log's consensus core, sans-IO (`metalog`).

pub mod admin;
pub mod journal;
pub mod metalog;
pub mod node;
pub mod replica;
pub mod state;
