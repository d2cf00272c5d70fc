//! Standard Webhooks signatures: `whsec_` secrets and the `v1,` HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` (<https://www.standardwebhooks.com>).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

/// The prefix of every secret.
pub const PREFIX: &str = "whsec_";

/// Bytes of a new signing key: the standard asks for 24 to 64.
const KEY_BYTES: usize = 32;

/// A new secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` header of a message to `endpoint` at `now`: its secret's signature,
/// and after a rotation, for a while, the previous secret's too, separated by a space (a
/// receiver accepts the message when one of them verifies).
pub fn signatures(
    endpoint: &entity::webhook::Model,
    id: &str,
    timestamp: i64,
    body: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<String> {
    let mut header = sign(&endpoint.secret.0, id, timestamp, body)?;
    if let (Some(previous), Some(until)) =
        (&endpoint.previous_secret, endpoint.previous_secret_until)
        && now < until
    {
        header.push(' ');
        header.push_str(&sign(&previous.0, id, timestamp, body)?);
    }
    Ok(header)
}

/// One signature of a message: `v1,` and the base64 of its HMAC-SHA256, keyed by the secret's
/// decoded bytes.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> anyhow::Result<String> {
    let key = STANDARD
        .decode(secret.strip_prefix(PREFIX).unwrap_or(secret))
        .map_err(|_| anyhow::anyhow!("a webhook secret is not base64"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| anyhow::anyhow!("a webhook secret has no usable key"))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_until_its_time_ends() {
        let now = chrono::Utc::now();
        let (old, new) = (new_secret(), new_secret());
        let endpoint = entity::webhook::Model {
            id: entity::ids::WebhookId::new(),
            workspace_id: entity::ids::WorkspaceId::new(),
            url: "https://lab.example/hook".to_owned(),
            description: String::new(),
            events: serde_json::json!([]),
            filter: serde_json::json!({}),
            secret: entity::webhook::SigningSecret(new.clone()),
            previous_secret: Some(entity::webhook::SigningSecret(old.clone())),
            previous_secret_until: Some(now + chrono::Duration::hours(1)),
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            failure_count: 0,
            live_cursor: 0,
            created_by: None,
            created_at: now,
            updated_at: now,
        };
        let both = signatures(&endpoint, "msg_1", 7, "{}", now).unwrap();
        let expected = [
            sign(&new, "msg_1", 7, "{}").unwrap(),
            sign(&old, "msg_1", 7, "{}").unwrap(),
        ];
        assert_eq!(both, expected.join(" "));
        let later = now + chrono::Duration::hours(2);
        assert_eq!(
            signatures(&endpoint, "msg_1", 7, "{}", later).unwrap(),
            expected[0]
        );
    }

    #[test]
    fn new_secrets_carry_32_random_bytes() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        let key = STANDARD.decode(a.strip_prefix(PREFIX).unwrap()).unwrap();
        assert_eq!(key.len(), 32);
    }
}
