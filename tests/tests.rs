//! The one integration-test root: every test starts a real server on 127.0.0.1 (port 0) and
//! talks real TCP to it. Themed modules below; shared helpers in `support`.

#![allow(unreachable_pub)] // modules of a test binary: `pub` only shares between them

mod support;

mod access;
mod activation;
mod admin;
mod admin_hostile;
mod balance;
mod balance_grouping;
mod balance_hostile;
mod balance_modes;

mod bench;
mod bench_accounting;
mod bench_chat;
mod bench_faults;
mod bench_fleet;
mod bench_fleet_nats;
mod bench_framings;
mod bench_handshakes;
mod bench_protocols;
mod bench_timeline;
mod bench_udp;
mod bench_udp_faults;
mod bench_udp_files;
mod book;
mod chat;
mod chat_pressure;
mod cli;
mod cluster;
mod cluster_haproxy;
mod cluster_history;
mod cluster_secure;
mod cluster_three;
mod cluster_view;
mod concurrency;
mod console;
mod faults;
mod faults_relay;
mod friction;
mod handover;
mod hardening;
mod limits;
mod listen;
mod logs;
mod output;
mod proxy;
mod reuse_port;
mod sched;
mod scripts;
mod seed;
mod shutdown;
mod talk;
mod talk_udp;
mod tls;
mod tls_faults;
mod tls_interop;
mod tls_probe;
mod tls_rate;
mod tls_reload;
mod udp;
mod udp_faults;
mod udp_manual;
mod udp_serve;
mod udp_sockperf;
mod wire;
