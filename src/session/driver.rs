//! Drives one client connection, whatever its transport: feeds inbound frames to
//! the sans-IO [`Session`], and does the I/O the protocol rules ask for — verifies
//! the token and registers the device, reads the start cursor and the backlog pages
//! that `protocol::backlog` plans, submits sends to the router, records acks, reads
//! pulls — then relays the device's live queue, all from one task.
//!
//! Outbound frames waiting in the device queue are taken all at once (the queue keeps
//! no buffer while empty) and written about 256 KiB at a time, each part flushed once.
//! The task ends on peer close, logout, a timeout, a kick (replaced, slow consumer) or
//! server shutdown, and always unregisters the device from the hub.
//!
//! Bounds: a connection over its frame rate is not read until the rate window ends
//! (the session says until when). At most `max_inflight_sends` Sends of a connection
//! wait for their ServerAck; at that point the connection reads nothing more from its
//! peer (TCP pushes back) until one is answered, while it keeps writing its queue. A
//! write (of at most about 256 KiB of queued frames, or one reply) that takes longer
//! than `write_timeout_secs` closes the connection.

use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::Inbound;
use crate::auth;
use crate::hub::{self, DeviceHandle, DeviceQueue, Outbound};
use crate::message::{Envelope, Target};
use crate::pb;
use crate::protocol::backlog::{self, LiveFilter};
use crate::protocol::session::{Identity, Session, SessionConfig, SessionEvent};
use crate::protocol::{codec, KickReason, Status};
use crate::router::{AckSink, RouterError, Submission};
use crate::state::AppState;
use crate::telemetry;
use crate::time::now_ms;

/// A transport connection as the driver sees it: inbound items and a sink of
/// encoded frames, in one object (one allocation per connection, no lock between
/// two halves: the driver reads and writes from one task).
pub trait FrameTransport<E>:
    Stream<Item = Result<Inbound, E>> + Sink<Bytes, Error = E> + Send
{
}

impl<E, T> FrameTransport<E> for T where
    T: Stream<Item = Result<Inbound, E>> + Sink<Bytes, Error = E> + Send
{
}

/// A boxed transport connection.
pub type FrameIo<E> = Pin<Box<dyn FrameTransport<E>>>;

/// Bytes of queued frames written (and flushed) at a time when relaying.
const RELAY_WRITE_BYTES: usize = 256 * 1024;

/// How long a closing connection may take to write its last frame.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the connection goes on after handling something.
pub(super) enum Flow {
    Continue,
    Close,
}

pub(super) struct Connection<E> {
    pub(super) state: Arc<AppState>,
    pub(super) conn_id: u64,
    pub(super) session: Session,
    pub(super) io: FrameIo<E>,
    /// The device's live queue and kill switch.
    pub(super) queue: Arc<DeviceQueue>,
    /// One permit per Send that may wait for its ack.
    pub(super) inflight: Arc<Semaphore>,
    /// The registered device and its user, once logged in.
    pub(super) device: Option<(u64, DeviceHandle)>,
    /// Which live frames the backlog already carried.
    pub(super) live: LiveFilter,
    /// A Kick frame was sent (or attempted).
    pub(super) kicked: bool,
    /// The transport's name in metrics.
    pub(super) transport: &'static str,
}

/// Runs a connection until it ends, with the session rules of `session` (the
/// server's, or the MIMC endpoint's with its longer idle timeout).
/// `transport` names it in metrics (`ws`, `quic`, `mimc`).
pub async fn drive<E: Display>(
    io: FrameIo<E>,
    state: Arc<AppState>,
    transport: &'static str,
    session: SessionConfig,
) {
    metrics::gauge!(telemetry::CONNECTIONS, "transport" => transport).increment(1);
    let queue = DeviceQueue::new(
        state.config.device_queue_frames,
        state.config.device_queue_bytes,
    );
    let inflight = Arc::new(Semaphore::new(state.config.max_inflight_sends));
    let mut conn = Connection {
        conn_id: state.next_conn_id(),
        session: Session::new(session, now_ms()),
        state,
        io,
        queue,
        inflight,
        device: None,
        live: LiveFilter::default(),
        kicked: false,
        transport,
    };
    conn.run().await;
    if !conn.kicked {
        // A kick that interrupted a write still owes the peer its reason.
        if let Some(reason) = conn.queue.kill.reason() {
            conn.kick(reason).await;
        }
    }
    if let Some((uuid, device)) = &conn.device {
        conn.state.hub.unregister(*uuid, device.conn_id);
        if let Some(cluster) = &conn.state.cluster {
            cluster.leave(*uuid);
            // The device may log in on another node next, which reads the store.
            let state = &conn.state;
            state
                .cursors
                .flush_device(state.store.as_ref(), *uuid, &device.resource)
                .await;
        }
        metrics::gauge!(telemetry::SESSIONS, "transport" => transport).decrement(1);
    }
    metrics::gauge!(telemetry::CONNECTIONS, "transport" => transport).decrement(1);
    conn.queue.close();
    // A peer that stopped reading must not hold the task: give the close a moment.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.io.close()).await;
}

/// Waits for the rate-limit pause to end (never, if none was armed).
async fn until_resumed(resume: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match resume {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

fn deadline_instant(deadline_ms: u64) -> Instant {
    Instant::now() + std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms()))
}

impl<E: Display> Connection<E> {
    async fn run(&mut self) {
        let shutdown = self.state.shutdown.clone();
        let queue = self.queue.clone();
        let mut armed = self.session.next_deadline_ms();
        let timer = tokio::time::sleep_until(deadline_instant(armed));
        tokio::pin!(timer);
        // Allocated the first time the frame rate is exceeded (rare), then kept, so
        // an idle connection does not carry a second timer.
        let mut resume: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let inflight = self.inflight.clone();
        loop {
            // A deadline that moved earlier (the idle deadline after login can come
            // before the login deadline) re-arms the timer; later ones wait for it.
            let next = self.session.next_deadline_ms();
            if next < armed {
                armed = next;
                timer.as_mut().reset(deadline_instant(armed));
            }
            let logged_in = self.device.is_some();
            let may_read = inflight.available_permits() > 0;
            // Over the frame rate: read nothing more until the window ends.
            let paused = self.session.over_rate_limit()
                && match self.session.read_paused_until_ms(now_ms()) {
                    Some(until) => {
                        let at = deadline_instant(until);
                        match resume.as_mut() {
                            Some(sleep) => sleep.as_mut().reset(at),
                            None => resume = Some(Box::pin(tokio::time::sleep_until(at))),
                        }
                        true
                    }
                    None => false,
                };
            // Unbiased: a device flooded with deliveries still gets its own frames
            // (acks, pings, sends) read.
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.kick(KickReason::Shutdown).await;
                    return;
                }
                reason = queue.kill.killed() => {
                    self.kick(reason).await;
                    return;
                }
                frames = queue.take(), if logged_in => {
                    if self.relay(frames).await.is_err() {
                        return;
                    }
                }
                // Every in-flight slot is taken: read on once one is given back.
                _ = inflight.acquire(), if !may_read => {}
                _ = until_resumed(&mut resume), if paused => {}
                item = self.io.next(), if may_read && !paused => {
                    let flow = match item {
                        None => Flow::Close,
                        Some(Err(e)) => {
                            tracing::debug!(conn = self.conn_id, error = %e, "connection read failed");
                            Flow::Close
                        }
                        Some(Ok(Inbound::Unsupported(why))) => {
                            let event = self.session.on_unsupported(why, now_ms());
                            self.handle(event).await
                        }
                        Some(Ok(Inbound::TooLarge(size))) => {
                            let event = self.session.on_too_large(size, now_ms());
                            self.handle(event).await
                        }
                        Some(Ok(Inbound::Control)) => {
                            let event = self.session.on_control(now_ms());
                            self.handle(event).await
                        }
                        Some(Ok(Inbound::Resync)) => {
                            let event = self.session.on_control(now_ms());
                            // Over the frame rate, the request is dropped like a frame.
                            let dropped = self.session.over_rate_limit();
                            match self.handle(event).await {
                                Flow::Continue if self.device.is_some() && !dropped => {
                                    metrics::counter!(telemetry::FRAMES_IN, "type" => "pull").increment(1);
                                    Box::pin(self.resync(u64::MAX)).await
                                }
                                flow => flow,
                            }
                        }
                        Some(Ok(Inbound::Frame(bytes))) => {
                            let event = self.session.on_frame(&bytes, now_ms());
                            self.handle(event).await
                        }
                        Some(Ok(Inbound::Request(kind))) => {
                            let event = self.session.on_request(*kind, now_ms());
                            self.handle(event).await
                        }
                    };
                    if let Flow::Close = flow {
                        return;
                    }
                }
                _ = &mut timer => {
                    if let Some(kick) = self.session.check_timeout(now_ms()) {
                        let reason = if self.session.identity().is_some() { "idle" } else { "login_timeout" };
                        metrics::counter!(telemetry::KICKS, "reason" => reason).increment(1);
                        self.write_last(kick).await;
                        return;
                    }
                    armed = self.session.next_deadline_ms();
                    timer.as_mut().reset(deadline_instant(armed));
                }
            }
        }
    }

    async fn handle(&mut self, event: SessionEvent) -> Flow {
        let kind = match &event {
            SessionEvent::Login { .. } => "login",
            SessionEvent::Send(_) => "send",
            SessionEvent::Ack(_) => "ack",
            SessionEvent::Pull(_) => "pull",
            SessionEvent::Logout => "logout",
            _ => "other",
        };
        metrics::counter!(telemetry::FRAMES_IN, "type" => kind).increment(1);
        if let SessionEvent::Reply(_) | SessionEvent::Close(_) = &event {
            metrics::counter!(telemetry::FRAMES_OUT, "type" => "reply").increment(1);
        }
        match event {
            SessionEvent::None => Flow::Continue,
            SessionEvent::Reply(frame) => self.write_one(frame).await,
            SessionEvent::Close(frame) => {
                let _ = self.write_one(frame).await;
                Flow::Close
            }
            // Boxed: the futures of the rare, store-bound steps (login with its
            // backlog, pull) and of a send are allocated while they run instead of
            // being part of every idle connection's task.
            SessionEvent::Login { token, resource } => Box::pin(self.login(&token, resource)).await,
            SessionEvent::Send(send) => Box::pin(self.send(send)).await,
            SessionEvent::Ack(seq) => {
                metrics::counter!(telemetry::DEVICE_ACKS).increment(1);
                if let Some(id) = self.session.identity() {
                    // No sequence above the newest assigned one exists yet: an ack
                    // beyond it would make this device skip messages to come.
                    let seq = backlog::clamp_ack(seq, self.state.newest_ackable());
                    self.state.cursors.advance(id.uuid, &id.resource, seq);
                }
                Flow::Continue
            }
            SessionEvent::Pull(pull) => Box::pin(self.pull(pull)).await,
            SessionEvent::Logout => Flow::Close,
        }
    }

    async fn login(&mut self, token: &str, resource: String) -> Flow {
        let claims = match self.verify(token).await {
            Ok(claims) => claims,
            Err((code, desc)) => {
                crate::log_limited!(info, conn = self.conn_id, %desc, "login refused");
                let result = if code == Status::Unauthorized {
                    "unauthorized"
                } else {
                    "error"
                };
                metrics::counter!(telemetry::LOGINS, "result" => result).increment(1);
                let refusal = self.session.refuse_login(code, &desc, now_ms());
                let _ = self.write_one(refusal).await;
                return Flow::Close;
            }
        };
        let identity = Identity {
            app_id: claims.app_id,
            uuid: claims.uuid,
            account: claims.account.into(),
            resource: resource.into(),
        };
        let device = DeviceHandle::new(self.conn_id, identity.resource.clone(), self.queue.clone());
        // Register first: anything committed from now on is queued live; the backlog
        // read below covers everything before.
        if let Err(e) = self.state.hub.register(identity.uuid, device.clone()) {
            metrics::counter!(telemetry::LOGINS, "result" => "too_many_devices").increment(1);
            let refusal = self
                .session
                .refuse_login(Status::RateLimited, &e.to_string(), now_ms());
            let _ = self.write_one(refusal).await;
            return Flow::Close;
        }
        self.device = Some((identity.uuid, device));
        if let Some(cluster) = self.state.cluster.clone() {
            // Subscribed before the backlog is read: what other nodes commit from
            // now on arrives live. Then a device of this resource elsewhere goes.
            if !cluster.join(identity.uuid).await {
                // Not confirmed: once logged in, the device reads its backlog again.
                if let Some((_, device)) = &self.device {
                    device.push(hub::resync_marker(u64::MAX));
                }
            }
            cluster.kick_elsewhere(identity.uuid, &identity.resource, self.conn_id);
        }
        self.session.login_succeeded(identity.clone());
        metrics::counter!(telemetry::LOGINS, "result" => "ok").increment(1);
        metrics::gauge!(telemetry::SESSIONS, "transport" => self.transport).increment(1);
        match self.sync_backlog(&identity).await {
            Ok(flow) => flow,
            Err(e) => {
                crate::log_limited!(error, conn = self.conn_id, error = %e, "login backlog failed: store unavailable");
                let _ = self
                    .write_one(codec::kick_frame(KickReason::StoreUnavailable))
                    .await;
                Flow::Close
            }
        }
    }

    async fn verify(&mut self, token: &str) -> Result<auth::Claims, (Status, String)> {
        let unauthorized = |e: auth::AuthError| (Status::Unauthorized, e.to_string());
        let unverified = auth::parse(token).map_err(unauthorized)?;
        let app = self
            .state
            .directory
            .app(unverified.app_id())
            .await
            .map_err(|e| (Status::Internal, e.to_string()))?
            .ok_or_else(|| unauthorized(auth::AuthError::UnknownApp))?;
        unverified
            .verify_for(&app, self.state.clock.now_ms())
            .map_err(unauthorized)
    }

    async fn send(&mut self, mut send: pb::Send) -> Flow {
        let (Some(id), Some((_, device))) = (self.session.identity(), &self.device) else {
            return Flow::Continue;
        };
        let directory = &self.state.directory;
        if let Some(app) = directory.cached_app(id.app_id) {
            let limit = app.settings.max_payload_bytes.map(|n| n as usize);
            if let Some(limit) = limit.filter(|&l| send.payload.len() > l) {
                crate::log_limited!(info, limit, "send refused: payload over the app's limit");
                let desc = format!(
                    "payload is {} bytes, over this app's limit of {limit}",
                    send.payload.len()
                );
                let err = codec::error_frame(Status::TooLarge, desc, send.packet_id);
                return self.write_one(err).await;
            }
            let rate = app.settings.send_rate_per_user;
            if let Err(e) = self.state.quotas.charge_send(id.uuid, rate, 1, now_ms()) {
                crate::log_limited!(info, reason = %e, "send refused: send rate");
                let err = codec::error_frame(Status::RateLimited, e.to_string(), send.packet_id);
                return self.write_one(err).await;
            }
        }
        let lookup = if send.topic_id != 0 {
            // The router checks membership on this snapshot or a newer one. In a
            // cluster another node may have just added the sender: a snapshot
            // without it is read again before the router refuses.
            let mut topic = directory.topic(send.topic_id).await;
            if self.state.cluster.is_some()
                && matches!(&topic, Ok(Some(view)) if !view.is_member(id.uuid))
            {
                topic = directory.refresh_topic(send.topic_id).await;
            }
            topic.map(|t| (0, t))
        } else if let Some(uuid) = directory.cached_uuid(id.app_id, &send.to_account) {
            Ok((uuid, None))
        } else {
            // An account the cache does not know may be created by this send: that
            // draws on the sender's and the app's quotas, like a REST call naming it.
            let now = now_ms();
            if let Err(e) = self.state.quotas.charge_names(id.app_id, id.uuid, 1, now) {
                crate::log_limited!(info, reason = %e, "send refused: quota");
                let err = codec::error_frame(Status::RateLimited, e.to_string(), send.packet_id);
                return self.write_one(err).await;
            }
            directory
                .uuid(id.app_id, &send.to_account)
                .await
                .map(|u| (u, None))
        };
        let (to_uuid, topic) = match lookup {
            Ok(found) => found,
            Err(e) => {
                crate::log_limited!(error, error = %e, "account or topic lookup failed");
                let err = codec::error_frame(Status::Internal, "store unavailable", send.packet_id);
                return self.write_one(err).await;
            }
        };
        let target = if send.topic_id != 0 {
            Target::Topic {
                topic_id: send.topic_id,
            }
        } else {
            let blocked = match self.state.blacklists.blocks(to_uuid, id.uuid).await {
                Ok(blocked) => blocked,
                Err(e) => {
                    crate::log_limited!(error, error = %e, "blacklist lookup failed");
                    let err =
                        codec::error_frame(Status::Internal, "store unavailable", send.packet_id);
                    return self.write_one(err).await;
                }
            };
            let resource = std::mem::take(&mut send.to_resource);
            Target::User {
                uuid: to_uuid,
                account: std::mem::take(&mut send.to_account),
                resource: (!resource.is_empty()).then_some(resource),
                blocked,
            }
        };
        let persist = send.is_store.unwrap_or(true) && !send.online_only;
        // The read loop only reads while a slot is free, so this does not wait.
        let inflight = match self.inflight.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => match self.inflight.clone().acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => return Flow::Close,
            },
        };
        let sub = Submission {
            envelope: Envelope {
                app_id: id.app_id,
                from_uuid: id.uuid,
                from_account: id.account.to_string(),
                from_resource: id.resource.to_string(),
                packet_id: send.packet_id,
                target,
                biz_type: send.biz_type,
                payload: send.payload,
            },
            topic_snapshot: topic,
            from_conn: Some(self.conn_id),
            persist,
            ack: AckSink::Device(device.clone()),
            inflight: Some(inflight),
        };
        if let Err(RouterError::Closed { packet_id }) = self.state.router.submit(sub).await {
            let err = codec::error_frame(Status::Unavailable, "server shutting down", packet_id);
            return self.write_one(err).await;
        }
        Flow::Continue
    }

    /// Writes queued live frames, skipping those the backlog already carried; then
    /// resyncs if asked to ([`hub::RESYNC`]).
    async fn relay(&mut self, queued: VecDeque<Outbound>) -> Result<(), ()> {
        let resync = queued.iter().filter_map(hub::resync_from).min();
        let live = std::mem::take(&mut self.live);
        let mut frames = queued
            .into_iter()
            .filter(|o| o.seq != hub::RESYNC && live.relays(o.seq))
            .peekable();
        let (mut delivers, mut acks) = (0u64, 0u64);
        // In writes of about RELAY_WRITE_BYTES, each with its own write timeout: a
        // slow reader that keeps reading is not cut off by the size of its queue.
        while frames.peek().is_some() {
            let mut bytes = 0;
            let mut chunk = Vec::new();
            while let Some(out) = frames.next_if(|_| bytes < RELAY_WRITE_BYTES) {
                bytes += out.frame.len();
                match out.seq {
                    0 => acks += 1,
                    _ => delivers += 1,
                }
                chunk.push(out.frame);
            }
            if let Flow::Close = self.write_all(chunk).await {
                return Err(());
            }
        }
        self.live = live;
        metrics::counter!(telemetry::FRAMES_OUT, "type" => "deliver").increment(delivers);
        metrics::counter!(telemetry::FRAMES_OUT, "type" => "server_ack").increment(acks);
        if let Some(reach) = resync {
            if let Flow::Close = Box::pin(self.resync(reach)).await {
                return Err(());
            }
        }
        Ok(())
    }

    /// Sends a Kick (giving up after [`CLOSE_TIMEOUT`] if the peer does not read).
    async fn kick(&mut self, reason: KickReason) {
        self.session.close();
        self.kicked = true;
        tracing::debug!(conn = self.conn_id, ?reason, "kicking connection");
        metrics::counter!(telemetry::KICKS, "reason" => reason.label()).increment(1);
        metrics::counter!(telemetry::FRAMES_OUT, "type" => "kick").increment(1);
        self.write_last(codec::kick_frame(reason)).await;
    }

    /// Writes a connection's last frame (a kick), giving up after [`CLOSE_TIMEOUT`]
    /// if the peer does not read. Boxed, like [`Connection::write_all`].
    async fn write_last(&mut self, frame: Bytes) {
        let _ = Box::pin(tokio::time::timeout(
            CLOSE_TIMEOUT,
            self.write_frames([frame]),
        ))
        .await;
    }

    pub(super) async fn write_one(&mut self, frame: Bytes) -> Flow {
        self.write_all([frame]).await
    }

    /// Writes frames and flushes once. A write blocked on a peer that stopped
    /// reading is abandoned on a kick (e.g. slow consumer), on shutdown, or after
    /// `write_timeout_secs` — so no peer can hold a connection task forever.
    ///
    /// Boxed: its future (a timer and the transport's write state) is allocated while
    /// a write runs instead of being part of every idle connection's task.
    pub(super) fn write_all<'a>(
        &'a mut self,
        frames: impl IntoIterator<Item = Bytes, IntoIter: Send> + Send + 'a,
    ) -> Pin<Box<dyn Future<Output = Flow> + Send + 'a>> {
        Box::pin(async move {
            let queue = self.queue.clone();
            let shutdown = self.state.shutdown.clone();
            let limit = std::time::Duration::from_secs(self.state.config.write_timeout_secs);
            tokio::select! {
                flow = self.write_frames(frames) => flow,
                reason = queue.kill.killed() => {
                    tracing::debug!(conn = self.conn_id, ?reason, "write abandoned: connection kicked");
                    Flow::Close
                }
                _ = shutdown.cancelled() => Flow::Close,
                _ = tokio::time::sleep(limit) => {
                    crate::log_limited!(info, conn = self.conn_id, "write abandoned: peer not reading within write_timeout_secs");
                    Flow::Close
                }
            }
        })
    }

    async fn write_frames(&mut self, frames: impl IntoIterator<Item = Bytes>) -> Flow {
        for frame in frames {
            if let Err(e) = self.io.feed(frame).await {
                tracing::debug!(conn = self.conn_id, error = %e, "connection write failed");
                return Flow::Close;
            }
        }
        match self.io.flush().await {
            Ok(()) => Flow::Continue,
            Err(e) => {
                tracing::debug!(conn = self.conn_id, error = %e, "connection flush failed");
                Flow::Close
            }
        }
    }
}
