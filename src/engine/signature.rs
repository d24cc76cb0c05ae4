//! What a delivery looks like on the wire (contract §4): its body and its headers, both
//! signature forms included.
//!
//! Invariants:
//! - The body is built once per event from the stored record, compact, with `data` spliced
//!   in exactly as its bytes arrived at ingest; every attempt of every delivery of the event
//!   sends the same bytes. (A receiver must verify those raw bytes: re-serializing the
//!   parsed body yields the sender's bytes only by chance.) A webhook with `body_format:
//!   javascript` gets, and is signed over, that body as JavaScript re-serializes it
//!   ([`super::js_json`]), built once per event too.
//! - `<signature_header>` carries `<prefix><hex HMAC-SHA256(newest secret, body)>`;
//!   `webhook-signature` carries one `v1,<base64>` per live secret (rotation overlap), over
//!   `{webhook-id}.{webhook-timestamp}.{body}` with the Standard Webhooks key: the bytes
//!   base64-decoded after `whsec_`, or the secret's own UTF-8 bytes if it is not of that form.
//! - `X-Webhook-Timestamp` and `webhook-timestamp` are the same value, the send time.
//! - Secrets never leave this module except inside an HMAC; they are opened from their sealed
//!   form ([`OpenedSecrets`]) once per definition of the webhook, not per attempt.

use crate::model::time::rfc3339;
use crate::model::{BodyFormat, DeliveryId, EventId, Millis, Webhook};
use crate::security::header_rules;
use crate::security::seal::Keyring;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

/// The delivery body: `{"id":…,"event":…,"timestamp":…,"data":…}`, compact. `data` must be
/// the stored compact JSON object.
pub fn body(event_id: &EventId, event: &str, timestamp: Millis, data: &[u8]) -> Vec<u8> {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = Vec::with_capacity(data.len() + 128);
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(quoted(event_id.as_str()).as_bytes());
    out.extend_from_slice(b",\"event\":");
    out.extend_from_slice(quoted(event).as_bytes());
    out.extend_from_slice(b",\"timestamp\":");
    out.extend_from_slice(quoted(&rfc3339(timestamp)).as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

/// `body` (the contract's form) as `format` writes it.
pub fn formatted(format: BodyFormat, body: actix_web::web::Bytes) -> actix_web::web::Bytes {
    match format {
        BodyFormat::Original => body,
        // The body is JSON Herald built; were it not, it goes as it is.
        BodyFormat::Javascript => super::js_json::restringify(&body).map(Into::into).unwrap_or(body),
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else { return [0; 32] };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// `<hex HMAC-SHA256(secret as UTF-8, body)>`, the form every seed's receiver checks.
pub fn hex_signature(secret: &str, body: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mac = hmac(secret.as_bytes(), &[body]);
    let mut out = String::with_capacity(64);
    for b in mac {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The Standard Webhooks key of a secret.
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn standard_signature(secret: &str, msg_id: &str, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac(&standard_key(secret), &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac))
}

/// What of a webhook is sealed at rest, opened for sending: its secrets (newest first, with
/// when each stops signing) and its custom headers. Held by the webhook's actor only.
#[derive(Default)]
pub struct OpenedSecrets {
    secrets: Vec<(String, Option<Millis>)>,
    headers: Vec<(String, String)>,
}

impl std::fmt::Debug for OpenedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenedSecrets({} secrets, {} headers)", self.secrets.len(), self.headers.len())
    }
}

impl OpenedSecrets {
    /// Opens `webhook`'s secrets and header values; one that does not open (its key is not
    /// in the ring) is left out and logged.
    pub fn of(webhook: &Webhook, keyring: &Keyring) -> OpenedSecrets {
        let mut opened = OpenedSecrets::default();
        for s in &webhook.secrets {
            match keyring.open(&s.value) {
                Ok(v) => opened.secrets.push((v, s.expires_at)),
                Err(e) => tracing::error!(webhook_id = %webhook.id, error = %e, "a signing secret does not open"),
            }
        }
        for (name, value) in &webhook.headers {
            match keyring.open(value) {
                Ok(v) => opened.headers.push((name.clone(), v)),
                Err(e) => {
                    tracing::error!(webhook_id = %webhook.id, header = %name, error = %e, "a header value does not open")
                }
            }
        }
        opened
    }
}

/// Every header of one attempt, in send order: the fixed ones, the webhook's own, then
/// the signatures. `now` is the send time (ms): live secrets are those not expired by then.
pub fn headers(
    webhook: &Webhook,
    opened: &OpenedSecrets,
    delivery: &DeliveryId,
    event: &str,
    attempt: u32,
    now: Millis,
    body: &[u8],
) -> Vec<(String, String)> {
    let ts = now / 1000;
    let id = delivery.to_string();
    let mut out: Vec<(String, String)> =
        vec![("Content-Type".into(), "application/json".into()), ("User-Agent".into(), USER_AGENT.into())];
    // A webhook stored before the header rules tightened may hold what they now refuse:
    // such a header is left out, and an unusable signature header falls back to the default.
    let signature_header = match header_rules::signature_header_problem(&webhook.signature_header) {
        None => webhook.signature_header.as_str(),
        Some(_) => header_rules::DEFAULT_SIGNATURE_HEADER,
    };
    out.extend(
        opened
            .headers
            .iter()
            .filter(|(name, _)| header_rules::custom_header_problem(name, signature_header).is_none())
            .cloned(),
    );
    out.push(("X-Webhook-Event".into(), event.into()));
    out.push(("X-Webhook-Delivery-Id".into(), id.clone()));
    out.push(("X-Webhook-Attempt".into(), attempt.to_string()));
    out.push(("X-Webhook-Timestamp".into(), ts.to_string()));
    let live: Vec<&str> =
        opened.secrets.iter().filter(|(_, until)| until.is_none_or(|e| e > now)).map(|(v, _)| v.as_str()).collect();
    if let Some(newest) = live.first() {
        out.push((signature_header.to_owned(), format!("{}{}", webhook.signature_prefix, hex_signature(newest, body))));
    }
    out.push(("webhook-id".into(), id.clone()));
    out.push(("webhook-timestamp".into(), ts.to_string()));
    let signatures: Vec<String> = live.iter().map(|s| standard_signature(s, &id, ts, body)).collect();
    out.push(("webhook-signature".into(), signatures.join(" ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdKey, Secret};

    #[test]
    fn hex_form_matches_rfc_4231_test_case_2() {
        assert_eq!(
            hex_signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn standard_form_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        assert_eq!(
            standard_signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(standard_key("not-whsec-a-plain-secret"), b"not-whsec-a-plain-secret");
    }

    #[test]
    fn body_splices_data_verbatim_and_headers_sign_with_every_live_secret() {
        let key = IdKey([7; 16]);
        let event = EventId::from_seq(1_737_369_000_000, 42, 0, &key);
        let data = br#"{"b":1,"a":2.50,"big":12345678901234567890}"#;
        let b = body(&event, "lead.qualified", 1_737_369_000_000, data);
        let text = String::from_utf8(b.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"id":"{event}","event":"lead.qualified","timestamp":"2025-01-20T10:30:00Z","data":{{"b":1,"a":2.50,"big":12345678901234567890}}}}"#
            )
        );

        let mut w = crate::storage::record::samples::webhook(&crate::model::AccountId::default_account());
        let now = 1_800_000_000_000;
        let ring = Keyring::generate();
        w.secrets = vec![
            Secret { value: ring.seal("whsec_bmV3bmV3bmV3bmV3bmV3bmV3"), created_at: now - 10, expires_at: None },
            Secret { value: ring.seal("an-old-plain-secret-0123"), created_at: now - 99, expires_at: Some(now + 1) },
            // As an older Herald stored it: in clear.
            Secret {
                value: crate::security::seal::SealedText::in_clear("an-expired-secret-012345"),
                created_at: now - 999,
                expires_at: Some(now),
            },
        ];
        w.headers = vec![("X-Team".into(), ring.seal("sales"))];
        let dlv = DeliveryId::new(&event, 1);
        let h = headers(&w, &OpenedSecrets::of(&w, &ring), &dlv, "lead.qualified", 3, now, &b);
        let get = |name: &str| h.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(
            get("X-Webhook-Signature"),
            format!("sha256={}", hex_signature("whsec_bmV3bmV3bmV3bmV3bmV3bmV3", &b))
        );
        assert_eq!(get("X-Webhook-Attempt"), "3");
        assert_eq!(get("X-Webhook-Timestamp"), get("webhook-timestamp"));
        assert_eq!(get("webhook-id"), dlv.to_string());
        assert_eq!(get("X-Team"), "sales");
        let sigs: Vec<String> = get("webhook-signature").split(' ').map(str::to_owned).collect();
        assert_eq!(sigs.len(), 2, "the expired secret no longer signs");
        assert_eq!(sigs[1], standard_signature("an-old-plain-secret-0123", &dlv.to_string(), now / 1000, &b));
    }
}
