//! One opened target: the S3 client for `[offsite.NAME]` and the key layout under its prefix.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::{OffsiteError, credentials};
use crate::config::OffsiteTarget;

/// An S3 client for one target. Built per operation, so the credentials file is read afresh.
#[derive(Debug)]
pub struct Remote {
    pub target: OffsiteTarget,
    pub(super) store: AmazonS3,
}

impl Remote {
    pub fn open(target: &OffsiteTarget) -> Result<Remote, OffsiteError> {
        let creds = credentials::read(&target.credentials_file).map_err(|message| {
            OffsiteError::Credentials {
                target: target.name.clone(),
                message,
            }
        })?;
        let loopback_http = target
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let options = ClientOptions::new()
            .with_allow_http(loopback_http)
            .with_timeout(target.request_timeout)
            .with_connect_timeout(std::time::Duration::from_secs(10));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: std::time::Duration::from_millis(200),
                max_backoff: std::time::Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: target.retries,
            retry_timeout: target.retry_timeout,
        };
        let mut builder = AmazonS3Builder::new()
            .with_region(&target.region)
            .with_bucket_name(&target.bucket)
            .with_access_key_id(&creds.key_id)
            .with_secret_access_key(creds.secret.expose())
            .with_virtual_hosted_style_request(!target.path_style)
            .with_client_options(options)
            .with_retry(retry);
        if let Some(token) = &creds.token {
            builder = builder.with_token(token.expose());
        }
        if let Some(endpoint) = &target.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder.build().map_err(|e| OffsiteError::Other {
            target: target.name.clone(),
            message: format!(
                "cannot set up the S3 client: {}",
                crate::secret::scrub(&e.to_string())
            ),
        })?;
        Ok(Remote {
            target: target.clone(),
            store,
        })
    }

    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// Where the backups live: the prefix, or the bucket's root.
    pub fn root(&self) -> Option<Key> {
        (!self.target.prefix.is_empty()).then(|| Key::from(self.target.prefix.as_str()))
    }

    /// `<prefix>/<id>`.
    pub fn backup(&self, id: &str) -> Key {
        match self.root() {
            Some(root) => root.join(id),
            None => Key::from(id),
        }
    }

    /// `<prefix>/<id>/<file>`; `file` may have `/` (a directory-format dump), already checked
    /// by [`super::safe_relative`].
    pub fn key(&self, id: &str, file: &str) -> Key {
        file.split('/')
            .fold(self.backup(id), |key, part| key.join(part))
    }

    /// An object_store failure, named.
    pub(super) fn err(
        &self,
        op: &'static str,
        key: &Key,
        source: object_store::Error,
    ) -> OffsiteError {
        OffsiteError::Store {
            target: self.target.name.clone(),
            op,
            key: key.to_string(),
            not_found: matches!(source, object_store::Error::NotFound { .. }),
            message: super::brief(&source),
        }
    }

    pub(super) fn mismatch(&self, key: &Key, message: String) -> OffsiteError {
        OffsiteError::Mismatch {
            target: self.target.name.clone(),
            key: key.to_string(),
            message,
        }
    }
}
