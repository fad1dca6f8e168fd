//! A manager server on TCP, for clients in other programs (see `manager_client`).
//!
//! ```text
//! cargo run --example manager_server -- [ADDRESS] KEY_FILE
//! ```
//!
//! Listens on ADDRESS (default `127.0.0.1:0`, a free port on the loopback interface), writes a
//! fresh random key as hex into KEY_FILE (created with mode 0600; it must not exist), prints
//! `listening on HOST:PORT`, and serves until its standard input is closed (Ctrl-D). The key
//! goes through a file only you can read, never through a command line.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use multiproc::{AuthKey, Manager, ManagerAddress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (address, key_file) = match args.as_slice() {
        [key_file] => (ManagerAddress::localhost(), key_file),
        [address, key_file] => (address.parse()?, key_file),
        _ => return Err("usage: manager_server [ADDRESS] KEY_FILE".into()),
    };
    let key = AuthKey::random()?;
    let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_file)?
        .write_all(hex.as_bytes())?;

    let manager = Manager::listen(address, key)?;
    println!("listening on {}", manager.address());
    std::io::stdout().flush()?;

    // Serve until standard input ends.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    manager.shutdown()?;
    Ok(())
}
