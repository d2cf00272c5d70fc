//! Executors: how a tool's run is carried out. `builtin` holds the analyses compiled into
//! jobgraph, so the default tools do real work with no external programs.

pub mod builtin;
