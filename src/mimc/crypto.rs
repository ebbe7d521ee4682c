//! MIMC web crypto (mimc-wire.md §4), sans-IO: RC4 on server-to-client SECMSG
//! payloads, keyed `base64-decode(miUserSecurityKey) ‖ '_' ‖ the frame's header id`,
//! and the XIAOMI-PASS BIND signature (SHA-1, base64).
//!
//! RC4 is written out here: the `rc4` crate fixes the key length in the type, and
//! these keys vary with each frame's header id. It is checked against RFC 6229's
//! vectors and the one of mimc-wire.md.

use base64::Engine;
use sha1::{Digest, Sha1};

/// Plain RC4 (key scheduling over the whole key, no keystream dropped), applied in
/// place; a fresh state per call. `key` must not be empty.
pub fn rc4(key: &[u8], data: &mut [u8]) {
    rc4_split(key, &[], data);
}

/// RC4 keyed by `head ‖ tail` (the user's key and a frame's id), without
/// building the key. Nothing is done when both are empty.
pub fn rc4_split(head: &[u8], tail: &[u8], data: &mut [u8]) {
    if head.is_empty() && tail.is_empty() {
        return;
    }
    // The key repeated to 256 bytes, so the schedule (run for every frame, as the key
    // ends in the frame's id) indexes it without a division per step.
    let mut key = [0u8; 256];
    let mut filled = 0;
    while filled < key.len() {
        for part in [head, tail] {
            let n = part.len().min(key.len() - filled);
            key[filled..filled + n].copy_from_slice(&part[..n]);
            filled += n;
        }
    }
    // Word-sized state and explicit loads: each step reads s[i] and s[j] once.
    let mut s: [u32; 256] = std::array::from_fn(|i| i as u32);
    let mut j = 0usize;
    for i in 0..256 {
        let si = s[i];
        j = (j + si as usize + usize::from(key[i])) & 0xff;
        s[i] = s[j];
        s[j] = si;
    }
    let (mut i, mut j) = (0usize, 0usize);
    for byte in data {
        i = (i + 1) & 0xff;
        let si = s[i];
        j = (j + si as usize) & 0xff;
        let sj = s[j];
        s[i] = sj;
        s[j] = si;
        *byte ^= s[(si + sj) as usize & 0xff] as u8;
    }
}

/// The RC4 key of a server-to-client SECMSG frame with header id `header_id`, for
/// the user whose `miUserSecurityKey` is `security_key_b64`.
pub fn payload_key(security_key_b64: &str, header_id: &str) -> Option<Vec<u8>> {
    let mut key = base64::engine::general_purpose::STANDARD
        .decode(security_key_b64)
        .ok()?;
    key.push(b'_');
    key.extend_from_slice(header_id.as_bytes());
    Some(key)
}

/// What the BIND signature covers.
#[derive(Debug, Clone)]
pub struct BindSigned<'a> {
    pub challenge: &'a str,
    pub chid: u32,
    pub client_attrs: &'a str,
    pub cloud_attrs: &'a str,
    pub uuid: u64,
    pub resource: &'a str,
    pub header_id: &'a str,
    /// XMMsgBind.kick as sent; the web SDK sends "" and signs "0".
    pub kick: &'a str,
    pub token: &'a str,
    /// The user's `miUserSecurityKey`, as base64 text.
    pub security_key_b64: &'a str,
}

/// The signature a client must send in XMMsgBind.sig: SHA-1 of
/// `XIAOMI-PASS&challenge=…&chid=…&client_attrs=…&cloud_attrs=…&from=<uuid>@xiaomi.com/<resource>&id=…&kick=…&to=xiaomi.com&token=…&<key>`
/// (keys in order, one byte per UTF-16 code unit), in standard base64.
pub fn bind_signature(b: &BindSigned<'_>) -> String {
    let kick = if b.kick.is_empty() { "0" } else { b.kick };
    let text = format!(
        "XIAOMI-PASS&challenge={}&chid={}&client_attrs={}&cloud_attrs={}&from={}@xiaomi.com/{}&id={}&kick={}&to=xiaomi.com&token={}&{}",
        b.challenge, b.chid, b.client_attrs, b.cloud_attrs, b.uuid, b.resource, b.header_id, kick, b.token, b.security_key_b64
    );
    // The SDK keeps the low 8 bits of each UTF-16 code unit.
    let bytes: Vec<u8> = text.encode_utf16().map(|u| u as u8).collect();
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(&bytes))
}

/// Whether `sig` is the signature of `b`, compared in constant time.
pub fn signature_matches(b: &BindSigned<'_>, sig: &str) -> bool {
    use subtle::ConstantTimeEq;
    bind_signature(b).as_bytes().ct_eq(sig.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rc4_matches_rfc_6229() {
        // RFC 6229, key 0x0102030405 (40 bits): the first 16 keystream bytes.
        let mut zeros = [0u8; 16];
        rc4(&[1, 2, 3, 4, 5], &mut zeros);
        assert_eq!(hex(&zeros), "b2396305f03dc027ccc3524a0a1118a8");
    }

    #[test]
    fn rc4_matches_the_mimc_vector() {
        // mimc-wire.md §4: key b64 IuT3TeybDTVvKPzUzeHWWw==, id "srv1".
        let key = payload_key("IuT3TeybDTVvKPzUzeHWWw==", "srv1").unwrap();
        let mut data = [0x0a, 0x04, 0x73, 0x72, 0x76, 0x31, 0x20, 0x04, 0x2a, 0x00];
        rc4(&key, &mut data);
        assert_eq!(hex(&data), "8e04048b54d3e1682f5b");
        rc4(&key, &mut data);
        assert_eq!(
            hex(&data),
            "0a047372763120042a00",
            "decrypting is encrypting again"
        );
        assert!(payload_key("not base64!", "x").is_none());
    }

    #[test]
    fn the_bind_signature_matches_what_the_sdk_sent() {
        let b = BindSigned {
            challenge: "80d8704961665d9d5b15fca1",
            chid: 9,
            client_attrs: "",
            cloud_attrs: "",
            uuid: 12345678902235,
            resource: "webA",
            header_id: "web17956953887711",
            kick: "",
            token: "af5a67f19183a8df3237e59cd02a8d59",
            security_key_b64: "IuT3TeybDTVvKPzUzeHWWw==",
        };
        assert_eq!(bind_signature(&b), "xcMQImaOQr/I3nCL/qkVLj0vhQI=");
        assert!(signature_matches(&b, "xcMQImaOQr/I3nCL/qkVLj0vhQI="));
        assert!(!signature_matches(&b, "xcMQImaOQr/I3nCL/qkVLj0vhQJ="));
        let other = BindSigned {
            resource: "webB",
            ..b
        };
        assert!(!signature_matches(&other, "xcMQImaOQr/I3nCL/qkVLj0vhQI="));
    }
}
