//! MIMC wire compatibility (docs/mimc-compat.md; the protocol is `mimc-wire.md`
//! beside DESIGN.md): the unmodified MIMC web SDK speaking to Courier, as a second
//! codec on the same session core. All sans-IO: the web frame layout with its
//! Adler-32 trailer (`frame`), RC4 and the BIND signature (`crypto`), the
//! connection's handshake and the translation of the peer's frames into the core's
//! requests (`session`), and of the core's frames into MIMC frames (`outbound`).
//! `transport::mimc` runs it on a WebSocket.

pub mod crypto;
pub mod frame;
pub mod outbound;
pub mod pbio;
pub mod session;

/// Generated types of `proto/mimc/ims.proto` (the session messages).
pub mod ims {
    #![allow(clippy::all, missing_docs, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/ims.rs"));
}

/// Generated types of `proto/mimc/mimc.proto` (the message packets).
pub mod pb {
    #![allow(clippy::all, missing_docs, non_camel_case_types, non_snake_case)]
    include!(concat!(env!("OUT_DIR"), "/mimc.rs"));
}

/// The CONN frame the SDK sent (mimc-wire.md §3), as (header, payload): header
/// {server "xiaomi.com", cmd "CONN", id "web17956953887130"}, payload XMMsgConn {106,
/// "Netscape", "", "websocket", 31}; framed, its trailer is 0xdcc31401.
#[cfg(test)]
pub(crate) fn captured_conn() -> (Vec<u8>, Vec<u8>) {
    let mut header = vec![0x1a, 10];
    header.extend_from_slice(b"xiaomi.com");
    header.extend_from_slice(&[0x2a, 4]);
    header.extend_from_slice(b"CONN");
    header.extend_from_slice(&[0x3a, 17]);
    header.extend_from_slice(b"web17956953887130");
    let mut payload = vec![0x08, 106, 0x12, 8];
    payload.extend_from_slice(b"Netscape");
    payload.extend_from_slice(&[0x1a, 0, 0x22, 9]);
    payload.extend_from_slice(b"websocket");
    payload.extend_from_slice(&[0x28, 31]);
    (header, payload)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::{captured_conn, ims, pb};

    #[test]
    fn the_schemas_read_the_captured_conn_and_write_the_noted_packet() {
        let (header, payload) = captured_conn();
        let h = ims::ClientHeader::decode(header.as_slice()).unwrap();
        assert_eq!(
            (h.cmd(), h.id(), h.server()),
            ("CONN", "web17956953887130", "xiaomi.com")
        );
        let conn = ims::XmMsgConn::decode(payload.as_slice()).unwrap();
        assert_eq!(
            (conn.version(), conn.udid(), conn.sdk()),
            (106, "websocket", 31)
        );
        // MIMCPacket{packetId "srv1", type PACKET_ACK, payload ""} (§4's plaintext).
        let packet = pb::MimcPacket {
            packet_id: Some("srv1".into()),
            r#type: Some(pb::MimcMsgType::PacketAck as i32),
            payload: Some(Default::default()),
            ..Default::default()
        };
        let bytes = packet.encode_to_vec();
        assert_eq!(
            bytes,
            [0x0a, 0x04, 0x73, 0x72, 0x76, 0x31, 0x20, 0x04, 0x2a, 0x00]
        );
    }
}
