//! What a callback request carries: the manual's JSON body for each of its four
//! kinds, and the headers that let a receiver verify and deduplicate it. Sans-IO.
//!
//! - `X-Courier-Delivery`: the message's sequence, the same on every attempt and
//!   replay of that callback (dedup on it);
//! - `X-Courier-Attempt`: 1 for the first attempt, then 2, 3, …;
//! - `X-Courier-Signature`: `sha256=` and the lowercase hex HMAC-SHA256 of the exact
//!   body bytes, keyed with the app's appSecret (UTF-8 bytes of the secret text).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::message::Target;
use crate::store::{CallbackKind, PendingCallback};

pub const DELIVERY_HEADER: &str = "x-courier-delivery";
pub const ATTEMPT_HEADER: &str = "x-courier-attempt";
pub const SIGNATURE_HEADER: &str = "x-courier-signature";

/// The JSON body of a callback, or `None` if its message is no longer stored.
///
/// p2p: `{"msgType","fromAppId","fromAccount","toAppId","toAccount","payload","timestamp"}`;
/// topic: `{"msgType","appId","topicId","fromAccount","toAccounts","payload","timestamp"}`.
/// Ids and the timestamp (unix ms) are JSON numbers; `payload` is the message's
/// bytes in standard base64.
pub fn body(cb: &PendingCallback) -> Option<Vec<u8>> {
    let m = cb.message.as_ref()?;
    let e = &m.envelope;
    let payload = base64::engine::general_purpose::STANDARD.encode(&e.payload);
    let msg_type = cb.kind.msg_type();
    match (&e.target, cb.kind) {
        (Target::User { account, .. }, CallbackKind::Normal | CallbackKind::Offline) => {
            serde_json::to_vec(&P2p {
                msg_type,
                from_app_id: e.app_id,
                from_account: &e.from_account,
                to_app_id: e.app_id,
                to_account: account,
                payload: &payload,
                timestamp: m.ts,
            })
            .ok()
        }
        (Target::Topic { topic_id }, CallbackKind::NormalTopic | CallbackKind::OfflineTopic) => {
            serde_json::to_vec(&Topic {
                msg_type,
                app_id: e.app_id,
                topic_id: *topic_id,
                from_account: &e.from_account,
                to_accounts: &cb.to_accounts,
                payload: &payload,
                timestamp: m.ts,
            })
            .ok()
        }
        // A kind that does not fit its message: not a callback this server wrote.
        _ => None,
    }
}

/// The p2p body, fields in the manual's order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct P2p<'a> {
    msg_type: &'static str,
    from_app_id: u64,
    from_account: &'a str,
    to_app_id: u64,
    to_account: &'a str,
    payload: &'a str,
    timestamp: u64,
}

/// The topic body, fields in the manual's order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Topic<'a> {
    msg_type: &'static str,
    app_id: u64,
    topic_id: u64,
    from_account: &'a str,
    to_accounts: &'a [String],
    payload: &'a str,
    timestamp: u64,
}

/// The `X-Courier-Signature` value of `body` under `app_secret`.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    // HMAC accepts a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Envelope, Sequenced};

    fn pending(kind: CallbackKind, target: Target, to: &[&str]) -> PendingCallback {
        PendingCallback {
            seq: 99,
            app_id: 7,
            kind,
            to_accounts: to.iter().map(|s| s.to_string()).collect(),
            attempts: 0,
            batch: None,
            message: Some(Sequenced {
                seq: 99,
                ts: 1_700_000_000_123,
                envelope: Envelope {
                    app_id: 7,
                    from_uuid: 1,
                    from_account: "alice".into(),
                    from_resource: "web".into(),
                    packet_id: "p".into(),
                    target,
                    biz_type: String::new(),
                    payload: bytes::Bytes::from_static(b"Hello B"),
                },
            }),
        }
    }

    #[test]
    fn p2p_body_has_the_manuals_fields_in_order() {
        let to = Target::User {
            uuid: 2,
            account: "bob".into(),
            resource: None,
            blocked: false,
        };
        let body = body(&pending(CallbackKind::Offline, to, &[])).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"msgType":"OFFLINE_MSG","fromAppId":7,"fromAccount":"alice","toAppId":7,"toAccount":"bob","payload":"SGVsbG8gQg==","timestamp":1700000000123}"#
        );
    }

    #[test]
    fn topic_body_lists_to_accounts() {
        let to = Target::Topic { topic_id: 42 };
        let cb = pending(CallbackKind::NormalTopic, to, &["bob", "cy"]);
        let body = body(&cb).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"msgType":"NORMAL_TOPIC_MSG","appId":7,"topicId":42,"fromAccount":"alice","toAccounts":["bob","cy"],"payload":"SGVsbG8gQg==","timestamp":1700000000123}"#
        );
        let mut gone = cb;
        gone.message = None;
        assert_eq!(super::body(&gone), None);
    }

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
