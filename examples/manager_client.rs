//! A client of `manager_server`, in another program: connects over TCP with the key from a
//! file, and uses a dict, a queue and a lock that live in the server.
//!
//! ```text
//! cargo run --example manager_server -- /tmp/key      # prints: listening on 127.0.0.1:PORT
//! cargo run --example manager_client -- 127.0.0.1:PORT /tmp/key
//! ```
//!
//! Or, unattended: `cargo run --example manager_client -- --spawn-server [SERVER_BINARY]`
//! starts the server binary itself (by default `manager_server` beside this one), talks to
//! it, and stops it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use multiproc::{AuthKey, Manager, ManagerAddress};

fn read_key(path: &str) -> Result<AuthKey, Box<dyn std::error::Error>> {
    let hex = std::fs::read_to_string(path)?;
    let hex = hex.trim();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(AuthKey::from_bytes(&bytes)?)
}

fn use_manager(address: &ManagerAddress, key: &AuthKey) -> Result<(), Box<dyn std::error::Error>> {
    let m = Manager::connect(address, key)?;
    let dict = m.dict::<String, u64>()?;
    for _ in 0..1000 {
        dict.update_with(&"counter".into(), |v| v.unwrap_or(0) + 1)?;
    }
    println!("counter = {}", dict.get(&"counter".into())?.unwrap_or(0));

    let queue = m.queue::<String>(Some(4))?;
    queue.put(&"over tcp".into())?;
    println!(
        "queue gave {:?}",
        queue.get_timeout(Duration::from_secs(5))?
    );

    let lock = m.lock()?;
    {
        let _held = lock.acquire()?;
        println!("lock held: {}", lock.is_locked()?);
    }

    // A wrong key is refused before any request.
    let wrong = AuthKey::random()?;
    let refused = Manager::connect(address, &wrong).err().map(|e| e.kind());
    println!("a wrong key: {refused:?}");
    Ok(())
}

fn spawn_server(binary: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let mut r = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut r))?;
    let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("manager-example-{name}"));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let key_file = dir.join("key");
    let mut server = Command::new(&binary)
        .arg(&key_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let stdout = server.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address: ManagerAddress = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected line from the server: {line:?}"))?
            .parse()?;
        let key = read_key(key_file.to_str().ok_or("path")?)?;
        use_manager(&address, &key)
    })();
    // Closing its standard input stops the server.
    if let Some(mut stdin) = server.stdin.take() {
        let _ = stdin.flush();
    }
    let status = server.wait()?;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    if !status.success() {
        return Err(format!("the server exited with {status}").into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, rest @ ..] if flag == "--spawn-server" => {
            let binary = match rest {
                [path] => PathBuf::from(path),
                [] => std::env::current_exe()?.with_file_name("manager_server"),
                _ => return Err("usage: manager_client --spawn-server [SERVER_BINARY]".into()),
            };
            spawn_server(binary)
        }
        [address, key_file] => use_manager(&address.parse()?, &read_key(key_file)?),
        _ => Err("usage: manager_client ADDRESS KEY_FILE | --spawn-server [SERVER_BINARY]".into()),
    }
}
