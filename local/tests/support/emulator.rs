//! Emulator processes for tests (shared by the test crates through `#[path]`): started on a free loopback port in a process group of their
//! own, stopped (with every process they started) by that group's id when dropped.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A program installed by `scripts/test.sh` in a venv under `~/.cache/pixpress`, or the path in
/// `env_var` when set. Panics, naming the script, when it is missing.
pub fn venv_program(env_var: &str, venv: &str, program: &str) -> PathBuf {
    let path = std::env::var_os(env_var).map_or_else(
        || {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/pixpress")
                .join(venv)
                .join("bin")
                .join(program)
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} not found: run the tests with scripts/test.sh, which installs it (or set {env_var})",
        path.display()
    );
    path
}

/// A command running `program` that ends by itself after 15 minutes (coreutils `timeout`), so
/// an emulator outlives a test killed before its `Drop` runs by minutes, not forever.
pub fn bounded(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("timeout");
    command.args(["--kill-after=5", "900"]).arg(program);
    command
}

/// moto server (`scripts/test.sh` installs it) on a free loopback port. The port is free when
/// picked but moto needs a second or two to bind it, and another test's server may take it in
/// between: moto is only trusted once it answers its own API, and a moto that lost its port is
/// started again on another.
pub fn start_moto() -> (Emulator, String) {
    let binary = venv_program("MOTO_SERVER", "emulator-venv", "moto_server");
    for _ in 0..3 {
        let port = free_port();
        let mut command = bounded(&binary);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut emulator = Emulator::start(command, port, None);
        if emulator.answers(port, "/moto-api/data.json") {
            return (emulator, format!("http://127.0.0.1:{port}"));
        }
    }
    panic!("moto server did not come up on any of three ports");
}

/// A running emulator.
pub struct Emulator {
    child: Child,
}

impl Emulator {
    /// Spawns `command` (which must listen on `port`) and waits up to 60 s for the port.
    pub fn start(mut command: Command, port: u16, log: Option<PathBuf>) -> Self {
        let output = || match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let child = command
            .stdout(output())
            .stderr(output())
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let emulator = Self { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "emulator did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        emulator
    }
}

impl Emulator {
    /// `true` once `GET path` on `port` answers 200 while this emulator's process still runs;
    /// `false` when the process exits first (it lost its port) or after 60 s.
    pub fn answers(&mut self, port: u16, path: &str) -> bool {
        use std::io::{Read as _, Write as _};
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut head = [0u8; 12];
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_exact(&mut head).is_ok()
                    && head.ends_with(b"200")
                {
                    return matches!(self.child.try_wait(), Ok(None));
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // The whole group: the emulator and the Lambda processes it spawned.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
