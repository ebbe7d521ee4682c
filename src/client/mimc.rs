//! A MIMC web client, written from mimc-wire.md (not from any SDK): it speaks to
//! `/mimc` as the MIMC web SDK 1.0.3 does — CONN, BIND signed with the user's
//! `miUserSecurityKey`, plaintext SECMSG sends, RC4'd deliveries decrypted per frame,
//! and a SEQUENCE_ACK for every COMPOUND of its own as soon as it arrives
//! ([`MimcClient::next_event`]). The tests and the load generator use it.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use prost::Message;

use super::conn::{self, FrameReader, FrameWriter};
use super::{ClientError, ConnectOptions, TokenData};
use crate::mimc::frame::{self, FrameLimits};
use crate::mimc::pbio;
use crate::mimc::{crypto, ims, pb};

/// The SDK's CONN: version 106, model "Netscape", os "", udid "websocket", sdk 31.
fn conn_payload() -> ims::XmMsgConn {
    ims::XmMsgConn {
        version: Some(106),
        model: Some("Netscape".into()),
        os: Some(String::new()),
        udid: Some("websocket".into()),
        sdk: Some(31),
        ..Default::default()
    }
}

const SERVER: &str = "xiaomi.com";
const CHID: i32 = 9;

/// Who the client is: from the token answer, and its resource.
#[derive(Debug)]
struct Me {
    app_id: u64,
    account: String,
    uuid: u64,
    resource: String,
    token: String,
    /// miUserSecurityKey as base64 text (the signature's secret).
    key_b64: String,
    /// Its bytes and '_': the RC4 key of a frame is this and the frame's id.
    key_prefix: Vec<u8>,
    package: String,
    /// The ClientHeader fields every frame after CONN shares (chid, uuid, server,
    /// resource), encoded.
    header_prefix: Vec<u8>,
    /// This user as the `from` MIMCUser of its messages, encoded.
    from_user: Vec<u8>,
}

/// A message delivered in a COMPOUND.
#[derive(Debug, Clone, PartialEq)]
pub struct MimcMessage {
    pub packet_id: String,
    pub sequence: i64,
    pub timestamp: i64,
    /// Set for a topic (P2T) message.
    pub topic_id: Option<u64>,
    pub from_account: String,
    pub from_resource: String,
    pub from_uuid: u64,
    /// The recipient's account (p2p).
    pub to_account: String,
    pub payload: Bytes,
    pub biz_type: String,
    pub is_store: bool,
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum MimcEvent {
    /// The answer to a send.
    PacketAck(pb::MimcPacketAck),
    /// A COMPOUND for this connection (its uuid and resource), in list order.
    Messages {
        min_sequence: i64,
        max_sequence: i64,
        messages: Vec<MimcMessage>,
    },
    /// A COMPOUND for another uuid or resource: the SDK drops it.
    NotMine(pb::MimcPacketList),
    /// A COMPOUND with status 2: messages in `[min, max]` were not sent.
    PullNotification {
        min: i64,
        max: i64,
    },
    Kick(ims::XmMsgBindResp),
    Ping,
    Bind(ims::XmMsgBindResp),
    /// Any other command, or a SECMSG of another packet type.
    Other(String),
}

/// The sending half.
pub struct MimcWriter {
    out: FrameWriter,
    me: Arc<Me>,
    counter: u64,
}

/// The receiving half.
pub struct MimcReader {
    input: FrameReader,
    me: Arc<Me>,
}

/// A MIMC web connection.
pub struct MimcClient {
    writer: MimcWriter,
    reader: MimcReader,
    /// Acknowledge each COMPOUND of its own at once, as the SDK does (default).
    pub auto_ack: bool,
}

fn decode_err(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(format!("{what}: {e}"))
}

impl MimcClient {
    /// Opens a WebSocket to `url` (e.g. `ws://127.0.0.1:8080/mimc`) without any
    /// handshake: see [`MimcClient::conn`] and [`MimcClient::bind`].
    pub async fn open_with(
        url: &str,
        options: &ConnectOptions,
        token: &TokenData,
        resource: &str,
    ) -> Result<MimcClient, ClientError> {
        let mut key_prefix = base64::engine::general_purpose::STANDARD
            .decode(&token.mi_user_security_key)
            .map_err(|e| decode_err("miUserSecurityKey", e))?;
        key_prefix.push(b'_');
        let (out, input) = conn::dial_plain_ws(url, options).await?;
        let header_prefix = ims::ClientHeader {
            chid: Some(CHID),
            uuid: Some(i64::try_from(token.mi_user_id).unwrap_or(0)),
            server: Some(SERVER.into()),
            resource: Some(resource.to_owned()),
            ..Default::default()
        }
        .encode_to_vec();
        let from_user = pb::MimcUser {
            app_id: Some(token.app_id),
            app_account: Some(token.app_account.clone()),
            uuid: Some(token.mi_user_id),
            resource: Some(resource.to_owned()),
        }
        .encode_to_vec();
        let me = Arc::new(Me {
            header_prefix,
            from_user,
            key_prefix,
            app_id: token.app_id,
            account: token.app_account.clone(),
            uuid: token.mi_user_id,
            resource: resource.to_owned(),
            token: token.token.clone(),
            key_b64: token.mi_user_security_key.clone(),
            package: token.app_package.clone(),
        });
        Ok(MimcClient {
            writer: MimcWriter {
                out,
                me: me.clone(),
                counter: 0,
            },
            reader: MimcReader { input, me },
            auto_ack: true,
        })
    }

    /// Opens, sends CONN and a signed BIND, and waits for a successful answer.
    pub async fn connect(
        url: &str,
        token: &TokenData,
        resource: &str,
    ) -> Result<MimcClient, ClientError> {
        let options = ConnectOptions::new(&super::ClientTrust::WebPki)?;
        let mut client = MimcClient::open_with(url, &options, token, resource).await?;
        let challenge = client.conn().await?;
        client.bind(&challenge).await?;
        Ok(client)
    }

    /// Sends CONN and returns the server's challenge.
    pub async fn conn(&mut self) -> Result<String, ClientError> {
        let id = self.writer.next_id();
        let header = ims::ClientHeader {
            server: Some(SERVER.into()),
            cmd: Some("CONN".into()),
            id: Some(id),
            ..Default::default()
        };
        self.writer
            .send_frame(&header, &conn_payload().encode_to_vec())
            .await?;
        loop {
            let Some((cmd, payload)) = self.reader.next_frame().await? else {
                return Err(ClientError::Closed);
            };
            if cmd == "CONN" {
                let resp = ims::XmMsgConnResp::decode(payload.as_ref())
                    .map_err(|e| decode_err("XMMsgConnResp", e))?;
                return resp.challenge.ok_or_else(|| {
                    ClientError::Protocol("CONN answer without a challenge".into())
                });
            }
        }
    }

    /// Sends BIND signed for `challenge` and waits for the answer.
    pub async fn bind(&mut self, challenge: &str) -> Result<(), ClientError> {
        let id = self.writer.next_id();
        let me = self.writer.me.clone();
        let sig = crypto::bind_signature(&crypto::BindSigned {
            challenge,
            chid: CHID as u32,
            client_attrs: "",
            cloud_attrs: "",
            uuid: me.uuid,
            resource: &me.resource,
            header_id: &id,
            kick: "",
            token: &me.token,
            security_key_b64: &me.key_b64,
        });
        self.bind_with(&id, &sig).await
    }

    /// Sends BIND with header id `id` and signature `sig` as given, and waits for
    /// the answer: `Err(BindRefused)` carries the server's reason.
    pub async fn bind_with(&mut self, id: &str, sig: &str) -> Result<(), ClientError> {
        let me = self.writer.me.clone();
        let header = self.writer.header("BIND", id);
        let bind = ims::XmMsgBind {
            token: Some(me.token.clone()),
            kick: Some(String::new()),
            method: Some("XIAOMI-PASS".into()),
            sig: Some(sig.to_owned()),
            ..Default::default()
        };
        self.writer
            .send_frame(&header, &bind.encode_to_vec())
            .await?;
        loop {
            match self.reader.next_event().await? {
                Some(MimcEvent::Bind(r)) if r.result() => return Ok(()),
                Some(MimcEvent::Bind(r)) => {
                    return Err(ClientError::BindRefused {
                        error_type: r.error_type().to_owned(),
                        reason: r.error_reason().to_owned(),
                        desc: r.error_desc().to_owned(),
                    })
                }
                Some(_) => continue,
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// The next event; a COMPOUND of its own is acknowledged first when
    /// [`MimcClient::auto_ack`] is set. `None` once the server closed.
    pub async fn next_event(&mut self) -> Result<Option<MimcEvent>, ClientError> {
        let event = self.reader.next_event().await?;
        if let Some(MimcEvent::Messages { max_sequence, .. }) = &event {
            if self.auto_ack {
                self.writer.ack(*max_sequence).await?;
            }
        }
        Ok(event)
    }

    pub fn writer(&mut self) -> &mut MimcWriter {
        &mut self.writer
    }

    /// The two halves (no automatic acks on the reader).
    pub fn split(self) -> (MimcWriter, MimcReader) {
        (self.writer, self.reader)
    }
}

impl MimcWriter {
    /// A client header id, as the SDK makes them: "web", the time in ms, a counter.
    pub fn next_id(&mut self) -> String {
        self.counter += 1;
        format!("web{}{}", crate::time::now_ms(), self.counter % 1000)
    }

    fn header(&self, cmd: &str, id: &str) -> ims::ClientHeader {
        ims::ClientHeader {
            chid: Some(CHID),
            uuid: Some(i64::try_from(self.me.uuid).unwrap_or(0)),
            server: Some(SERVER.into()),
            resource: Some(self.me.resource.clone()),
            cmd: Some(cmd.into()),
            id: Some(id.into()),
            ..Default::default()
        }
    }

    fn user(&self) -> pb::MimcUser {
        pb::MimcUser {
            app_id: Some(self.me.app_id),
            app_account: Some(self.me.account.clone()),
            uuid: Some(self.me.uuid),
            resource: Some(self.me.resource.clone()),
        }
    }

    /// A plaintext SECMSG frame with header id `id` whose payload, `payload_len`
    /// bytes, `write` puts in place: the frame is built in one buffer.
    fn secmsg_frame(
        &self,
        id: &str,
        payload_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Bytes {
        let header_len =
            self.me.header_prefix.len() + pbio::bytes_len(5, 6) + pbio::bytes_len(7, id.len());
        let mut buf = Vec::with_capacity(frame::frame_len(header_len, payload_len));
        // The header is a few dozen bytes; the payload is bounded by the caller.
        let _ = frame::put_prefix(&mut buf, header_len, payload_len);
        buf.extend_from_slice(&self.me.header_prefix);
        pbio::put_bytes(&mut buf, 5, b"SECMSG");
        pbio::put_bytes(&mut buf, 7, id.as_bytes());
        write(&mut buf);
        frame::finish(&mut buf);
        Bytes::from(buf)
    }

    /// Writes one frame with this header and payload.
    pub async fn send_frame(
        &mut self,
        header: &ims::ClientHeader,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.send_raw(frame::encode(&header.encode_to_vec(), payload))
            .await
    }

    /// Writes one WebSocket message as it is.
    pub async fn send_raw(&mut self, message: Bytes) -> Result<(), ClientError> {
        self.out.write_unframed(message).await
    }

    /// Writes a WebSocket text message (which no MIMC client sends).
    pub async fn send_ws_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.out.send_ws_text(text).await
    }

    /// Sends a plaintext SECMSG carrying `packet`, whose packetId is the header id.
    pub async fn send_packet(&mut self, packet: pb::MimcPacket) -> Result<(), ClientError> {
        let id = match packet.packet_id() {
            "" => self.next_id(),
            id => id.to_owned(),
        };
        let header = self.header("SECMSG", &id);
        self.send_frame(&header, &packet.encode_to_vec()).await
    }

    /// Sends a p2p message (isStore true, no bizType), as `user.sendMessage` does.
    pub async fn send_p2p(
        &mut self,
        packet_id: &str,
        to_account: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        // Written field by field, the bytes prost writes for MIMCPacket {1 packetId,
        // 2 package, 4 type, 5 MIMCP2PMessage {1 from, 2 to {1 appId, 2 appAccount},
        // 3 payload, 4 isStore, 5 bizType ""}}: the load generator sends many.
        let payload = payload.into();
        let me = &self.me;
        let to_len = pbio::varint_len(1, me.app_id) + pbio::bytes_len(2, to_account.len());
        let msg_len = pbio::bytes_len(1, me.from_user.len())
            + pbio::bytes_len(2, to_len)
            + pbio::bytes_len(3, payload.len())
            + pbio::varint_len(4, 1)
            + pbio::bytes_len(5, 0);
        let kind = pb::MimcMsgType::P2pMessage as u64;
        let packet_len = pbio::bytes_len(1, packet_id.len())
            + pbio::bytes_len(2, me.package.len())
            + pbio::varint_len(4, kind)
            + pbio::bytes_len(5, msg_len);
        let frame = self.secmsg_frame(packet_id, packet_len, |buf| {
            pbio::put_bytes(buf, 1, packet_id.as_bytes());
            pbio::put_bytes(buf, 2, me.package.as_bytes());
            pbio::put_varint(buf, 4, kind);
            pbio::put_len(buf, 5, msg_len);
            pbio::put_bytes(buf, 1, &me.from_user);
            pbio::put_len(buf, 2, to_len);
            pbio::put_varint(buf, 1, me.app_id);
            pbio::put_bytes(buf, 2, to_account.as_bytes());
            pbio::put_bytes(buf, 3, &payload);
            pbio::put_varint(buf, 4, 1);
            pbio::put_bytes(buf, 5, b"");
        });
        self.send_raw(frame).await
    }

    /// Sends a topic message, as `user.sendGroupMessage` does.
    pub async fn send_p2t(
        &mut self,
        packet_id: &str,
        topic_id: u64,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let msg = pb::Mimcp2tMessage {
            from: Some(self.user()),
            to: Some(pb::MimcGroup {
                app_id: Some(self.me.app_id),
                topic_id: Some(topic_id),
            }),
            payload: Some(payload.into()),
            is_store: Some(true),
            biz_type: Some(String::new()),
        };
        self.send_typed(packet_id, pb::MimcMsgType::P2tMessage, msg.encode_to_vec())
            .await
    }

    async fn send_typed(
        &mut self,
        packet_id: &str,
        kind: pb::MimcMsgType,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        let packet = pb::MimcPacket {
            packet_id: Some(packet_id.to_owned()),
            package: Some(self.me.package.clone()),
            r#type: Some(kind as i32),
            payload: Some(payload.into()),
            ..Default::default()
        };
        self.send_packet(packet).await
    }

    /// SEQUENCE_ACK: every sequence up to `sequence` was received.
    pub async fn ack(&mut self, sequence: i64) -> Result<(), ClientError> {
        let ack = pb::MimcSequenceAck {
            uuid: Some(self.me.uuid),
            resource: Some(self.me.resource.clone()),
            sequence: Some(sequence),
            app_id: Some(self.me.app_id),
        };
        let packet = pb::MimcPacket {
            r#type: Some(pb::MimcMsgType::SequenceAck as i32),
            payload: Some(ack.encode_to_vec().into()),
            ..Default::default()
        };
        self.send_packet(packet).await
    }

    /// PULL: asks for the messages after the cursor again.
    pub async fn pull(&mut self) -> Result<(), ClientError> {
        let req = pb::PullMessageRequest {
            uuid: Some(self.me.uuid),
            resource: Some(self.me.resource.clone()),
            app_id: Some(self.me.app_id),
        };
        let id = self.next_id();
        let packet = pb::MimcPacket {
            packet_id: Some(id),
            package: Some(self.me.package.clone()),
            r#type: Some(pb::MimcMsgType::Pull as i32),
            payload: Some(req.encode_to_vec().into()),
            ..Default::default()
        };
        self.send_packet(packet).await
    }

    /// PING with an empty payload.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        let id = self.next_id();
        let header = self.header("PING", &id);
        self.send_frame(&header, &[]).await
    }

    /// UBND (logout): the server answers with a KICK and closes.
    pub async fn logout(&mut self) -> Result<(), ClientError> {
        let id = self.next_id();
        let header = self.header("UBND", &id);
        self.send_frame(&header, &[]).await
    }
}

impl MimcReader {
    /// The next frame's cmd and (decrypted, for SECMSG) payload.
    async fn next_frame(&mut self) -> Result<Option<(Cow<'static, str>, Bytes)>, ClientError> {
        let Some(message) = self.input.next_frame().await? else {
            return Ok(None);
        };
        let limits = FrameLimits {
            max_header_bytes: u16::MAX.into(),
            max_payload_bytes: 64 << 20,
        };
        let f = frame::decode(&message, limits).map_err(|e| decode_err("frame", e))?;
        let (cmd, id) = cmd_and_id(&f.header)?;
        if cmd != "SECMSG" {
            return Ok(Some((owned_cmd(cmd), f.payload)));
        }
        let mut payload = f.payload.to_vec();
        crypto::rc4_split(&self.me.key_prefix, id.as_bytes(), &mut payload);
        Ok(Some((Cow::Borrowed("SECMSG"), payload.into())))
    }

    /// The next event; `None` once the server closed.
    pub async fn next_event(&mut self) -> Result<Option<MimcEvent>, ClientError> {
        let Some((cmd, payload)) = self.next_frame().await? else {
            return Ok(None);
        };
        let resp = || {
            ims::XmMsgBindResp::decode(payload.as_ref()).map_err(|e| decode_err("XMMsgBindResp", e))
        };
        let event = match &*cmd {
            "BIND" => MimcEvent::Bind(resp()?),
            "KICK" => MimcEvent::Kick(resp()?),
            "PING" => MimcEvent::Ping,
            "SECMSG" => self.secmsg(payload)?,
            other => MimcEvent::Other(other.to_owned()),
        };
        Ok(Some(event))
    }

    /// A decrypted SECMSG payload (decoded from `Bytes`: the byte fields of the
    /// packets are slices of it, not copies).
    fn secmsg(&self, payload: Bytes) -> Result<MimcEvent, ClientError> {
        let packet = pb::MimcPacket::decode(payload).map_err(|e| decode_err("MIMCPacket", e))?;
        let inner = packet.payload.clone().unwrap_or_default();
        match packet
            .r#type
            .and_then(|t| pb::MimcMsgType::try_from(t).ok())
        {
            Some(pb::MimcMsgType::PacketAck) => Ok(MimcEvent::PacketAck(
                pb::MimcPacketAck::decode(inner).map_err(|e| decode_err("MIMCPacketAck", e))?,
            )),
            Some(pb::MimcMsgType::Compound) => {
                let list = pb::MimcPacketList::decode(inner)
                    .map_err(|e| decode_err("MIMCPacketList", e))?;
                if list.uuid() != self.me.uuid || list.resource() != self.me.resource {
                    return Ok(MimcEvent::NotMine(list));
                }
                if list.status() == pb::MimcPushStatus::StatusExceedCountLimit {
                    return Ok(MimcEvent::PullNotification {
                        min: list.min_sequence(),
                        max: list.max_sequence(),
                    });
                }
                let (min_sequence, max_sequence) = (list.min_sequence(), list.max_sequence());
                let messages = list
                    .packets
                    .into_iter()
                    .map(message_of)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(MimcEvent::Messages {
                    min_sequence,
                    max_sequence,
                    messages,
                })
            }
            other => Ok(MimcEvent::Other(format!("SECMSG {other:?}"))),
        }
    }
}

/// The cmd and id of an encoded ClientHeader (5 and 7), borrowed from it.
fn cmd_and_id(header: &[u8]) -> Result<(&str, &str), ClientError> {
    let (mut cmd, mut id) = ("", "");
    for field in pbio::fields(header) {
        match field.map_err(|e| decode_err("ClientHeader", e))? {
            (5, pbio::Value::Bytes(b)) => cmd = pbio::text(b).map_err(|e| decode_err("cmd", e))?,
            (7, pbio::Value::Bytes(b)) => id = pbio::text(b).map_err(|e| decode_err("id", e))?,
            _ => {}
        }
    }
    Ok((cmd, id))
}

/// A frame's cmd, without an allocation for the ones the server sends.
fn owned_cmd(cmd: &str) -> Cow<'static, str> {
    match ["CONN", "BIND", "KICK", "PING"]
        .into_iter()
        .find(|c| *c == cmd)
    {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(cmd.to_owned()),
    }
}

/// A delivered packet as a message.
fn message_of(p: pb::MimcPacket) -> Result<MimcMessage, ClientError> {
    let inner = p.payload.clone().unwrap_or_default();
    let mut m = MimcMessage {
        packet_id: p.packet_id.clone().unwrap_or_default(),
        sequence: p.sequence(),
        timestamp: p.timestamp(),
        topic_id: None,
        from_account: String::new(),
        from_resource: String::new(),
        from_uuid: 0,
        to_account: String::new(),
        payload: Bytes::new(),
        biz_type: String::new(),
        is_store: false,
    };
    let from = |u: Option<pb::MimcUser>| {
        let u = u.unwrap_or_default();
        (
            u.app_account.unwrap_or_default(),
            u.resource.unwrap_or_default(),
            u.uuid.unwrap_or_default(),
        )
    };
    match p.r#type.and_then(|t| pb::MimcMsgType::try_from(t).ok()) {
        Some(pb::MimcMsgType::P2pMessage) => {
            let msg =
                pb::Mimcp2pMessage::decode(inner).map_err(|e| decode_err("MIMCP2PMessage", e))?;
            (m.from_account, m.from_resource, m.from_uuid) = from(msg.from);
            m.to_account = msg.to.and_then(|t| t.app_account).unwrap_or_default();
            m.payload = msg.payload.unwrap_or_default();
            m.biz_type = msg.biz_type.unwrap_or_default();
            m.is_store = msg.is_store.unwrap_or_default();
        }
        Some(pb::MimcMsgType::P2tMessage) => {
            let msg =
                pb::Mimcp2tMessage::decode(inner).map_err(|e| decode_err("MIMCP2TMessage", e))?;
            (m.from_account, m.from_resource, m.from_uuid) = from(msg.from);
            m.topic_id = msg.to.and_then(|t| t.topic_id);
            m.payload = msg.payload.unwrap_or_default();
            m.biz_type = msg.biz_type.unwrap_or_default();
            m.is_store = msg.is_store.unwrap_or_default();
        }
        other => {
            return Err(ClientError::Protocol(format!(
                "COMPOUND with a packet of type {other:?}"
            )))
        }
    }
    Ok(m)
}

impl std::fmt::Debug for MimcWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MimcWriter")
            .field("uuid", &self.me.uuid)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MimcReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MimcReader")
            .field("uuid", &self.me.uuid)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MimcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MimcClient")
            .field("uuid", &self.writer.me.uuid)
            .field("resource", &self.writer.me.resource)
            .finish_non_exhaustive()
    }
}
