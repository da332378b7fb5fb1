//! What answering needs beyond the environment (the providers' credentials from the secret,
//! the store with its keys unwrapped by KMS), loaded at cold start and kept fresh.
//!
//! Loading can fail (Secrets Manager or KMS down, a secret not filled in yet). The webhook then
//! still answers every request with the provider's normal refusal, never a 5xx, and loads again
//! in the background on a later request. A loaded state is reloaded after `reload_after`, so
//! that a rotated credential reaches running instances; a failed reload keeps the last one.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::OnceCell;
use vnmask::config::{ConfigError, Source, StoreConfig};
use vnmask::crypto::CryptoError;
use vnmask::secrets::{Credentials, Layered, SecretsError};
use vnmask::store::{CallRouting, SessionConfirmed};

use crate::config::ConfirmRoutes;

use crate::config::Providers;

/// The store and the providers served.
pub struct Ready {
    pub store: Arc<dyn CallRouting>,
    pub providers: Providers,
}

/// Why [`Ready`] could not be had. No variant carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keys(#[from] CryptoError),
}

/// Loads [`Ready`].
#[async_trait]
pub trait Loader: Send + Sync {
    async fn load(&self) -> Result<Ready, LoadError>;
}

/// The deployed loader: credentials from the secret named in the environment, keys from KMS,
/// both with start-up timeouts; the store's reads with the interactive ones. The keys cannot
/// change within an instance (they come from its environment), so the store is built once and
/// a reload reads only the secret.
pub struct EnvironmentLoader {
    env: Box<dyn Source + Send + Sync>,
    /// For Secrets Manager and KMS: patient, as these calls are not on a call's path.
    startup_sdk: aws_config::SdkConfig,
    /// For DynamoDB: a call must be refused within 2 s even when DynamoDB is down.
    interactive_sdk: aws_config::SdkConfig,
    /// From the settings read at cold start.
    confirm: ConfirmRoutes,
    store: OnceCell<Arc<dyn CallRouting>>,
}

impl EnvironmentLoader {
    pub fn new(
        env: Box<dyn Source + Send + Sync>,
        confirm: ConfirmRoutes,
        startup_sdk: aws_config::SdkConfig,
        interactive_sdk: aws_config::SdkConfig,
    ) -> Self {
        EnvironmentLoader {
            env,
            startup_sdk,
            interactive_sdk,
            confirm,
            store: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<Arc<dyn CallRouting>, LoadError> {
        let store = self
            .store
            .get_or_try_init(|| async {
                let store = Arc::new(
                    StoreConfig::from_source(self.env.as_ref())?
                        .connect_with(&self.startup_sdk, &self.interactive_sdk)
                        .await?,
                );
                Ok::<_, LoadError>(match &self.confirm {
                    ConfirmRoutes::Off => store as Arc<dyn CallRouting>,
                    ConfirmRoutes::Except(homed) => {
                        Arc::new(SessionConfirmed::except_homed(store, homed.clone()))
                    }
                })
            })
            .await?;
        Ok(store.clone())
    }
}

#[async_trait]
impl Loader for EnvironmentLoader {
    async fn load(&self) -> Result<Ready, LoadError> {
        let env: &(dyn Source + Sync) = self.env.as_ref();
        // The secret and the keys at once: a cold start waits for the slower, not the sum.
        let (credentials, store) = tokio::join!(
            Credentials::from_environment(env, &self.startup_sdk),
            self.store()
        );
        let providers = Providers::from_source(&Layered {
            env,
            credentials: &credentials?,
        })?;
        Ok(Ready {
            store: store?,
            providers,
        })
    }
}

/// The current [`Ready`], if any, and when to load again.
pub struct Readiness {
    current: RwLock<Option<Loaded>>,
    loader: Option<Arc<dyn Loader>>,
    reload_after: Duration,
    retry_after: Duration,
    attempts: Mutex<Attempts>,
}

struct Loaded {
    ready: Arc<Ready>,
    at: Instant,
}

#[derive(Default)]
struct Attempts {
    running: bool,
    last: Option<Instant>,
}

impl Readiness {
    /// Already loaded, never reloaded: for tests and tools that build the parts themselves.
    pub fn loaded(ready: Ready) -> Self {
        Readiness {
            current: RwLock::new(Some(Loaded {
                ready: Arc::new(ready),
                at: Instant::now(),
            })),
            loader: None,
            reload_after: Duration::MAX,
            retry_after: Duration::MAX,
            attempts: Mutex::default(),
        }
    }

    /// Starts loading at cold start and waits for it at most `first_wait`: a slow Secrets
    /// Manager or KMS must not hold the first caller past the 2 s promise (nor Lambda's init
    /// past its limit). A load still running then finishes in the background; until it does,
    /// requests are refused.
    pub async fn start(
        loader: Arc<dyn Loader>,
        reload_after: Duration,
        retry_after: Duration,
        first_wait: Duration,
    ) -> Arc<Self> {
        let readiness = Arc::new(Readiness {
            current: RwLock::new(None),
            loader: Some(loader),
            reload_after,
            retry_after,
            attempts: Mutex::new(Attempts {
                running: true,
                last: Some(Instant::now()),
            }),
        });
        let first = tokio::spawn({
            let readiness = Arc::clone(&readiness);
            async move { readiness.load().await }
        });
        if tokio::time::timeout(first_wait, first).await.is_err() {
            tracing::warn!(
                waited_ms = first_wait.as_millis(),
                "credentials and keys still loading; refusing calls until they are"
            );
        }
        readiness
    }

    /// What answering needs, if it has been loaded; starts a load in the background when one
    /// is due. Never waits.
    pub fn get(self: &Arc<Self>) -> Option<Arc<Ready>> {
        let (ready, loaded_at) = match self.current.read() {
            Ok(current) => match current.as_ref() {
                Some(loaded) => (Some(loaded.ready.clone()), Some(loaded.at)),
                None => (None, None),
            },
            Err(_) => (None, None),
        };
        let due = match loaded_at {
            Some(at) => at.elapsed() >= self.reload_after,
            None => true,
        };
        if due && self.loader.is_some() && self.claim_attempt() {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.load().await });
        }
        ready
    }

    /// True when no load is running and the last one is long enough ago.
    fn claim_attempt(&self) -> bool {
        let Ok(mut attempts) = self.attempts.lock() else {
            return false;
        };
        let rested = attempts
            .last
            .is_none_or(|last| last.elapsed() >= self.retry_after);
        if attempts.running || !rested {
            return false;
        }
        attempts.running = true;
        attempts.last = Some(Instant::now());
        true
    }

    async fn load(&self) {
        // However the load ends, even in a panic, the next one may start.
        let _finished = Finished(&self.attempts);
        let Some(loader) = &self.loader else { return };
        match loader.load().await {
            Ok(ready) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Some(Loaded {
                        ready: Arc::new(ready),
                        at: Instant::now(),
                    });
                }
                tracing::info!("credentials and keys loaded");
            }
            Err(error) => {
                let kept = self.current.read().is_ok_and(|c| c.is_some());
                if kept {
                    tracing::error!(%error, "credentials or keys could not be reloaded; keeping those loaded before");
                } else {
                    tracing::error!(%error, "credentials or keys could not be loaded; refusing calls until they are");
                }
            }
        }
    }
}

/// Marks the running load as over when dropped.
struct Finished<'a>(&'a Mutex<Attempts>);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        if let Ok(mut attempts) = self.0.lock() {
            attempts.running = false;
        }
    }
}
