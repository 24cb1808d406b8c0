//! The drill's private PostgreSQL server on a restored data directory: `postgres` run as the
//! folder's owner by the process module (its own group, ended with the daemon), listening only
//! on a Unix socket in a private folder (`listen_addresses = ''`), trusting local connections
//! through its own `pg_hba.conf` there (only its owner and root can reach the socket), with
//! archiving and streaming from a primary turned off, and `fsync = off`: the copy is thrown
//! away after the checks, so neither the start's walk fsyncing every file of the data
//! directory nor replay's fsyncs buy anything (a crash mid-drill leaves a folder the next
//! drill removes). Its log is its stderr, kept for errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::PostgresConfig;
use crate::process::{self, ProcessError, ProcessOutput, ProcessSpec};

/// The port in the socket's name; nothing listens on TCP.
const PORT: u16 = 5432;
const POLL: Duration = Duration::from_millis(200);

/// A started server.
pub struct Private {
    stop: CancellationToken,
    task: JoinHandle<Result<ProcessOutput, ProcessError>>,
    socket_dir: PathBuf,
}

impl Private {
    /// Starts `postgres` (the binary at `postgres`) on `data`, its socket in `socket_dir`.
    pub fn start(
        postgres: &Path,
        data: &Path,
        socket_dir: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Private, String> {
        let hba = socket_dir.join("pg_hba.conf");
        std::fs::write(&hba, "local all all trust\n")
            .map_err(|e| format!("writing {}: {e}", hba.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&hba, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", hba.display()))?;
        }
        let set = |k: &str, v: &str| ["-c".to_owned(), format!("{k}={v}")];
        let settings: Vec<String> = [
            set("listen_addresses", ""),
            set("unix_socket_directories", &socket_dir.to_string_lossy()),
            set("port", &PORT.to_string()),
            set("hba_file", &hba.to_string_lossy()),
            set("archive_mode", "off"),
            set("fsync", "off"),
            set("primary_conninfo", ""),
            set("ssl", "off"),
            set("logging_collector", "off"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut spec = ProcessSpec::new(postgres)
            .args(settings)
            .args([std::ffi::OsString::from("-D"), data.as_os_str().to_owned()]);
        if let Some((uid, gid)) = owner {
            spec = spec.run_as(uid, gid);
        }
        let running = process::spawn(&spec).map_err(|e| e.to_string())?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move { running.wait(&token, |_, _| {}).await });
        Ok(Private {
            stop,
            task,
            socket_dir: socket_dir.to_owned(),
        })
    }

    /// The connection settings of the server as `user`.
    pub fn server(&self, user: &str, like: &PostgresConfig) -> PostgresConfig {
        PostgresConfig {
            host: self.socket_dir.to_string_lossy().into_owned(),
            port: PORT,
            user: user.to_owned(),
            dbname: "postgres".into(),
            passfile: None,
            bin_dir: like.bin_dir.clone(),
        }
    }

    /// Waits until the server is out of recovery (promoted) and answers queries; the LSN it
    /// replayed to. An error carries the end of the server's log.
    pub async fn promoted(
        &mut self,
        server: &PostgresConfig,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<String, String> {
        let t0 = Instant::now();
        loop {
            if self.task.is_finished() {
                return Err(format!("the server stopped: {}", self.log().await));
            }
            let last = match crate::pg::connect(server, "postgres").await {
                Ok(client) => match client
                    .query_one(
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text",
                        &[],
                    )
                    .await
                {
                    Ok(row) if !row.get::<_, bool>(0) => {
                        return Ok(row.get::<_, Option<String>>(1).unwrap_or_default());
                    }
                    Ok(_) => "still in recovery".to_owned(),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if t0.elapsed() > timeout {
                self.stop().await;
                return Err(format!(
                    "not out of recovery after {} s ({last})",
                    timeout.as_secs()
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = cancel.cancelled() => return Err("cancelled".into()),
            }
        }
    }

    /// Stops the server (SIGTERM to its group, SIGKILL after the grace) and waits for it.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }

    /// The end of the server's log, once it has stopped.
    async fn log(&mut self) -> String {
        match (&mut self.task).await {
            Ok(Ok(out)) => format!(
                "{}: {}",
                process::describe_status(&out.status),
                out.stderr_summary(8)
            ),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        // The group is killed by the process module's guard when the task's future goes.
        self.stop.cancel();
    }
}
