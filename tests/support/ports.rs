//! Free TCP ports for the processes a test starts.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// A port that was free a moment ago and that this test binary has not handed out before:
/// the kernel can return a just-released ephemeral port again, and two listeners of one
/// test given the same port fail with "Address already in use".
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}
