//! One client connection of the load, whatever protocol it speaks: Courier (over
//! WebSocket or QUIC) or MIMC web (`/mimc`). The scenarios read Courier `Event`s
//! from either: a MIMC PACKET_ACK is a `ServerAck`, each message of a COMPOUND a
//! `Deliver`. MIMC connections acknowledge every COMPOUND as it arrives, as the SDK
//! does, so their `ack` does nothing.

use std::collections::VecDeque;

use bytes::Bytes;
use courier::client::mimc::{MimcClient, MimcEvent, MimcReader, MimcWriter};
use courier::client::{Client, ClientError, ClientReader, ClientWriter, Event};
use courier::pb::{self, frame::Kind};

/// A logged-in connection.
pub enum Conn {
    Courier(Box<Client>),
    Mimc(Box<MimcClient>, VecDeque<Event>),
}

/// The sending half.
pub enum ConnWriter {
    Courier(ClientWriter),
    Mimc(Box<MimcWriter>),
}

/// The receiving half.
pub enum ConnReader {
    Courier(ClientReader),
    Mimc(Box<MimcReader>, VecDeque<Event>),
}

/// A MIMC event as the Courier events it stands for (queued in `out`).
fn translate(event: MimcEvent, out: &mut VecDeque<Event>) {
    match event {
        MimcEvent::PacketAck(a) => out.push_back(Event::ServerAck(pb::ServerAck {
            packet_id: a.packet_id().to_owned(),
            sequence: a.sequence().max(0) as u64,
            timestamp: a.timestamp().max(0) as u64,
            code: a.code().max(0) as u32,
            desc: a.error_msg().to_owned(),
            delivered: false,
        })),
        MimcEvent::Messages { messages, .. } => {
            out.extend(messages.into_iter().map(|m| {
                Event::Deliver(pb::Deliver {
                    sequence: m.sequence.max(0) as u64,
                    timestamp: m.timestamp.max(0) as u64,
                    packet_id: m.packet_id,
                    from_uuid: m.from_uuid,
                    from_account: m.from_account,
                    from_resource: m.from_resource,
                    to_account: m.to_account,
                    topic_id: m.topic_id.unwrap_or(0),
                    payload: m.payload,
                    biz_type: m.biz_type,
                    transient: !m.is_store,
                })
            }));
        }
        MimcEvent::Kick(k) => out.push_back(Event::Kick(pb::Kick {
            code: 0,
            reason: k.error_reason().to_owned(),
        })),
        MimcEvent::Ping => out.push_back(Event::Pong(pb::Pong::default())),
        _ => {}
    }
}

impl Conn {
    pub async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        match self {
            Conn::Courier(c) => c.next_event().await,
            Conn::Mimc(c, pending) => loop {
                if let Some(e) = pending.pop_front() {
                    return Ok(Some(e));
                }
                match c.next_event().await? {
                    Some(event) => translate(event, pending),
                    None => return Ok(None),
                }
            },
        }
    }

    /// Cumulative ack (MIMC connections ack every COMPOUND by themselves).
    pub async fn ack(&mut self, sequence: u64) -> Result<(), ClientError> {
        match self {
            Conn::Courier(c) => c.ack(sequence).await,
            Conn::Mimc(..) => Ok(()),
        }
    }

    pub fn split(self) -> (ConnWriter, ConnReader) {
        match self {
            Conn::Courier(c) => {
                let (w, r) = (*c).split();
                (ConnWriter::Courier(w), ConnReader::Courier(r))
            }
            Conn::Mimc(c, pending) => {
                let (w, r) = c.split();
                (
                    ConnWriter::Mimc(Box::new(w)),
                    ConnReader::Mimc(Box::new(r), pending),
                )
            }
        }
    }
}

impl ConnWriter {
    /// Sends a p2p message.
    pub async fn send_p2p(
        &mut self,
        packet_id: String,
        to_account: &str,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        match self {
            ConnWriter::Courier(w) => {
                w.send(Kind::Send(pb::Send {
                    packet_id,
                    to_account: to_account.to_owned(),
                    payload,
                    ..Default::default()
                }))
                .await
            }
            ConnWriter::Mimc(w) => w.send_p2p(&packet_id, to_account, payload).await,
        }
    }
}

impl ConnReader {
    pub async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        match self {
            ConnReader::Courier(r) => r.next_event().await,
            ConnReader::Mimc(r, pending) => loop {
                if let Some(e) = pending.pop_front() {
                    return Ok(Some(e));
                }
                match r.next_event().await? {
                    Some(event) => translate(event, pending),
                    None => return Ok(None),
                }
            },
        }
    }
}
