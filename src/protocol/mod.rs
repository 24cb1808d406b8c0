//! The control protocol between `atpred` and `atprectl`: this module is its specification.
//!
//! # Framing
//! A Unix stream socket carrying newline-delimited compact JSON: one message per line, UTF-8.
//! A request is at most [`MAX_REQUEST`] bytes, a reply at most [`MAX_LINE`]. A longer request
//! or invalid UTF-8 is a framing error: the daemon answers with an [`ErrorCode::BadFrame`]
//! error and closes the connection.
//!
//! # Handshake
//! The client's first message is [`Request::Hello`] with its [`PROTOCOL_VERSION`]. The daemon
//! answers [`Response::Hello`] with its own version, or [`ErrorCode::ProtocolMismatch`] and
//! closes. Any other first message gets [`ErrorCode::HelloFirst`] and the connection is closed.
//! Before the handshake the daemon checks the peer's credentials: root, the daemon's own user
//! and members of `daemon.socket-group` may use the socket; anyone else gets
//! [`ErrorCode::NotPermitted`] and is disconnected.
//!
//! # Requests and their responses
//! After the handshake the client sends requests one at a time and reads the responses:
//!
//! | request | responses |
//! | --- | --- |
//! | `status` | `status` (with `leases` when `[coordination]` names a backend) |
//! | `jobs` | `jobs` |
//! | `run` (`wait: false`) | `accepted` |
//! | `run` (`wait: true` or `dry_run: true`) | `accepted`, any number of `progress`, then `finished` |
//! | `cancel` | `cancelling` |
//! | `history` | `history` |
//! | `reload` | `reloaded` |
//! | `backups` (`remote: true`: the catalog at an offsite `target`) | `backups` |
//! | `backup_show` | `manifest` |
//! | `backup_verify` (`remote: true`: read the offsite copy back) | `verified` (after the verification has run) |
//! | `backup_fetch` (download from an offsite `target`, checked; `identity` decrypts) | `fetched` |
//! | `restore` (`options.target`: from the copy at an offsite target) | any number of `progress`, then `restored`; with `dry_run`, `restore_plan` |
//! | `backup_pin` (`reason` optional), `backup_unpin` | `pin_state` (the pin now, what was done offsite) |
//! | `health` (`now: true` runs every health job first and waits) | `health` |
//! | `metrics` | `metrics` (OpenMetrics text) |
//! | `restore` (`dry_run: true`) | `restore_plan` |
//! | `restore` | any number of `progress` (with the restore run's id), then `restored`, or an `error` (`restore_busy` while another restore runs) |
//! | `restore_pitr` (`dry_run: true`) | `pitr_plan` (base backup, WAL range, space), or an `error`: `restore_target_not_empty`, `pitr_no_base`, `pitr_gap`, `pitr_not_archived`, `pitr_no_archive_job`, `unknown_job` |
//! | `restore_pitr` | the same refusals, or any number of `progress` (with the restore run's id), then `pitr_restored` (root and the daemon's user only) |
//!
//! An `identity` (`backup_fetch`, `restore`'s `options.identity`) names a file for the daemon
//! to read: from anyone but root and the daemon's own user it gets
//! [`ErrorCode::NotPermitted`].
//!
//! Any request may instead get an `error` with a stable [`ErrorCode`]. A line that is JSON but not
//! a known request gets [`ErrorCode::BadRequest`] and the connection stays open; idle connections
//! are closed after [`IDLE_TIMEOUT`], and a client that leaves a reply unread for
//! [`WRITE_TIMEOUT`] is disconnected. A connection beyond the daemon's limits (in all, per
//! user) gets [`ErrorCode::Busy`] instead of the hello answer, and is closed. All JSON field names are snake_case and stable: new fields
//! may be added, existing ones are never renamed or removed within a protocol version.

mod codec;
mod messages;

pub use codec::{Codec, FrameError, decode_request};
pub use messages::*;

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest reply line a client accepts (replies like `history` are big).
pub const MAX_LINE: usize = 4 * 1024 * 1024;
/// The longest request line the daemon accepts. Requests are small (the biggest real one, a
/// `backup_fetch` with two paths, is well under 10 KiB); the cap bounds what an unfinished line
/// can make the daemon buffer per connection.
pub const MAX_REQUEST: usize = 64 * 1024;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// A connection whose reply cannot be written for this long (the client does not read) is
/// closed.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
