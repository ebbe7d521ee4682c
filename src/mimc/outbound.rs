//! The session core's frames as MIMC frames (mimc-wire.md §6–7), without I/O: the
//! BIND answer, PACKET_ACKs, deliveries gathered into COMPOUNDs (the recipient's
//! uuid, that connection's resource, ascending sequences, the right maxSequence),
//! the pull notification, PING answers and KICKs. Every SECMSG payload is RC4'd
//! with the user's key and a header id never used before on that key.
//!
//! Live deliveries are gathered until the transport flushes (the driver writes what
//! its queue holds, then flushes) or a COMPOUND is full, so a busy device gets few,
//! fuller COMPOUNDs; backlog pages become COMPOUNDs of their own.
//!
//! The per-message paths (a delivery, a server ack) read the core's frame where it
//! lies and write the SECMSG — frame prefix, header, the nested packets, checksum —
//! into one buffer, RC4'd in place ([`super::pbio`]): no message is decoded into
//! owned strings and re-encoded.

use bytes::Bytes;
use prost::Message;

use super::pbio::{self, Value};
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

/// A server frame that is not a SECMSG: its header is the peer's shared fields
/// (once bound) followed by `cmd` and `id`; before BIND, `server`, `cmd` and `id`
/// only.
fn frame_to(peer: Option<&Peer>, cmd: &str, id: &str, payload: &[u8]) -> Bytes {
    let mut header = Vec::with_capacity(64 + id.len());
    match peer {
        Some(peer) => put_shared_header(&mut header, peer),
        None => pbio::put_bytes(&mut header, 3, SERVER.as_bytes()),
    }
    pbio::put_bytes(&mut header, 5, cmd.as_bytes());
    pbio::put_bytes(&mut header, 7, id.as_bytes());
    frame::encode(&header, payload)
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

/// The ClientHeader's uuid: an int64.
fn header_uuid(peer: &Peer) -> u64 {
    int64(i64::try_from(peer.uuid()).unwrap_or(0))
}

/// Length of the ClientHeader fields every server frame to this peer shares.
fn shared_header_len(peer: &Peer) -> usize {
    pbio::varint_len(1, u64::from(MI_CHID))
        + pbio::varint_len(2, header_uuid(peer))
        + pbio::bytes_len(3, SERVER.len())
        + pbio::bytes_len(4, peer.resource().len())
}

/// Appends the ClientHeader fields every server frame to this peer shares: chid,
/// uuid, server and the resource (1–4).
fn put_shared_header(buf: &mut Vec<u8>, peer: &Peer) {
    pbio::put_varint(buf, 1, u64::from(MI_CHID));
    pbio::put_varint(buf, 2, header_uuid(peer));
    pbio::put_bytes(buf, 3, SERVER.as_bytes());
    pbio::put_bytes(buf, 4, peer.resource().as_bytes());
}

/// A SECMSG whose payload (`payload_len` bytes, written by `write`) is an encoded
/// MIMCPacket: the whole frame in one buffer, the payload RC4'd in place with the
/// user's key and a fresh header id (header: the peer's shared fields, `cmd`, `id`,
/// cipher 1).
fn secmsg(
    s: &mut MimcSession,
    payload_len: usize,
    write: impl FnOnce(&mut Vec<u8>, &Peer),
) -> Option<Bytes> {
    let id = s.next_id();
    let peer = s.peer.as_ref()?;
    let header_len = shared_header_len(peer)
        + pbio::bytes_len(5, cmd::SECMSG.len())
        + pbio::bytes_len(7, id.len())
        + pbio::varint_len(9, 1);
    let mut buf = Vec::with_capacity(frame::frame_len(header_len, payload_len));
    frame::put_prefix(&mut buf, header_len, payload_len)?;
    put_shared_header(&mut buf, peer);
    pbio::put_bytes(&mut buf, 5, cmd::SECMSG.as_bytes());
    pbio::put_bytes(&mut buf, 7, id.as_bytes());
    pbio::put_varint(&mut buf, 9, 1);
    let start = buf.len();
    write(&mut buf, peer);
    debug_assert_eq!(buf.len() - start, payload_len, "SECMSG payload length");
    crypto::rc4_split(peer.key_prefix(), id.as_bytes(), &mut buf[start..]);
    frame::finish(&mut buf);
    Some(Bytes::from(buf))
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An int64 field's varint (negative values take ten bytes, as prost writes them).
fn int64(n: i64) -> u64 {
    n as u64
}

/// What a PACKET_ACK answers: a ServerAck of the core (or a refusal of the codec),
/// borrowed.
#[derive(Debug, Default, Clone, Copy)]
pub struct AckView<'a> {
    pub packet_id: &'a [u8],
    pub sequence: u64,
    pub timestamp: u64,
    pub code: u32,
    pub desc: &'a [u8],
}

impl<'a> AckView<'a> {
    /// Reads an encoded ServerAck.
    fn read(buf: &'a [u8]) -> Result<Self, pbio::ReadError> {
        let mut ack = AckView::default();
        for field in pbio::fields(buf) {
            match field? {
                (1, Value::Bytes(b)) => ack.packet_id = b,
                (2, Value::Varint(v)) => ack.sequence = v,
                (3, Value::Varint(v)) => ack.timestamp = v,
                (4, Value::Varint(v)) => ack.code = v as u32,
                (5, Value::Bytes(b)) => ack.desc = b,
                _ => {}
            }
        }
        Ok(ack)
    }
}

/// PACKET_ACK for a send: its sequence and timestamp, or (sequence 0) the reason
/// it was refused in `errorMsg`, the only thing the web SDK shows.
pub fn packet_ack(s: &mut MimcSession, ack: &AckView<'_>) -> Option<Bytes> {
    let peer = s.peer.as_ref()?;
    let ok = ack.code == Status::Ok.code();
    let code = i64::from(ack.code as i32);
    // MIMCPacketAck {1 packetId, 2 uuid, 3 resource, 4 sequence, 5 timestamp,
    // 7 errorMsg (refusals), 8 code}; 2 and 3 are the peer's.
    let body_len = pbio::bytes_len(1, ack.packet_id.len())
        + pbio::varint_len(2, peer.uuid())
        + pbio::bytes_len(3, peer.resource().len())
        + pbio::varint_len(4, int64(signed(ack.sequence)))
        + pbio::varint_len(5, int64(signed(ack.timestamp)))
        + if ok {
            0
        } else {
            pbio::bytes_len(7, ack.desc.len())
        }
        + pbio::varint_len(8, int64(code));
    // MIMCPacket {1 packetId, 4 type PACKET_ACK, 5 payload}.
    let packet_type = pb::MimcMsgType::PacketAck as u64;
    let packet_len = pbio::bytes_len(1, ack.packet_id.len())
        + pbio::varint_len(4, packet_type)
        + pbio::bytes_len(5, body_len);
    secmsg(s, packet_len, |buf, peer| {
        pbio::put_bytes(buf, 1, ack.packet_id);
        pbio::put_varint(buf, 4, packet_type);
        pbio::put_len(buf, 5, body_len);
        pbio::put_bytes(buf, 1, ack.packet_id);
        pbio::put_varint(buf, 2, peer.uuid());
        pbio::put_bytes(buf, 3, peer.resource().as_bytes());
        pbio::put_varint(buf, 4, int64(signed(ack.sequence)));
        pbio::put_varint(buf, 5, int64(signed(ack.timestamp)));
        if !ok {
            pbio::put_bytes(buf, 7, ack.desc);
        }
        pbio::put_varint(buf, 8, int64(code));
    })
}

/// A Deliver of the core, borrowed from its frame. Strings stay bytes: they are
/// copied into the packet, never read.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct DeliverView<'a> {
    sequence: u64,
    timestamp: u64,
    packet_id: &'a [u8],
    from_uuid: u64,
    from_account: &'a [u8],
    from_resource: &'a [u8],
    to_account: &'a [u8],
    topic_id: u64,
    payload: &'a [u8],
    biz_type: &'a [u8],
    transient: bool,
}

impl<'a> DeliverView<'a> {
    /// Reads an encoded Deliver.
    fn read(buf: &'a [u8]) -> Result<Self, pbio::ReadError> {
        let mut d = DeliverView::default();
        for field in pbio::fields(buf) {
            match field? {
                (1, Value::Varint(v)) => d.sequence = v,
                (2, Value::Varint(v)) => d.timestamp = v,
                (3, Value::Bytes(b)) => d.packet_id = b,
                (4, Value::Varint(v)) => d.from_uuid = v,
                (5, Value::Bytes(b)) => d.from_account = b,
                (6, Value::Bytes(b)) => d.from_resource = b,
                (7, Value::Bytes(b)) => d.to_account = b,
                (8, Value::Varint(v)) => d.topic_id = v,
                (9, Value::Bytes(b)) => d.payload = b,
                (10, Value::Bytes(b)) => d.biz_type = b,
                (11, Value::Varint(v)) => d.transient = v != 0,
                _ => {}
            }
        }
        Ok(d)
    }

    fn sequence(&self) -> i64 {
        signed(self.sequence)
    }
}

/// The messages of an encoded DeliverBatch or PullResult (field 1 of both).
fn delivers(buf: &[u8]) -> impl Iterator<Item = Result<DeliverView<'_>, pbio::ReadError>> {
    pbio::fields(buf).filter_map(|field| match field {
        Ok((1, Value::Bytes(d))) => Some(DeliverView::read(d)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// Appends one delivered message to a MIMCPacketList being built, as its field 4:
/// the MIMCPacket the SDK hands its app {1 packetId, 3 sequence, 4 type P2P_MESSAGE
/// or P2T_MESSAGE, 5 payload, 6 timestamp}, whose payload is the MIMCP2PMessage
/// {1 from, 2 to (a MIMCUser), 3 payload, 4 isStore, 5 bizType} or MIMCP2TMessage
/// (`to` a MIMCGroup).
fn put_delivery(buf: &mut Vec<u8>, app_id: u64, d: &DeliverView<'_>) {
    // from: MIMCUser {1 appId, 2 appAccount, 3 uuid, 4 resource}.
    let from_len = pbio::varint_len(1, app_id)
        + pbio::bytes_len(2, d.from_account.len())
        + pbio::varint_len(3, d.from_uuid)
        + pbio::bytes_len(4, d.from_resource.len());
    let topic = d.topic_id != 0;
    // to: MIMCGroup {1 appId, 2 topicId}, or MIMCUser {1 appId, 2 appAccount}.
    let to_len = pbio::varint_len(1, app_id)
        + match topic {
            true => pbio::varint_len(2, d.topic_id),
            false => pbio::bytes_len(2, d.to_account.len()),
        };
    let inner_len = pbio::bytes_len(1, from_len)
        + pbio::bytes_len(2, to_len)
        + pbio::bytes_len(3, d.payload.len())
        + pbio::varint_len(4, 1)
        + pbio::bytes_len(5, d.biz_type.len());
    let kind = match topic {
        true => pb::MimcMsgType::P2tMessage,
        false => pb::MimcMsgType::P2pMessage,
    } as u64;
    let packet_len = pbio::bytes_len(1, d.packet_id.len())
        + pbio::varint_len(3, int64(d.sequence()))
        + pbio::varint_len(4, kind)
        + pbio::bytes_len(5, inner_len)
        + pbio::varint_len(6, int64(signed(d.timestamp)));
    buf.reserve(pbio::bytes_len(4, packet_len));
    pbio::put_len(buf, 4, packet_len);
    pbio::put_bytes(buf, 1, d.packet_id);
    pbio::put_varint(buf, 3, int64(d.sequence()));
    pbio::put_varint(buf, 4, kind);
    pbio::put_len(buf, 5, inner_len);
    pbio::put_len(buf, 1, from_len);
    pbio::put_varint(buf, 1, app_id);
    pbio::put_bytes(buf, 2, d.from_account);
    pbio::put_varint(buf, 3, d.from_uuid);
    pbio::put_bytes(buf, 4, d.from_resource);
    pbio::put_len(buf, 2, to_len);
    pbio::put_varint(buf, 1, app_id);
    match topic {
        true => pbio::put_varint(buf, 2, d.topic_id),
        false => pbio::put_bytes(buf, 2, d.to_account),
    }
    pbio::put_bytes(buf, 3, d.payload);
    pbio::put_varint(buf, 4, u64::from(!d.transient));
    pbio::put_bytes(buf, 5, d.biz_type);
    pbio::put_varint(buf, 6, int64(signed(d.timestamp)));
}

/// Deliveries gathered for one COMPOUND: their MIMCPacketList entries, and where
/// each starts and ends with its sequence (to sort them when they came out of
/// order).
#[derive(Debug, Default)]
pub(super) struct Gathered {
    entries: Vec<u8>,
    index: Vec<(i64, u32, u32)>,
}

impl Gathered {
    fn push(&mut self, app_id: u64, d: &DeliverView<'_>) {
        let start = self.entries.len();
        put_delivery(&mut self.entries, app_id, d);
        let end = self.entries.len();
        // A COMPOUND is at most MAX_BATCH_FRAME_BYTES (checked by the caller) plus
        // one message: offsets fit u32.
        self.index.push((d.sequence(), start as u32, end as u32));
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn bytes(&self) -> usize {
        self.entries.len()
    }

    /// The entries in ascending sequence order, and the lowest and highest.
    fn sorted(&self) -> (std::borrow::Cow<'_, [u8]>, Option<i64>, Option<i64>) {
        let in_order = self.index.windows(2).all(|w| w[0].0 <= w[1].0);
        let entries = match in_order {
            true => std::borrow::Cow::Borrowed(self.entries.as_slice()),
            false => {
                let mut index = self.index.clone();
                index.sort_by_key(|&(seq, ..)| seq);
                let mut sorted = Vec::with_capacity(self.entries.len());
                for (_, start, end) in index {
                    sorted.extend_from_slice(&self.entries[start as usize..end as usize]);
                }
                std::borrow::Cow::Owned(sorted)
            }
        };
        let min = self.index.iter().map(|e| e.0).min();
        let max = self.index.iter().map(|e| e.0).max();
        (entries, min, max)
    }
}

/// A COMPOUND of gathered deliveries: sorted, with their min and max.
fn compound(s: &mut MimcSession, gathered: &Gathered) -> Option<Bytes> {
    let (entries, min, max) = gathered.sorted();
    compound_list(s, &entries, min, max, None)
}

/// The pull notification: messages in `[min, max]` were not sent; the SDK acks
/// `max` (skip them) unless the app's handler says otherwise.
fn pull_notification(s: &mut MimcSession, min: u64, max: u64) -> Option<Bytes> {
    let exceeded = Some(pb::MimcPushStatus::StatusExceedCountLimit as u64);
    compound_list(s, &[], Some(signed(min)), Some(signed(max)), exceeded)
}

/// A COMPOUND SECMSG: MIMCPacket {4 type COMPOUND, 5 payload MIMCPacketList {1 uuid,
/// 2 resource, 3 maxSequence, 4 packets (`entries`, already encoded), 5 status,
/// 6 minSequence}} for this connection's uuid and resource.
fn compound_list(
    s: &mut MimcSession,
    entries: &[u8],
    min_sequence: Option<i64>,
    max_sequence: Option<i64>,
    status: Option<u64>,
) -> Option<Bytes> {
    let peer = s.peer.as_ref()?;
    let list_len = pbio::varint_len(1, peer.uuid())
        + pbio::bytes_len(2, peer.resource().len())
        + max_sequence.map_or(0, |n| pbio::varint_len(3, int64(n)))
        + entries.len()
        + status.map_or(0, |n| pbio::varint_len(5, n))
        + min_sequence.map_or(0, |n| pbio::varint_len(6, int64(n)));
    let kind = pb::MimcMsgType::Compound as u64;
    let packet_len = pbio::varint_len(4, kind) + pbio::bytes_len(5, list_len);
    secmsg(s, packet_len, |buf, peer| {
        pbio::put_varint(buf, 4, kind);
        pbio::put_len(buf, 5, list_len);
        pbio::put_varint(buf, 1, peer.uuid());
        pbio::put_bytes(buf, 2, peer.resource().as_bytes());
        if let Some(n) = max_sequence {
            pbio::put_varint(buf, 3, int64(n));
        }
        buf.extend_from_slice(entries);
        if let Some(n) = status {
            pbio::put_varint(buf, 5, n);
        }
        if let Some(n) = min_sequence {
            pbio::put_varint(buf, 6, int64(n));
        }
    })
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

/// The kind of a Courier frame (its one field) and that field's bytes.
fn frame_kind(frame: &[u8]) -> Option<(u32, &[u8])> {
    match pbio::fields(frame).next()? {
        Ok((tag, Value::Bytes(body))) => Some((tag, body)),
        _ => None,
    }
}

/// Courier frame kinds (`Frame.kind` field numbers) the codec reads in place.
const KIND_SERVER_ACK: u32 = 4;
const KIND_DELIVER: u32 = 5;
const KIND_DELIVER_BATCH: u32 = 6;
const KIND_PULL_RESULT: u32 = 15;

impl MimcSession {
    /// Translates one frame of the session core into MIMC frames, appended to
    /// `out`. Live deliveries are gathered; [`MimcSession::flush`] writes them.
    pub fn to_peer(&mut self, frame: &[u8], out: &mut impl Extend<Bytes>) {
        let Some((tag, body)) = frame_kind(frame) else {
            return;
        };
        match tag {
            KIND_DELIVER => {
                let (Some(peer), Ok(d)) = (self.peer.as_ref(), DeliverView::read(body)) else {
                    return;
                };
                let gathered = self.pending.get_or_insert_with(Default::default);
                gathered.push(peer.app_id(), &d);
                if gathered.len() >= MAX_COMPOUND_PACKETS
                    || gathered.bytes() >= MAX_BATCH_FRAME_BYTES
                {
                    self.flush(out);
                }
                return;
            }
            KIND_DELIVER_BATCH | KIND_PULL_RESULT => {
                self.flush(out);
                let Some(app_id) = self.peer.as_ref().map(Peer::app_id) else {
                    return;
                };
                let mut page = Gathered::default();
                for d in delivers(body) {
                    let Ok(d) = d else { break };
                    page.push(app_id, &d);
                    if page.len() >= MAX_COMPOUND_PACKETS {
                        out.extend(compound(self, &std::mem::take(&mut page)));
                    }
                }
                if page.len() > 0 {
                    out.extend(compound(self, &page));
                }
                return;
            }
            KIND_SERVER_ACK => {
                if let Ok(ack) = AckView::read(body) {
                    out.extend(packet_ack(self, &ack));
                }
                return;
            }
            _ => {}
        }
        // The rare kinds, decoded whole.
        let kind = match courier::Frame::decode(frame) {
            Ok(courier::Frame { kind: Some(kind) }) => kind,
            _ => return,
        };
        match kind {
            Kind::Error(e) if !e.packet_id.is_empty() => {
                let ack = AckView {
                    packet_id: e.packet_id.as_bytes(),
                    code: e.code,
                    desc: e.desc.as_bytes(),
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
        if let Some(gathered) = self.pending.take() {
            out.extend(compound(self, &gathered));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packet prost writes for a delivery: the schema's own encoding.
    fn prost_packet(app_id: u64, d: &courier::Deliver) -> pb::MimcPacket {
        let from = Some(pb::MimcUser {
            app_id: Some(app_id),
            app_account: Some(d.from_account.clone()),
            uuid: Some(d.from_uuid),
            resource: Some(d.from_resource.clone()),
        });
        let (payload, is_store, biz_type) = (
            Some(d.payload.clone()),
            Some(!d.transient),
            Some(d.biz_type.clone()),
        );
        let (kind, inner) = match d.topic_id {
            0 => (
                pb::MimcMsgType::P2pMessage,
                pb::Mimcp2pMessage {
                    from,
                    to: Some(pb::MimcUser {
                        app_id: Some(app_id),
                        app_account: Some(d.to_account.clone()),
                        ..Default::default()
                    }),
                    payload,
                    is_store,
                    biz_type,
                }
                .encode_to_vec(),
            ),
            topic_id => (
                pb::MimcMsgType::P2tMessage,
                pb::Mimcp2tMessage {
                    from,
                    to: Some(pb::MimcGroup {
                        app_id: Some(app_id),
                        topic_id: Some(topic_id),
                    }),
                    payload,
                    is_store,
                    biz_type,
                }
                .encode_to_vec(),
            ),
        };
        pb::MimcPacket {
            packet_id: Some(d.packet_id.clone()),
            sequence: Some(signed(d.sequence)),
            r#type: Some(kind as i32),
            payload: Some(inner.into()),
            timestamp: Some(signed(d.timestamp)),
            ..Default::default()
        }
    }

    #[test]
    fn a_delivery_is_written_as_the_bytes_prost_writes() {
        let full = courier::Deliver {
            sequence: 1 << 40,
            timestamp: 1_700_000_000_123,
            packet_id: "p-1".into(),
            from_uuid: 7,
            from_account: "bob".into(),
            from_resource: "phone".into(),
            to_account: "ann".into(),
            topic_id: 0,
            payload: vec![9; 300].into(),
            biz_type: "text".into(),
            transient: false,
        };
        let cases = [
            full.clone(),
            courier::Deliver {
                topic_id: 5,
                to_account: String::new(),
                transient: true,
                ..full.clone()
            },
            courier::Deliver::default(),
            courier::Deliver {
                sequence: u64::MAX,
                timestamp: u64::MAX,
                from_uuid: u64::MAX,
                topic_id: u64::MAX,
                ..full
            },
        ];
        for (app_id, d) in [0, 2882303761517, u64::MAX]
            .into_iter()
            .zip(cases.iter().cycle())
        {
            let encoded = d.encode_to_vec();
            let view = DeliverView::read(&encoded).unwrap();
            let mut ours = Vec::new();
            put_delivery(&mut ours, app_id, &view);
            let list = pb::MimcPacketList {
                packets: vec![prost_packet(app_id, d)],
                ..Default::default()
            };
            assert_eq!(ours, list.encode_to_vec(), "{d:?}");
        }
    }

    #[test]
    fn the_shared_header_is_the_one_prost_writes() {
        for (uuid, resource) in [
            (0, ""),
            (42, "webA"),
            (u64::MAX, "a-much-longer-resource-of-the-page"),
        ] {
            let peer = Peer::new(uuid, 1, b"key_", resource);
            let mut ours = Vec::new();
            put_shared_header(&mut ours, &peer);
            let header = ims::ClientHeader {
                chid: Some(MI_CHID as i32),
                uuid: Some(i64::try_from(uuid).unwrap_or(0)),
                server: Some(SERVER.into()),
                resource: Some(resource.into()),
                ..Default::default()
            };
            assert_eq!(ours, header.encode_to_vec());
            assert_eq!(ours.len(), shared_header_len(&peer));
        }
    }

    #[test]
    fn header_ids_are_the_formatted_ones() {
        for (nonce, counter) in [(0, 0), (1, 9), (0xabc, 10), (u64::MAX, u64::MAX)] {
            let id = super::super::session::HeaderId::new(nonce, counter);
            assert_eq!(&*id, format!("s{nonce:x}.{counter}"));
        }
    }
}
