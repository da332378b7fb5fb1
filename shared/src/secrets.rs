//! Credentials read from AWS Secrets Manager, never from the environment.
//!
//! Anyone allowed `lambda:GetFunctionConfiguration` reads a function's environment, so each
//! function's environment only names its secret (`VNMASK_SECRETS_ID`, an ARN or a name). The
//! secret's value is a JSON object of credential variables, for example
//! `{"VNMASK_TWILIO_AUTH_TOKENS": "…"}`. [`Layered`] answers configuration lookups with
//! credentials from the secret and everything else from the environment, so configuration code
//! reads both alike and a credential set in the environment is refused, not silently used.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::error::DisplayErrorContext;

use crate::config::Source;

/// The environment variable that names a function's secret.
pub const SECRETS_ID_VAR: &str = "VNMASK_SECRETS_ID";

/// Configuration variables that hold credentials: read from the secret only.
pub const CREDENTIAL_VARS: &[&str] = &[
    "VNMASK_TWILIO_AUTH_TOKENS",
    "VNMASK_EXOTEL_TOKENS",
    "VNMASK_GENERIC_SECRETS",
    "ORDERS_API_AUTH_VALUE",
    "VNMASK_TWILIO_AUTH_TOKEN",
    "VNMASK_TWILIO_API_KEY_SECRET",
    "VNMASK_EXOTEL_API_TOKEN",
    "VNMASK_PLIVO_AUTH_TOKENS",
    "VNMASK_VONAGE_SIGNATURE_SECRETS",
    "VNMASK_PLIVO_AUTH_TOKEN",
    "VNMASK_VONAGE_API_SECRET",
    "VNMASK_TELNYX_API_KEY",
];

/// Why credentials could not be had. No variant carries a credential's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "environment variable {var} holds a credential: put it in the secret named by \
         VNMASK_SECRETS_ID instead"
    )]
    InEnvironment { var: &'static str },
    #[error("secret {id} could not be read: {reason}")]
    Unreadable { id: String, reason: String },
    #[error("secret {id} is not a JSON object of strings (at `{path}`)")]
    Malformed { id: String, path: String },
    #[error("secret {id} holds `{name}`, which is not a credential vnmask reads")]
    UnknownName { id: String, name: String },
}

/// A function's credentials, by variable name. `Debug` shows the names, never the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials(BTreeMap<String, String>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Credentials {
    /// Parses a secret's value; `id` names the secret in errors.
    pub fn from_json(id: &str, text: &str) -> Result<Self, SecretsError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let map: BTreeMap<String, String> =
            serde_path_to_error::deserialize(&mut de).map_err(|e| SecretsError::Malformed {
                id: id.to_owned(),
                path: e.path().to_string(),
            })?;
        if let Some(name) = map.keys().find(|n| !CREDENTIAL_VARS.contains(&n.as_str())) {
            return Err(SecretsError::UnknownName {
                id: id.to_owned(),
                name: name.chars().take(64).collect(),
            });
        }
        Ok(Credentials(
            map.into_iter()
                .filter(|(_, v)| !v.trim().is_empty())
                .collect(),
        ))
    }

    /// The secret named by `VNMASK_SECRETS_ID` in `env`, read; none when it is unset. Refuses
    /// any credential variable set in the environment itself.
    pub async fn from_environment(
        env: &(dyn Source + Sync),
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, SecretsError> {
        refuse_credentials_in(env)?;
        match env.get(SECRETS_ID_VAR) {
            None => Ok(Credentials::default()),
            Some(id) => Self::read(&aws_sdk_secretsmanager::Client::new(sdk), id.trim()).await,
        }
    }

    /// Reads the secret `id` (an ARN or a name), its current version.
    pub async fn read(
        client: &aws_sdk_secretsmanager::Client,
        id: &str,
    ) -> Result<Self, SecretsError> {
        let out = client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| SecretsError::Unreadable {
                id: id.to_owned(),
                reason: DisplayErrorContext(e).to_string(),
            })?;
        let text = out
            .secret_string()
            .ok_or_else(|| SecretsError::Unreadable {
                id: id.to_owned(),
                reason: "it has no string value".into(),
            })?;
        Self::from_json(id, text)
    }
}

/// Refuses a credential variable set in the environment: it would be readable by anyone who
/// can read the function's configuration.
pub fn refuse_credentials_in(env: &dyn Source) -> Result<(), SecretsError> {
    match CREDENTIAL_VARS.iter().find(|var| env.get(var).is_some()) {
        Some(var) => Err(SecretsError::InEnvironment { var }),
        None => Ok(()),
    }
}

/// Configuration as functions read it: credential variables from the secret, the rest from
/// the environment.
pub struct Layered<'a> {
    pub env: &'a dyn Source,
    pub credentials: &'a Credentials,
}

impl Source for Layered<'_> {
    fn get(&self, var: &str) -> Option<String> {
        if CREDENTIAL_VARS.contains(&var) {
            self.credentials.0.get(var).cloned()
        } else {
            self.env.get(var)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn credentials_come_from_the_secret_and_the_rest_from_the_environment() {
        let creds = Credentials::from_json(
            "s",
            r#"{"VNMASK_GENERIC_SECRETS": "from-the-secret", "VNMASK_EXOTEL_TOKENS": " "}"#,
        )
        .unwrap();
        let env = env(&[("VNMASK_REFUSAL_MESSAGE", "hello")]);
        let layered = Layered {
            env: &env,
            credentials: &creds,
        };
        assert_eq!(
            layered.get("VNMASK_GENERIC_SECRETS").as_deref(),
            Some("from-the-secret")
        );
        assert_eq!(
            layered.get("VNMASK_REFUSAL_MESSAGE").as_deref(),
            Some("hello")
        );
        assert_eq!(layered.get("VNMASK_EXOTEL_TOKENS"), None, "blank is unset");
        assert_eq!(format!("{creds:?}"), r#"{"VNMASK_GENERIC_SECRETS"}"#);
    }

    #[test]
    fn a_credential_in_the_environment_is_refused_by_name() {
        let env = env(&[("VNMASK_TWILIO_AUTH_TOKENS", "s3cr3t-token")]);
        let err = refuse_credentials_in(&env).unwrap_err().to_string();
        assert!(err.contains("VNMASK_TWILIO_AUTH_TOKENS"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        let layered_env = BTreeMap::new();
        assert!(refuse_credentials_in(&layered_env).is_ok());
    }

    #[test]
    fn malformed_secrets_are_refused_without_their_values() {
        for text in [
            r#"["s3cr3t"]"#,
            r#"{"VNMASK_GENERIC_SECRETS": 5}"#,
            "s3cr3t",
            r#"{"VNMASK_GENERIC_SECRETS": "s3cr3t""#,
        ] {
            let err = Credentials::from_json("arn:x", text)
                .unwrap_err()
                .to_string();
            assert!(err.contains("arn:x") && !err.contains("s3cr3t"), "{err}");
        }
        let err = Credentials::from_json("arn:x", r#"{"TWILIO_TOKEN": "s3cr3t"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TWILIO_TOKEN") && !err.contains("s3cr3t"),
            "{err}"
        );
    }
}
