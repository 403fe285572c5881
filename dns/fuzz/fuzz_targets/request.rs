//! Fuzzes the DNS request path (bytes -> parse -> handler -> encoded answer) over a small
//! fixed catalog; `dns::packet::check_packet` panics on any violation. Run from `dns/`:
//! `cargo +nightly fuzz run request` (cargo-fuzz). `dns/tests/malformed.rs` runs the same
//! check over thousands of generated packets on stable, in CI.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (tokio::runtime::Runtime, dns::Handler) {
    static S: OnceLock<(tokio::runtime::Runtime, dns::Handler)> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (rt, dns::packet::sample_handler())
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, handler) = setup();
    rt.block_on(dns::packet::check_packet(handler, data));
});
