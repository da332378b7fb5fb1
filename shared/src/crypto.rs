//! Keeping real numbers out of DynamoDB in the clear: HMAC-SHA256 for keys, AES-256-GCM for values.
//!
//! Key material is wrapped by KMS and unwrapped once per cold start ([`Vault::unwrap_with_kms`]);
//! after that every operation is local, so routing a call never waits on KMS.

use std::collections::{BTreeMap, HashMap};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::domain::{Pin, RealNumber, VirtualNumber};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key material must be 32 bytes, got {0}")]
    BadKeyLength(usize),
    #[error("no data key named `{0}`")]
    UnknownKey(String),
    #[error("ciphertext failed authentication")]
    Tampered,
    #[error("decrypted value is not a valid phone number")]
    NotANumber,
    #[error("decrypted value is not a PIN")]
    NotAPin,
    #[error("encryption failed")]
    Seal,
    #[error("KMS could not unwrap key `{name}`: {reason}")]
    Kms { name: String, reason: String },
    /// Sealing, opening or a person key was asked of a store built without keys (pool upkeep
    /// has none): a bug in the caller, refused rather than guessed.
    #[error("this store holds no keys: it cannot seal, open or make person keys")]
    NoKeys,
}

/// The secrets that protect real numbers at rest.
#[derive(Clone)]
pub struct Vault {
    person_key: Hmac<Sha256>,
    current: String,
    data_keys: BTreeMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// A sealed value and the name of the data key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key: String,
    pub blob: Vec<u8>,
}

impl Vault {
    /// Builds a vault from plaintext keys: a 32-byte HMAC key and named 32-byte data keys,
    /// `current` naming the one new values are sealed with.
    pub fn from_keys(
        hmac_key: &[u8],
        data_keys: BTreeMap<String, Vec<u8>>,
        current: &str,
    ) -> Result<Self, CryptoError> {
        if hmac_key.len() != 32 {
            return Err(CryptoError::BadKeyLength(hmac_key.len()));
        }
        let person_key = <Hmac<Sha256> as Mac>::new_from_slice(hmac_key)
            .map_err(|_| CryptoError::BadKeyLength(hmac_key.len()))?;
        let mut ciphers = BTreeMap::new();
        for (name, key) in data_keys {
            if key.len() != 32 {
                return Err(CryptoError::BadKeyLength(key.len()));
            }
            let cipher = Aes256Gcm::new_from_slice(&key)
                .map_err(|_| CryptoError::BadKeyLength(key.len()))?;
            ciphers.insert(name, cipher);
        }
        if !ciphers.contains_key(current) {
            return Err(CryptoError::UnknownKey(current.to_owned()));
        }
        Ok(Vault {
            person_key,
            current: current.to_owned(),
            data_keys: ciphers,
        })
    }

    /// Unwraps KMS-encrypted keys (all in parallel, one `Decrypt` each) and builds the vault.
    pub async fn unwrap_with_kms(
        kms: &aws_sdk_kms::Client,
        wrapped_hmac_key: &[u8],
        wrapped_data_keys: &BTreeMap<String, Vec<u8>>,
        current: &str,
    ) -> Result<Self, CryptoError> {
        let unwrap = |name: String, wrapped| async move {
            let plain = kms_key(kms, &name, KmsCall::Unwrap(wrapped)).await?;
            Ok::<_, CryptoError>((name, plain))
        };
        let mut jobs = vec![unwrap("hmac".to_owned(), wrapped_hmac_key)];
        jobs.extend(
            wrapped_data_keys
                .iter()
                .map(|(n, b)| unwrap(format!("data:{n}"), b.as_slice())),
        );
        let mut unwrapped = futures_util::future::try_join_all(jobs).await?.into_iter();
        let (_, hmac_key) = unwrapped
            .next()
            .ok_or_else(|| CryptoError::UnknownKey("hmac".into()))?;
        let data_keys = unwrapped
            .map(|(name, key)| (name.trim_start_matches("data:").to_owned(), key))
            .collect();
        Vault::from_keys(&hmac_key, data_keys, current)
    }

    /// Makes new key material under the KMS key `kms_key_id`: returns the wrapped HMAC key and a
    /// wrapped data key named `data_key`, as `VNMASK_HMAC_KEY` and `VNMASK_DATA_KEYS` expect them.
    pub async fn generate_wrapped_keys(
        kms: &aws_sdk_kms::Client,
        kms_key_id: &str,
        data_key: &str,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let generate = KmsCall::Generate { kms_key_id };
        let data_name = format!("data:{data_key}");
        let (hmac, data) = tokio::try_join!(
            kms_key(kms, "hmac", generate),
            kms_key(kms, &data_name, generate)
        )?;
        Ok((hmac, data))
    }

    /// The stable, non-reversible key of a person: hex HMAC-SHA256 of their E.164 number.
    pub fn person_key(&self, number: &RealNumber) -> String {
        let mut mac = self.person_key.clone();
        mac.update(number.expose().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The key of a PIN on a virtual number: hex HMAC-SHA256 under the person-key secret, of a
    /// message no person key hashes (those are E.164 numbers), so that a PIN is never stored
    /// in the clear and its item is found with one read.
    pub fn pin_key(&self, number: &VirtualNumber, pin: &Pin) -> String {
        let mut mac = self.person_key.clone();
        mac.update(b"pin:");
        mac.update(number.as_str().as_bytes());
        mac.update(b":");
        mac.update(pin.expose().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Encrypts a real number; `context` (the item key and attribute) is authenticated, so a
    /// ciphertext moved to another item or attribute fails to open.
    pub fn seal(&self, number: &RealNumber, context: &str) -> Result<Sealed, CryptoError> {
        self.seal_text(number.expose(), context)
    }

    /// Encrypts a PIN, as [`Vault::seal`] a number: shown again only to its participant.
    pub fn seal_pin(&self, pin: &Pin, context: &str) -> Result<Sealed, CryptoError> {
        self.seal_text(pin.expose(), context)
    }

    pub fn open_pin(&self, sealed: &Sealed, context: &str) -> Result<Pin, CryptoError> {
        Pin::parse(&self.open_text(sealed, context)?).map_err(|_| CryptoError::NotAPin)
    }

    fn seal_text(&self, text: &str, context: &str) -> Result<Sealed, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let cipher = &self.data_keys[&self.current];
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: text.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(Sealed {
            key: self.current.clone(),
            blob,
        })
    }

    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<RealNumber, CryptoError> {
        let text = self.open_text(sealed, context)?;
        // Sealed only after a strict parse and authenticated on the way out: the form suffices.
        RealNumber::parse_form(&text).map_err(|_| CryptoError::NotANumber)
    }

    fn open_text(&self, sealed: &Sealed, context: &str) -> Result<String, CryptoError> {
        let cipher = self
            .data_keys
            .get(&sealed.key)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key.clone()))?;
        if sealed.blob.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Tampered);
        }
        let (nonce, ct) = sealed.blob.split_at(NONCE_LEN);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        String::from_utf8(plain).map_err(|_| CryptoError::NotANumber)
    }

    pub fn current_key(&self) -> &str {
        &self.current
    }
}

/// What to ask KMS for one of our keys.
#[derive(Clone, Copy)]
enum KmsCall<'a> {
    /// `Decrypt` a wrapped key: the answer is the key.
    Unwrap(&'a [u8]),
    /// `GenerateDataKey` (AES-256) under the KMS key `kms_key_id`: the answer is the wrapped key.
    Generate { kms_key_id: &'a str },
}

/// The one KMS call for the key `name` (`hmac`, `data:<name>`), bound to it by the encryption
/// context `purpose=vnmask, key=<name>`: any failure, or an answer without the blob asked for,
/// is [`CryptoError::Kms`] naming the key.
async fn kms_key(
    kms: &aws_sdk_kms::Client,
    name: &str,
    call: KmsCall<'_>,
) -> Result<Vec<u8>, CryptoError> {
    let failed = |reason: String| CryptoError::Kms {
        name: name.to_owned(),
        reason,
    };
    let context = Some(HashMap::from([
        ("purpose".to_owned(), "vnmask".to_owned()),
        ("key".to_owned(), name.to_owned()),
    ]));
    let (blob, missing) = match call {
        KmsCall::Unwrap(wrapped) => (
            kms.decrypt()
                .ciphertext_blob(Blob::new(wrapped))
                .set_encryption_context(context)
                .send()
                .await
                .map_err(|e| failed(DisplayErrorContext(e).to_string()))?
                .plaintext,
            "no plaintext",
        ),
        KmsCall::Generate { kms_key_id } => (
            kms.generate_data_key()
                .key_id(kms_key_id)
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(context)
                .send()
                .await
                .map_err(|e| failed(DisplayErrorContext(e).to_string()))?
                .ciphertext_blob,
            "no ciphertext",
        ),
    };
    blob.map(Blob::into_inner)
        .ok_or_else(|| failed(missing.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        let keys = BTreeMap::from([
            ("k1".to_owned(), vec![7u8; 32]),
            ("k2".to_owned(), vec![9u8; 32]),
        ]);
        Vault::from_keys(&[1u8; 32], keys, "k2").unwrap()
    }

    #[test]
    fn sealed_number_opens_under_the_same_context_only() {
        let v = vault();
        let n = RealNumber::parse("+919812345678").unwrap();
        let sealed = v.seal(&n, "ROUTE#x|VN#y|callee").unwrap();
        assert_eq!(sealed.key, "k2");
        assert!(!String::from_utf8_lossy(&sealed.blob).contains("9812345678"));
        assert_eq!(v.open(&sealed, "ROUTE#x|VN#y|callee").unwrap(), n);
        assert!(matches!(
            v.open(&sealed, "ROUTE#z|VN#y|callee"),
            Err(CryptoError::Tampered)
        ));
    }

    #[test]
    fn values_sealed_with_an_older_key_still_open() {
        let old = Vault::from_keys(
            &[1u8; 32],
            BTreeMap::from([("k1".to_owned(), vec![7u8; 32])]),
            "k1",
        )
        .unwrap();
        let n = RealNumber::parse("+919812345678").unwrap();
        let sealed = old.seal(&n, "c").unwrap();
        assert_eq!(vault().open(&sealed, "c").unwrap(), n);
    }

    #[test]
    fn person_key_is_stable_and_hides_the_number() {
        let v = vault();
        let n = RealNumber::parse("+919812345678").unwrap();
        assert_eq!(v.person_key(&n), v.person_key(&n));
        assert_eq!(v.person_key(&n).len(), 64);
        assert!(!v.person_key(&n).contains("9812345678"));
        assert_ne!(
            v.person_key(&n),
            v.person_key(&RealNumber::parse("+919812345679").unwrap())
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            Vault::from_keys(&[1u8; 16], BTreeMap::new(), "k"),
            Err(CryptoError::BadKeyLength(16))
        ));
    }
}
