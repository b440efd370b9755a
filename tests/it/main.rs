//! Integration tests: one binary, a module per area. They run the `meshcast`
//! binary as a user would, and compare it with the reference implementations
//! in `tests/interop/` (kubo, Helia, the JS `ipns` package, Chromium) and
//! the publishers (Debian's ffmpeg, and ffmpeg 9 from the `imageio-ffmpeg`
//! wheel for Enhanced RTMP), which `scripts/test` installs: a missing
//! reference tool fails the tests rather than skipping them.

mod add_interop;
mod badlink;
mod bitswap_interop;
mod crash;
mod dashboard;
mod first_run;
mod fulldisk;
mod gateway_e2e;
mod gateway_hostile;
mod ingest_codecs;
mod ingest_hostile;
mod ipns_interop;
mod ipns_peers;
mod live;
mod llhls;
mod mdns;
mod media_timing;
mod mesh;
mod metrics;
mod mirror;
mod naming;
mod p2p_node;
mod pi;
mod player;
mod providers;
mod store_cli;
mod support;
mod verified_fetch;
mod yggdrasil;
