//! One MIMC web connection's protocol state, without I/O (mimc-wire.md §6–7): the
//! handshake (CONN → challenge, BIND with its XIAOMI-PASS signature), and the
//! translation of what the peer sends into the session core's own requests —
//! Courier frames (`Login`, `Send`, `Ack`, `Ping`, `Logout`) and a backlog resync
//! for PULL — which the core checks and runs exactly as it does for a Courier
//! client. The other direction (the core's frames into MIMC frames) is
//! [`super::outbound`].
//!
//! What only MIMC has is checked here: the frame layout and checksum, the order
//! CONN → BIND → SECMSG, the header uuid against the token's, and the signature,
//! whose key (the user's `miUserSecurityKey`) comes from the secret that signed the
//! token. The transport looks the app up when asked ([`FromPeer::CheckBind`]) and
//! hands it to [`MimcSession::bind_checked`].

use bytes::Bytes;
use prost::Message;

use super::frame::{self, FrameLimits};
use super::outbound::{self, Refusal};
use super::pbio::{self, Value};
use super::{crypto, ims, pb};
use crate::api::token::MI_CHID;
use crate::auth;
use crate::pb as courier;
use crate::pb::frame::Kind;
use crate::protocol::PROTOCOL_VERSION;
use crate::session::Inbound;

/// MIMC header commands (`ClientHeader.cmd`).
pub mod cmd {
    pub const CONN: &str = "CONN";
    pub const BIND: &str = "BIND";
    pub const PING: &str = "PING";
    pub const SECMSG: &str = "SECMSG";
    pub const UBND: &str = "UBND";
    pub const KICK: &str = "KICK";
}

/// Why a connection is closed by the codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The last frame to write first (a BIND refusal), if any.
    pub last: Option<Bytes>,
    /// For the log line.
    pub why: String,
    /// WebSocket close code: 1002 (protocol error) or 1008 (policy: refused BIND).
    pub code: u16,
}

/// What the transport does with one message from the peer.
#[derive(Debug, PartialEq)]
pub enum FromPeer {
    /// Nothing to do for the codec (counted by the core like a frame).
    Nothing,
    /// Write this frame back (the CONN challenge, a refused second BIND).
    Answer(Bytes),
    /// Look up this app, then call [`MimcSession::bind_checked`] with it.
    CheckBind { app_id: u64 },
    /// Hand this to the session core.
    Core(Inbound),
    /// UBND: write this KICK, then hand the core its `Logout`.
    Logout { kick: Bytes, logout: Inbound },
    /// Refuse the peer and close.
    Close(Close),
}

/// What a BIND carried, kept while the app is looked up.
#[derive(Debug)]
struct PendingBind {
    challenge: String,
    header_id: String,
    uuid: u64,
    resource: String,
    token: String,
    /// The token, parsed (its signature is checked once the app is known).
    claimed: auth::Unverified,
    kick: String,
    client_attrs: String,
    cloud_attrs: String,
    sig: String,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for CONN; this challenge will answer it.
    Connecting(Box<str>),
    /// CONN answered with this challenge; waiting for BIND.
    Challenged(Box<str>),
    /// A BIND waits for its app's secrets.
    Checking(Box<PendingBind>),
    /// The signature passed; the core checks the token and answers.
    Binding,
    Bound,
    Closed,
}

/// Who the connection is, once its BIND signature passed, in one allocation kept
/// for the connection's life: the uuid and app id, the RC4 key prefix
/// (`base64-decode(miUserSecurityKey) ‖ '_'`; a frame's key is this and its header
/// id), and the resource exactly as the BIND header carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(Box<[u8]>);

/// Bytes of [`Peer`] before the key: uuid, app id (u64 each), the key's and the
/// resource's lengths (u16 each).
const PEER_FIXED: usize = 20;

impl Peer {
    pub(super) fn new(uuid: u64, app_id: u64, key_prefix: &[u8], resource: &str) -> Peer {
        // Both are bounded far below: an 18-byte key; a resource within the header
        // limit (at most 16 KiB).
        let key_len = u16::try_from(key_prefix.len()).unwrap_or(0);
        let resource_len = u16::try_from(resource.len()).unwrap_or(0);
        let key = &key_prefix[..usize::from(key_len)];
        let resource = &resource.as_bytes()[..usize::from(resource_len)];
        let mut bytes = Vec::with_capacity(PEER_FIXED + key.len() + resource.len());
        bytes.extend_from_slice(&uuid.to_le_bytes());
        bytes.extend_from_slice(&app_id.to_le_bytes());
        bytes.extend_from_slice(&key_len.to_le_bytes());
        bytes.extend_from_slice(&resource_len.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(resource);
        Peer(bytes.into_boxed_slice())
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(word)
    }

    fn u16_at(&self, at: usize) -> usize {
        usize::from(u16::from_le_bytes([self.0[at], self.0[at + 1]]))
    }

    pub fn uuid(&self) -> u64 {
        self.u64_at(0)
    }

    pub fn app_id(&self) -> u64 {
        self.u64_at(8)
    }

    /// `base64-decode(miUserSecurityKey) ‖ '_'`.
    pub fn key_prefix(&self) -> &[u8] {
        &self.0[PEER_FIXED..PEER_FIXED + self.u16_at(16)]
    }

    /// The resource exactly as the BIND header carried it: the SDK compares each
    /// COMPOUND's resource with its own.
    pub fn resource(&self) -> &str {
        let end = self.0.len();
        let start = end.saturating_sub(self.u16_at(18));
        std::str::from_utf8(&self.0[start..]).unwrap_or_default()
    }
}

/// One MIMC web connection.
#[derive(Debug)]
pub struct MimcSession {
    /// The frame limits, as u32s (they are far below).
    max_header_bytes: u32,
    max_payload_bytes: u32,
    phase: Phase,
    /// Set once the signature passed.
    pub(super) peer: Option<Peer>,
    /// Outbound header ids are `s<nonce>.<counter>`: the nonce is random per
    /// connection, so an id never repeats for one user key (a repeated id would
    /// repeat the RC4 keystream).
    id_nonce: u64,
    id_counter: u64,
    /// Live deliveries gathered into the next COMPOUND (see `outbound`).
    pub(super) pending: Option<Box<outbound::Gathered>>,
    /// The BIND was refused: the transport lets the refusal arrive before closing.
    pub(super) refused: bool,
    /// When the last PULL was taken (seconds since the epoch; 0: none yet).
    last_pull_s: u32,
}

/// An outbound header id, `s<nonce in hex>.<counter in decimal>`, built without
/// formatting machinery or an allocation (one per server frame).
#[derive(Clone, Copy)]
pub(super) struct HeaderId {
    len: u8,
    bytes: [u8; 40],
}

impl HeaderId {
    pub(super) fn new(nonce: u64, counter: u64) -> HeaderId {
        // 1 + 16 hex digits + 1 + 20 decimal digits ≤ 40.
        let mut id = HeaderId {
            len: 0,
            bytes: [0; 40],
        };
        id.push(b's');
        let hex_digits = (16 - nonce.leading_zeros() as usize / 4).max(1);
        for i in (0..hex_digits).rev() {
            id.push(b"0123456789abcdef"[(nonce >> (4 * i)) as usize & 0xf]);
        }
        id.push(b'.');
        let mut decimal = [0u8; 20];
        let mut at = decimal.len();
        let mut n = counter;
        loop {
            at -= 1;
            decimal[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &digit in &decimal[at..] {
            id.push(digit);
        }
        id
    }

    fn push(&mut self, byte: u8) {
        self.bytes[usize::from(self.len)] = byte;
        self.len += 1;
    }
}

impl std::ops::Deref for HeaderId {
    type Target = str;

    fn deref(&self) -> &str {
        // Only ASCII is pushed.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// PULLs closer together than this are ignored (each re-reads the backlog).
pub const PULL_INTERVAL_S: u32 = 1;

/// What the codec reads of a client's MIMCPacket, borrowed from the frame: its id,
/// type and payload (the package name, 2, is skipped).
#[derive(Debug, Default)]
struct InboundPacket<'a> {
    packet_id: &'a str,
    r#type: Option<i32>,
    payload: &'a [u8],
}

impl<'a> InboundPacket<'a> {
    fn read(buf: &'a [u8]) -> Result<Self, pbio::ReadError> {
        let mut p = InboundPacket::default();
        for field in pbio::fields(buf) {
            match field? {
                (1, Value::Bytes(b)) => p.packet_id = pbio::text(b)?,
                (4, Value::Varint(v)) => p.r#type = Some(v as i32),
                (5, Value::Bytes(b)) => p.payload = b,
                _ => {}
            }
        }
        Ok(p)
    }
}

/// What a send needs of MIMCP2PMessage and MIMCP2TMessage, which differ only in
/// `to` (a MIMCUser or a MIMCGroup, read by the caller): the payload and its flags.
/// `from` (field 1) is skipped unread: the sender is the session's.
#[derive(Debug, Default)]
struct InboundSend<'a> {
    to: &'a [u8],
    payload: &'a [u8],
    is_store: Option<bool>,
    biz_type: &'a str,
}

impl<'a> InboundSend<'a> {
    fn read(buf: &'a [u8]) -> Result<Self, pbio::ReadError> {
        let mut m = InboundSend::default();
        for field in pbio::fields(buf) {
            match field? {
                (2, Value::Bytes(b)) => m.to = b,
                (3, Value::Bytes(b)) => m.payload = b,
                (4, Value::Varint(v)) => m.is_store = Some(v != 0),
                (5, Value::Bytes(b)) => m.biz_type = pbio::text(b)?,
                _ => {}
            }
        }
        Ok(m)
    }
}

/// The recipient of a p2p send: MIMCUser {2 appAccount, 4 resource}, or of a topic
/// send: MIMCGroup {2 topicId}.
fn read_to(to: &[u8], topic: bool) -> Result<(&str, &str, u64), pbio::ReadError> {
    let (mut account, mut resource, mut topic_id) = ("", "", 0);
    for field in pbio::fields(to) {
        match (topic, field?) {
            (false, (2, Value::Bytes(b))) => account = pbio::text(b)?,
            (false, (4, Value::Bytes(b))) => resource = pbio::text(b)?,
            (true, (2, Value::Varint(v))) => topic_id = v,
            _ => {}
        }
    }
    Ok((account, resource, topic_id))
}

/// The ClientHeader fields the codec reads, borrowed from the frame (no string is
/// allocated for a frame's header; the other fields are skipped).
#[derive(Debug, Default)]
struct Header<'a> {
    uuid: i64,
    resource: &'a str,
    cmd: &'a str,
    id: &'a str,
}

impl<'a> Header<'a> {
    fn cmd(&self) -> &'a str {
        self.cmd
    }
    fn id(&self) -> &'a str {
        self.id
    }
    fn uuid(&self) -> i64 {
        self.uuid
    }
    fn resource(&self) -> &'a str {
        self.resource
    }

    /// Reads fields 2 (uuid), 4 (resource), 5 (cmd) and 7 (id) of a ClientHeader;
    /// a field that is not valid protobuf, or a string that is not UTF-8, is an error.
    fn read(buf: &'a [u8]) -> Result<Header<'a>, pbio::ReadError> {
        let mut h = Header::default();
        for field in pbio::fields(buf) {
            match field? {
                (2, Value::Varint(v)) => h.uuid = v as i64,
                (4, Value::Bytes(b)) => h.resource = pbio::text(b)?,
                (5, Value::Bytes(b)) => h.cmd = pbio::text(b)?,
                (7, Value::Bytes(b)) => h.id = pbio::text(b)?,
                _ => {}
            }
        }
        Ok(h)
    }
}

/// Keeps at most this many bytes of a peer-controlled string in a log line.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn protocol_error(why: impl Into<String>) -> FromPeer {
    FromPeer::Close(Close {
        last: None,
        why: why.into(),
        code: 1002,
    })
}

impl MimcSession {
    /// A new connection; `challenge` and `id_nonce` are random, drawn by the
    /// transport for each connection.
    pub fn new(limits: FrameLimits, challenge: u128, id_nonce: u64) -> Self {
        // 96 bits as 24 hex characters, like the challenges the SDK was seen with.
        let challenge = format!("{:024x}", challenge >> 32).into_boxed_str();
        MimcSession {
            max_header_bytes: u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX),
            max_payload_bytes: u32::try_from(limits.max_payload_bytes).unwrap_or(u32::MAX),
            phase: Phase::Connecting(challenge),
            peer: None,
            id_nonce,
            id_counter: 0,
            pending: None,
            refused: false,
            last_pull_s: 0,
        }
    }

    /// Whether the BIND succeeded (the core accepted the token).
    pub fn is_bound(&self) -> bool {
        matches!(self.phase, Phase::Bound)
    }

    /// Whether the BIND was refused: the refusal should reach the SDK before the
    /// socket closes (it reads frames asynchronously).
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// A fresh outbound header id.
    pub(super) fn next_id(&mut self) -> HeaderId {
        self.id_counter += 1;
        HeaderId::new(self.id_nonce, self.id_counter)
    }

    /// Handles one binary WebSocket message from the peer, at `now_ms`.
    pub fn on_message(&mut self, message: &Bytes, now_ms: u64) -> FromPeer {
        if matches!(self.phase, Phase::Closed) {
            return FromPeer::Nothing;
        }
        let limits = FrameLimits {
            max_header_bytes: self.max_header_bytes as usize,
            max_payload_bytes: self.max_payload_bytes as usize,
        };
        let frame = match frame::decode(message, limits) {
            Ok(frame) => frame,
            Err(e) => return self.close(protocol_error(format!("bad MIMC frame: {e}"))),
        };
        let header = match Header::read(frame.header.as_ref()) {
            Ok(h) => h,
            Err(e) => return self.close(protocol_error(format!("bad ClientHeader: {e}"))),
        };
        match header.cmd() {
            cmd::CONN => self.on_conn(&header, &frame.payload),
            cmd::BIND => self.on_bind(&header, &frame.payload),
            cmd::PING => match self.phase {
                Phase::Bound | Phase::Binding => {
                    FromPeer::Core(core_frame(Kind::Ping(courier::Ping { nonce: 0 })))
                }
                _ => FromPeer::Nothing,
            },
            cmd::UBND => match self.phase {
                Phase::Bound => {
                    self.phase = Phase::Closed;
                    FromPeer::Logout {
                        kick: outbound::kick(self, "logout"),
                        logout: core_frame(Kind::Logout(courier::Logout {})),
                    }
                }
                _ => self.close(protocol_error("UBND before a successful BIND")),
            },
            cmd::SECMSG => match self.phase {
                Phase::Bound => self.on_secmsg(&header, &frame.payload, now_ms),
                _ => self.close(protocol_error("SECMSG before a successful BIND")),
            },
            other => {
                crate::log_limited!(
                    info,
                    cmd = clip(other),
                    "MIMC frame with an unknown cmd ignored"
                );
                FromPeer::Nothing
            }
        }
    }

    fn close(&mut self, close: FromPeer) -> FromPeer {
        self.phase = Phase::Closed;
        close
    }

    fn on_conn(&mut self, header: &Header<'_>, payload: &[u8]) -> FromPeer {
        let Phase::Connecting(challenge) = &self.phase else {
            return self.close(protocol_error("CONN twice on one connection"));
        };
        if let Err(e) = ims::XmMsgConn::decode(payload) {
            return self.close(protocol_error(format!("bad XMMsgConn: {e}")));
        }
        let challenge = challenge.clone();
        let answer = outbound::conn_answer(header.id(), challenge.as_ref());
        self.phase = Phase::Challenged(challenge);
        FromPeer::Answer(answer)
    }

    fn on_bind(&mut self, header: &Header<'_>, payload: &[u8]) -> FromPeer {
        let challenge = match &self.phase {
            Phase::Challenged(c) => c.to_string(),
            Phase::Connecting(_) => return self.close(protocol_error("BIND before CONN")),
            Phase::Bound | Phase::Binding | Phase::Checking(_) => {
                crate::log_limited!(info, "MIMC BIND on a bound connection refused");
                return FromPeer::Answer(outbound::bind_answer(
                    header.id(),
                    Some(Refusal {
                        error_type: "bind",
                        reason: "already-bound",
                        desc: "this connection is already bound".into(),
                    }),
                ));
            }
            Phase::Closed => return FromPeer::Nothing,
        };
        let bind = match ims::XmMsgBind::decode(payload) {
            Ok(b) => b,
            Err(e) => return self.close(protocol_error(format!("bad XMMsgBind: {e}"))),
        };
        let refuse = |this: &mut Self, reason: &'static str, desc: String| {
            this.refuse_bind(header.id(), "auth", reason, desc)
        };
        let claimed = match auth::parse(bind.token()) {
            Ok(unverified) => unverified,
            Err(e) => return refuse(self, "invalid-token", e.to_string()),
        };
        let uuid = u64::try_from(header.uuid()).unwrap_or(0);
        if uuid != claimed.uuid() {
            return refuse(
                self,
                "invalid-token",
                "the header's uuid is not the token's user".into(),
            );
        }
        let app_id = claimed.app_id();
        self.phase = Phase::Checking(Box::new(PendingBind {
            challenge,
            header_id: header.id().to_owned(),
            uuid,
            resource: header.resource().to_owned(),
            token: bind.token().to_owned(),
            claimed,
            kick: bind.kick().to_owned(),
            client_attrs: bind.client_attrs().to_owned(),
            cloud_attrs: bind.cloud_attrs().to_owned(),
            sig: bind.sig().to_owned(),
        }));
        FromPeer::CheckBind { app_id }
    }

    /// The app of the pending BIND was looked up (`Ok(None)`: no such app; `Err`:
    /// the store failed). The token is checked against it (the core checks it again
    /// at login), then the signature with the user key of the secret that signed
    /// the token; a match hands the core its `Login`.
    pub fn bind_checked(
        &mut self,
        app: Result<Option<&crate::store::App>, ()>,
        now_ms: u64,
    ) -> FromPeer {
        let Phase::Checking(bind) = std::mem::replace(&mut self.phase, Phase::Binding) else {
            return FromPeer::Nothing;
        };
        let refuse = |this: &mut Self, error_type, reason, desc: String| {
            this.refuse_bind(&bind.header_id, error_type, reason, desc)
        };
        let app = match app {
            Ok(Some(app)) => app,
            Ok(None) => {
                let desc = auth::AuthError::UnknownApp.to_string();
                return refuse(self, "auth", "invalid-token", desc);
            }
            Err(()) => {
                let desc = "store unavailable; try again".to_owned();
                return refuse(self, "server", "internal-error", desc);
            }
        };
        let secret = match bind.claimed.check_for(app, now_ms) {
            Ok(secret) => secret,
            Err(auth::AuthError::Expired) => {
                let desc = auth::AuthError::Expired.to_string();
                return refuse(self, "token-expired", "token-expired", desc);
            }
            Err(e) => return refuse(self, "auth", "invalid-token", e.to_string()),
        };
        let key = auth::user_security_key(secret, bind.uuid);
        let signed = crypto::BindSigned {
            challenge: &bind.challenge,
            chid: MI_CHID,
            client_attrs: &bind.client_attrs,
            cloud_attrs: &bind.cloud_attrs,
            uuid: bind.uuid,
            resource: &bind.resource,
            header_id: &bind.header_id,
            kick: &bind.kick,
            token: &bind.token,
            security_key_b64: &key,
        };
        let key_prefix = match crypto::payload_key(&key, "") {
            Some(prefix) if crypto::signature_matches(&signed, &bind.sig) => prefix,
            _ => {
                let desc = "the BIND signature does not match".to_owned();
                return refuse(self, "auth", "invalid-sig", desc);
            }
        };
        let login = core_frame(Kind::Login(courier::Login {
            protocol_version: PROTOCOL_VERSION,
            token: bind.token.clone(),
            resource: bind.resource.clone(),
        }));
        self.peer = Some(Peer::new(
            bind.uuid,
            app.app_id,
            &key_prefix,
            &bind.resource,
        ));
        FromPeer::Core(login)
    }

    /// The core answered the login: bound, or refused.
    pub(super) fn login_answered(&mut self, ok: bool) {
        if !matches!(self.phase, Phase::Binding) {
            return;
        }
        if ok {
            self.phase = Phase::Bound;
        } else {
            self.phase = Phase::Closed;
            self.refused = true;
        }
    }

    fn refuse_bind(
        &mut self,
        header_id: &str,
        error_type: &'static str,
        reason: &'static str,
        desc: String,
    ) -> FromPeer {
        crate::log_limited!(info, reason, %desc, "MIMC BIND refused");
        self.refused = true;
        let last = outbound::bind_answer(
            header_id,
            Some(Refusal {
                error_type,
                reason,
                desc,
            }),
        );
        self.close(FromPeer::Close(Close {
            last: Some(last),
            why: format!("BIND refused: {reason}"),
            code: 1008,
        }))
    }

    fn on_secmsg(&mut self, header: &Header<'_>, payload: &[u8], now_ms: u64) -> FromPeer {
        let packet = match InboundPacket::read(payload) {
            Ok(p) => p,
            Err(e) => return self.close(protocol_error(format!("bad MIMCPacket: {e}"))),
        };
        // The SDK sends the packet id in both places; a client may send one.
        let packet_id = match packet.packet_id {
            "" => header.id(),
            id => id,
        };
        let kind = packet
            .r#type
            .and_then(|t| pb::MimcMsgType::try_from(t).ok());
        match kind {
            Some(kind @ (pb::MimcMsgType::P2pMessage | pb::MimcMsgType::P2tMessage)) => {
                let topic = kind == pb::MimcMsgType::P2tMessage;
                let send = InboundSend::read(packet.payload)
                    .and_then(|msg| Ok((read_to(msg.to, topic)?, msg)));
                let Ok(((to_account, to_resource, topic_id), msg)) = send else {
                    let bad = match topic {
                        true => "bad MIMCP2TMessage",
                        false => "bad MIMCP2PMessage",
                    };
                    return self.refuse_send(packet_id, bad);
                };
                FromPeer::Core(core_frame(Kind::Send(courier::Send {
                    packet_id: packet_id.to_owned(),
                    to_account: to_account.to_owned(),
                    to_resource: to_resource.to_owned(),
                    topic_id,
                    payload: Bytes::copy_from_slice(msg.payload),
                    biz_type: msg.biz_type.to_owned(),
                    is_store: Some(msg.is_store.unwrap_or(true)),
                    online_only: false,
                })))
            }
            Some(pb::MimcMsgType::SequenceAck) => {
                let Ok(ack) = pb::MimcSequenceAck::decode(packet.payload) else {
                    crate::log_limited!(info, "bad MIMCSequenceAck ignored");
                    return FromPeer::Nothing;
                };
                // Sequences are below 2^63; a negative one acks nothing.
                let sequence = u64::try_from(ack.sequence()).unwrap_or(0);
                FromPeer::Core(core_frame(Kind::Ack(courier::Ack { sequence })))
            }
            Some(pb::MimcMsgType::Pull) => {
                // A PULL re-reads the backlog: one per PULL_INTERVAL_S is enough.
                let now_s = (now_ms / 1000) as u32;
                if self.last_pull_s != 0 && now_s.wrapping_sub(self.last_pull_s) < PULL_INTERVAL_S {
                    crate::log_limited!(info, "MIMC PULL ignored: one per second");
                    return FromPeer::Nothing;
                }
                self.last_pull_s = now_s.max(1);
                FromPeer::Core(Inbound::Resync)
            }
            _ => {
                crate::log_limited!(info, r#type = ?packet.r#type, "MIMC packet type not supported; ignored");
                FromPeer::Nothing
            }
        }
    }

    /// A send the codec cannot read: answered with a PACKET_ACK carrying the reason.
    fn refuse_send(&mut self, packet_id: &str, why: &str) -> FromPeer {
        crate::log_limited!(info, why, "MIMC send refused");
        let ack = outbound::AckView {
            packet_id: packet_id.as_bytes(),
            code: crate::protocol::Status::BadRequest.code(),
            desc: why.as_bytes(),
            ..Default::default()
        };
        match outbound::packet_ack(self, &ack) {
            Some(frame) => FromPeer::Answer(frame),
            None => FromPeer::Nothing,
        }
    }
}

/// A request for the core, in its own frame kinds.
fn core_frame(kind: Kind) -> Inbound {
    Inbound::Request(Box::new(kind))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
