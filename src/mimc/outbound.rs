//! The session core's frames as MIMC frames (mimc-wire.md §6–7), without I/O: the
//! BIND answer, PACKET_ACKs, deliveries gathered into COMPOUNDs (the recipient's
//! uuid, that connection's resource, ascending sequences, the right maxSequence),
//! the pull notification, PING answers and KICKs. Every SECMSG payload is RC4'd
//! with the user's key and a header id never used before on that key.
//!
//! Live deliveries are gathered until the transport flushes (the driver writes what
//! its queue holds, then flushes) or a COMPOUND is full, so a busy device gets few,
//! fuller COMPOUNDs; backlog pages become COMPOUNDs of their own.

use bytes::Bytes;
use prost::Message;

use super::session::{cmd, MimcSession, Peer};
use super::{crypto, frame, ims, pb};
use crate::api::token::MI_CHID;
use crate::pb as courier;
use crate::pb::frame::Kind;
use crate::protocol::backlog::MAX_BATCH_FRAME_BYTES;
use crate::protocol::{KickReason, Status};

/// Most packets in one COMPOUND (mimc-wire.md §7 suggests pages of about 100).
pub const MAX_COMPOUND_PACKETS: usize = 100;

/// The server name in every header.
const SERVER: &str = "xiaomi.com";

/// A refused BIND's strings, as the native SDKs act on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error_type: &'static str,
    pub reason: &'static str,
    pub desc: String,
}

/// A server frame: its header is the peer's shared fields (once bound) followed by
/// `cmd`, `id` and, for a SECMSG, cipher 1 (RC4); before BIND, `server`, `cmd` and
/// `id` only.
fn frame_to(peer: Option<&Peer>, cmd: &str, id: &str, payload: &[u8]) -> Bytes {
    let mut tail = Vec::with_capacity(24 + id.len());
    let shared: &[u8] = match peer {
        Some(peer) => peer.header_prefix(),
        None => {
            put_bytes(&mut tail, 3, SERVER.as_bytes());
            &[]
        }
    };
    put_bytes(&mut tail, 5, cmd.as_bytes());
    put_bytes(&mut tail, 7, id.as_bytes());
    if cmd == cmd::SECMSG {
        prost::encoding::int32::encode(9, &1, &mut tail);
    }
    frame::encode_split(shared, &tail, payload)
}

/// The answer to CONN: its id echoed, and the connection's challenge.
pub fn conn_answer(id: &str, challenge: &str) -> Bytes {
    let payload = ims::XmMsgConnResp {
        challenge: Some(challenge.into()),
        host: None,
    };
    frame_to(None, cmd::CONN, id, &payload.encode_to_vec())
}

/// The answer to BIND: success, or a refusal the SDK passes to statusChange.
pub fn bind_answer(id: &str, refusal: Option<Refusal>) -> Bytes {
    let payload = match refusal {
        None => ims::XmMsgBindResp {
            result: Some(true),
            ..Default::default()
        },
        Some(r) => ims::XmMsgBindResp {
            result: Some(false),
            error_type: Some(r.error_type.into()),
            error_reason: Some(r.reason.into()),
            error_desc: Some(r.desc),
        },
    };
    frame_to(None, cmd::BIND, id, &payload.encode_to_vec())
}

/// A KICK: the SDK closes at once; native SDKs read the reason as XMMsgBindResp.
pub fn kick(s: &mut MimcSession, reason: &str) -> Bytes {
    let id = s.next_id();
    let payload = ims::XmMsgBindResp {
        result: Some(false),
        error_type: Some("kick".into()),
        error_reason: Some(reason.into()),
        error_desc: None,
    };
    frame_to(s.peer.as_ref(), cmd::KICK, &id, &payload.encode_to_vec())
}

/// The header fields every server frame to this peer shares.
pub fn header_prefix(uuid: u64, resource: &str) -> Vec<u8> {
    ims::ClientHeader {
        chid: Some(MI_CHID as i32),
        uuid: Some(i64::try_from(uuid).unwrap_or(0)),
        server: Some(SERVER.into()),
        resource: Some(resource.into()),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Appends protobuf field `tag` holding `bytes` (wire type 2).
fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// A SECMSG carrying `packet`, RC4'd with the user's key and a fresh header id.
fn secmsg(s: &mut MimcSession, packet: pb::MimcPacket) -> Option<Bytes> {
    secmsg_encoded(s, packet.encode_to_vec())
}

/// A SECMSG carrying an encoded MIMCPacket.
fn secmsg_encoded(s: &mut MimcSession, mut payload: Vec<u8>) -> Option<Bytes> {
    let id = s.next_id();
    let peer = s.peer.as_ref()?;
    crypto::rc4_split(peer.key_prefix(), id.as_bytes(), &mut payload);
    Some(frame_to(Some(peer), cmd::SECMSG, &id, &payload))
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// PACKET_ACK for a send: its sequence and timestamp, or (sequence 0) the reason
/// it was refused in `errorMsg`, the only thing the web SDK shows.
pub fn packet_ack(s: &mut MimcSession, ack: &courier::ServerAck) -> Option<Bytes> {
    let peer = s.peer.as_ref()?;
    let ok = ack.code == Status::Ok.code();
    // MIMCPacketAck, field by field (2 uuid and 3 resource are the peer's).
    let mut body = Vec::with_capacity(64 + ack.packet_id.len() + peer.resource().len());
    put_bytes(&mut body, 1, ack.packet_id.as_bytes());
    prost::encoding::uint64::encode(2, &peer.uuid(), &mut body);
    put_bytes(&mut body, 3, peer.resource().as_bytes());
    prost::encoding::int64::encode(4, &signed(ack.sequence), &mut body);
    prost::encoding::int64::encode(5, &signed(ack.timestamp), &mut body);
    if !ok {
        put_bytes(&mut body, 7, ack.desc.as_bytes());
    }
    prost::encoding::int32::encode(8, &(ack.code as i32), &mut body);
    // MIMCPacket {1 packetId, 4 type PACKET_ACK, 5 payload}.
    let mut packet = Vec::with_capacity(body.len() + ack.packet_id.len() + 8);
    put_bytes(&mut packet, 1, ack.packet_id.as_bytes());
    prost::encoding::int32::encode(4, &(pb::MimcMsgType::PacketAck as i32), &mut packet);
    put_bytes(&mut packet, 5, &body);
    secmsg_encoded(s, packet)
}

/// One delivered message as the MIMCPacket the SDK hands its app: P2P_MESSAGE or
/// P2T_MESSAGE, the inner message re-encoded with `from` and `to`.
fn packet_of(peer: &Peer, d: courier::Deliver) -> pb::MimcPacket {
    let from = Some(pb::MimcUser {
        app_id: Some(peer.app_id()),
        app_account: Some(d.from_account),
        uuid: Some(d.from_uuid),
        resource: Some(d.from_resource),
    });
    let is_store = Some(!d.transient);
    let biz_type = Some(d.biz_type);
    let payload = Some(d.payload);
    let (kind, inner) = if d.topic_id != 0 {
        let msg = pb::Mimcp2tMessage {
            from,
            to: Some(pb::MimcGroup {
                app_id: Some(peer.app_id()),
                topic_id: Some(d.topic_id),
            }),
            payload,
            is_store,
            biz_type,
        };
        (pb::MimcMsgType::P2tMessage, msg.encode_to_vec())
    } else {
        let msg = pb::Mimcp2pMessage {
            from,
            to: Some(pb::MimcUser {
                app_id: Some(peer.app_id()),
                app_account: Some(d.to_account),
                ..Default::default()
            }),
            payload,
            is_store,
            biz_type,
        };
        (pb::MimcMsgType::P2pMessage, msg.encode_to_vec())
    };
    pb::MimcPacket {
        packet_id: Some(d.packet_id),
        sequence: Some(signed(d.sequence)),
        r#type: Some(kind as i32),
        payload: Some(inner.into()),
        timestamp: Some(signed(d.timestamp)),
        ..Default::default()
    }
}

/// A COMPOUND of packets for this connection: sorted, with their min and max.
fn compound(s: &mut MimcSession, mut packets: Vec<pb::MimcPacket>) -> Option<Bytes> {
    packets.sort_by_key(|p| p.sequence());
    let min = packets.first().map(|p| p.sequence());
    let max = packets.last().map(|p| p.sequence());
    compound_list(s, packets, min, max, None)
}

/// The pull notification: messages in `[min, max]` were not sent; the SDK acks
/// `max` (skip them) unless the app's handler says otherwise.
fn pull_notification(s: &mut MimcSession, min: u64, max: u64) -> Option<Bytes> {
    let exceeded = Some(pb::MimcPushStatus::StatusExceedCountLimit as i32);
    compound_list(
        s,
        Vec::new(),
        Some(signed(min)),
        Some(signed(max)),
        exceeded,
    )
}

/// A COMPOUND SECMSG: a MIMCPacketList for this connection's uuid and resource.
fn compound_list(
    s: &mut MimcSession,
    packets: Vec<pb::MimcPacket>,
    min_sequence: Option<i64>,
    max_sequence: Option<i64>,
    status: Option<i32>,
) -> Option<Bytes> {
    let peer = s.peer.as_ref()?;
    let list = pb::MimcPacketList {
        uuid: Some(peer.uuid()),
        resource: Some(peer.resource().to_owned()),
        max_sequence,
        min_sequence,
        packets,
        status,
    };
    let packet = pb::MimcPacket {
        r#type: Some(pb::MimcMsgType::Compound as i32),
        payload: Some(list.encode_to_vec().into()),
        ..Default::default()
    };
    secmsg(s, packet)
}

/// Why the core kicked, in the KICK's error_reason.
fn kick_reason(code: u32) -> &'static str {
    match KickReason::from_code(code) {
        Some(KickReason::Replaced) => "single-resource-kick",
        Some(reason) => reason.label(),
        None => "kick",
    }
}

/// A refused login's strings: the native SDKs fetch a new token on
/// `token-expired` (type) and `invalid-token` (reason).
fn login_refusal(r: &courier::LoginResult) -> Refusal {
    let desc = r.desc.clone();
    let (error_type, reason) = match Status::from_code(r.code) {
        Some(Status::Unauthorized) if desc == crate::auth::AuthError::Expired.to_string() => {
            ("token-expired", "token-expired")
        }
        Some(Status::Unauthorized) => ("auth", "invalid-token"),
        Some(Status::RateLimited) => ("bind", "too-many-devices"),
        Some(Status::BadRequest) => ("bind", "invalid-resource"),
        _ => ("server", "unavailable"),
    };
    Refusal {
        error_type,
        reason,
        desc,
    }
}

impl MimcSession {
    /// Translates one frame of the session core into MIMC frames, appended to
    /// `out`. Live deliveries are gathered; [`MimcSession::flush`] writes them.
    pub fn to_peer(&mut self, frame: &[u8], out: &mut impl Extend<Bytes>) {
        let kind = match courier::Frame::decode(frame) {
            Ok(courier::Frame { kind: Some(kind) }) => kind,
            _ => return,
        };
        match kind {
            Kind::Deliver(d) => {
                let Some(peer) = self.peer.as_ref() else {
                    return;
                };
                let packet = packet_of(peer, d);
                self.pending_bytes += packet.encoded_len();
                self.pending.push(packet);
                if self.pending.len() >= MAX_COMPOUND_PACKETS
                    || self.pending_bytes >= MAX_BATCH_FRAME_BYTES
                {
                    self.flush(out);
                }
            }
            Kind::DeliverBatch(courier::DeliverBatch { messages })
            | Kind::PullResult(courier::PullResult { messages, .. }) => {
                self.flush(out);
                let mut messages = messages.into_iter().peekable();
                while messages.peek().is_some() {
                    let Some(peer) = self.peer.as_ref() else {
                        return;
                    };
                    let page = messages
                        .by_ref()
                        .take(MAX_COMPOUND_PACKETS)
                        .map(|d| packet_of(peer, d))
                        .collect();
                    out.extend(compound(self, page));
                }
            }
            Kind::ServerAck(ack) => out.extend(packet_ack(self, &ack)),
            Kind::Error(e) if !e.packet_id.is_empty() => {
                let ack = courier::ServerAck {
                    packet_id: e.packet_id,
                    code: e.code,
                    desc: e.desc,
                    ..Default::default()
                };
                out.extend(packet_ack(self, &ack));
            }
            Kind::Error(e) => {
                crate::log_limited!(debug, code = e.code, desc = %e.desc, "core error with no MIMC form; not sent");
            }
            Kind::LoginResult(r) => {
                let ok = r.code == Status::Ok.code();
                self.login_answered(ok);
                let refusal = (!ok).then(|| login_refusal(&r));
                if let Some(refusal) = &refusal {
                    crate::log_limited!(info, reason = refusal.reason, desc = %refusal.desc, "MIMC BIND refused");
                }
                let id = self.next_id();
                out.extend([bind_answer(&id, refusal)]);
            }
            Kind::PullNotice(n) => {
                self.flush(out);
                let min = n.after_sequence.saturating_add(1);
                let max = n.before_sequence.saturating_sub(1).max(min);
                out.extend(pull_notification(self, min, max));
            }
            Kind::Pong(_) => {
                let id = self.next_id();
                out.extend([frame_to(self.peer.as_ref(), cmd::PING, &id, &[])]);
            }
            Kind::Kick(k) => {
                self.flush(out);
                out.extend([kick(self, kick_reason(k.code))]);
            }
            // The end of the backlog has no MIMC form; client-to-server kinds never
            // come from the core.
            _ => {}
        }
    }

    /// Writes the gathered live deliveries as one COMPOUND.
    pub fn flush(&mut self, out: &mut impl Extend<Bytes>) {
        if self.pending.is_empty() {
            return;
        }
        let packets = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        out.extend(compound(self, packets));
    }
}
