//! Every integration test, in one binary: one compile of the shared
//! helpers (`tests/common`) and one link, instead of one per file. Each
//! file below is a module and opens with a `//!` paragraph saying what it
//! proves; run one with `cargo test --test it <file>::`.

#[path = "../common/mod.rs"]
mod common;

mod batch_http;
mod caddy_gateway;
mod conformance;
mod consistency;
mod control_plane_rules;
mod declined_writes;
mod docs_links;
mod docs_sessions;
mod dsse_interop;
mod embedded;
mod envoy_gateway;
mod ext_authz_grpc;
mod file_source;
mod fleet_http;
mod fleet_redis;
mod fleet_routine;
mod forward_auth;
mod function_lengths;
mod fuzz_inputs;
mod haproxy_gateway;
mod helm_chart;
mod http2;
mod http_sync;
mod introspection_http;
mod kubernetes_manifests;
mod last_known_good;
mod layers;
mod limits;
mod model_based;
mod nginx_gateway;
mod openapi;
mod operator_commands;
mod operator_plane;
mod prometheus;
mod protocol_examples;
mod publish_fence;
mod redis_cluster;
mod redis_data_loss;
mod redis_deployments;
mod redis_following;
mod redis_publish;
mod redis_sentinel;
mod redis_signed;
mod redis_source;
mod resolve_http;
mod scheduled_cutovers;
mod shutdown;
mod signatures_switch;
mod signed_documents;
mod soak;
mod trust_attacks;
mod trust_model;
mod wire_http1;
