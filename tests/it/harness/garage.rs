//! A throw-away Garage (an S3-compatible object store written in Rust) for one test: one node
//! on loopback, sqlite metadata, one bucket and one key with read/write on it.
//!
//! The server is our own child: [`Garage::kill`] SIGKILLs it (an outage, or an upload cut
//! mid-way) and [`Garage::restart`] starts it again on the same ports and data. Dropping it
//! kills it and removes its directory. A missing `garage` binary panics with the install hint.

use std::fs::OpenOptions;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};

use super::process::{self, kill_and_reap, run_with_timeout};

const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const GARAGE_INSTALL_HINT: &str = "install it: cargo install garage --locked (about 8 minutes; \
     .ci/deps does it), or set ATPRED_GARAGE to the binary";
pub const BUCKET: &str = "atpred-test";
pub const REGION: &str = "garage";

pub struct Garage {
    dir: tempfile::TempDir,
    binary: PathBuf,
    child: Option<Child>,
    pub s3_port: u16,
    pub key_id: String,
    pub secret: String,
}

/// The garage binary: `$ATPRED_GARAGE`, then PATH, then cargo's bin directory.
pub fn locate_garage() -> PathBuf {
    let candidates = [
        std::env::var_os("ATPRED_GARAGE").map(PathBuf::from),
        process::find_in_path("garage"),
        std::env::var_os("CARGO_HOME")
            .map(|h| PathBuf::from(h).join("bin/garage"))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage"))
            }),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| process::is_executable(p))
        .unwrap_or_else(|| panic!("garage (S3-compatible server) not found; {GARAGE_INSTALL_HINT}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Garage {
    pub fn start() -> Garage {
        let binary = locate_garage();
        let dir = tempfile::Builder::new()
            .prefix("atpred-garage-")
            .tempdir_in("/tmp")
            .expect("create the Garage directory under /tmp");
        let (rpc_port, s3_port) = (free_port(), free_port());
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n"
            ),
        )
        .expect("write garage.toml");
        let mut g = Garage {
            dir,
            binary,
            child: None,
            s3_port,
            key_id: String::new(),
            secret: String::new(),
        };
        g.spawn();
        let node = g.cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap_or_default().to_owned();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["bucket", "create", BUCKET]);
        let key = g.cli(&["key", "create", "atpred-test-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix(name)
                        .map(|v| v.trim_start_matches(':').trim().to_owned())
                })
                .unwrap_or_else(|| panic!("no {name:?} in `garage key create`:\n{key}"))
        };
        g.key_id = field("Key ID");
        g.secret = field("Secret key");
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            "atpred-test-key",
        ]);
        g
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .expect("open garage.log");
        let log2 = log.try_clone().expect("clone the log handle");
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.config())
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        let ready = super::wait_until(START_TIMEOUT, || {
            child.try_wait().ok().flatten().is_some()
                || (TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok()
                    && self.try_cli(&["status"]).is_ok())
        });
        if let Ok(Some(status)) = child.try_wait() {
            panic!("garage exited during startup ({status}):\n{}", self.log());
        }
        if !ready {
            kill_and_reap(&mut child);
            panic!("garage not ready within {START_TIMEOUT:?}:\n{}", self.log());
        }
        self.child = Some(child);
    }

    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = run_with_timeout(
            Command::new(&self.binary)
                .arg("-c")
                .arg(self.config())
                .args(args),
            Duration::from_secs(30),
        );
        if out.status == 0 {
            Ok(out.stdout)
        } else {
            Err(format!("garage {args:?}: {}{}", out.stdout, out.stderr))
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// SIGKILLs the server: the target is down, and any upload in flight is cut.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// Starts the server again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server's pid, to freeze it with SIGSTOP.
    pub fn pid(&self) -> nix::unistd::Pid {
        process::pid_of(self.child.as_ref().expect("garage is running"))
    }

    /// An AWS-format credentials file for the test key in `dir` (mode 0600).
    pub fn credentials_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("s3.credentials");
        std::fs::write(
            &path,
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                self.key_id, self.secret
            ),
        )
        .expect("write the credentials file");
        super::set_mode(&path, 0o600);
        path
    }

    /// An `[offsite.NAME]` table for this server, with `extra` lines appended.
    pub fn offsite_toml(
        &self,
        name: &str,
        credentials: &Path,
        prefix: &str,
        extra: &str,
    ) -> String {
        format!(
            "[offsite.{name}]\nendpoint = \"{}\"\nregion = \"{REGION}\"\nbucket = \"{BUCKET}\"\n\
             prefix = \"{prefix}\"\npath-style = true\ncredentials-file = \"{}\"\n{extra}\n",
            self.endpoint(),
            credentials.display()
        )
    }

    /// A client of our own, to look at and tamper with what atpred stored.
    pub fn store(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region(REGION)
            .with_bucket_name(BUCKET)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("an S3 client for the test server")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `fut` on a runtime of its own (the tests are synchronous).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(fut)
}
