//! A minimal iperf: `tcpblast server PORT` accepts connections forever and, for each, reads
//! to EOF and answers the byte count (8 bytes, big endian); `tcpblast client ADDR:PORT MIB`
//! sends MIB mebibytes, half-closes, waits for the count and prints
//! `<bytes> <seconds> <MiB/s>`. The time covers delivery: it ends when the server has read
//! everything. Built static (`rustc -O -C target-feature=+crt-static`) so it runs in a
//! FROM-scratch image.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

const BUF: usize = 256 * 1024;

fn server(port: &str) {
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).expect("bind");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; BUF];
            let mut total: u64 = 0;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&total.to_be_bytes());
        });
    }
}

fn client(addr: &str, mib: u64) {
    let buf = vec![0x5au8; BUF];
    let want = mib << 20;
    let mut s = TcpStream::connect(addr).expect("connect");
    let start = Instant::now();
    let mut sent: u64 = 0;
    while sent < want {
        let n = ((want - sent) as usize).min(BUF);
        s.write_all(&buf[..n]).expect("write");
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut count = [0u8; 8];
    s.read_exact(&mut count).expect("read the server's count");
    let secs = start.elapsed().as_secs_f64();
    let got = u64::from_be_bytes(count);
    assert_eq!(got, want, "server received {got} of {want} bytes");
    println!("{got} {secs:.6} {:.1}", got as f64 / secs / (1u64 << 20) as f64);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => server(args.get(2).map(String::as_str).unwrap_or("5001")),
        Some("client") if args.len() == 4 => client(&args[2], args[3].parse().expect("MIB")),
        _ => {
            eprintln!("usage: tcpblast server PORT | tcpblast client ADDR:PORT MIB");
            std::process::exit(2);
        }
    }
}
