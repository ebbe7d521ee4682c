//! Online sessions: which devices of which users are connected to this node, and
//! fan-out of encoded frames to them.
//!
//! Each device has a FIFO [`DeviceQueue`] of [`Outbound`] frames drained by its
//! connection task, bounded twice: in frames (`device_queue_frames`) and in bytes
//! (`device_queue_bytes`). The hub never waits: a device whose queue is full is
//! kicked as a slow consumer (it resyncs from its cursor), so one slow reader never
//! grows server memory or stalls the router.
//!
//! A user has at most `max_devices_per_user` devices online; a login beyond that is
//! refused (the newest is refused, so a stolen token cannot push the owner's devices
//! off). A login with a resource already online replaces that device instead.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Notify;

use crate::protocol::KickReason;

/// A frame queued for one device. `seq` is the timeline sequence it carries
/// (0 for frames that are not timeline messages, e.g. acks), so a device still
/// sending its login backlog can skip live frames the backlog already covered.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub seq: u64,
    pub frame: Bytes,
}

/// The `seq` of an [`Outbound`] that is no frame but asks the device's connection
/// to resync: read its backlog again, from its cursor or from the sequence the
/// marker carries, whichever is older (in a cluster, after a NATS interruption or
/// a node's loss: what other nodes published meanwhile was not received).
pub const RESYNC: u64 = u64::MAX;

/// A resync marker reaching back to sequence `from` at least.
pub fn resync_marker(from: u64) -> Outbound {
    Outbound {
        seq: RESYNC,
        frame: Bytes::copy_from_slice(&from.to_be_bytes()),
    }
}

/// The sequence a resync marker reaches back to (`None`: not a marker).
pub fn resync_from(out: &Outbound) -> Option<u64> {
    if out.seq != RESYNC {
        return None;
    }
    let bytes: [u8; 8] = out.frame.as_ref().try_into().unwrap_or([0; 8]);
    Some(u64::from_be_bytes(bytes))
}

/// Why a connection must end, set once by whoever ends it.
#[derive(Debug, Default)]
pub struct KillSwitch {
    reason: OnceLock<KickReason>,
    notify: Notify,
}

impl KillSwitch {
    /// Asks the connection to send `Kick{reason}` and close. The first reason wins.
    pub fn kill(&self, reason: KickReason) {
        if self.reason.set(reason).is_ok() {
            self.notify.notify_one();
        }
    }

    /// The kick reason, if [`KillSwitch::kill`] was called.
    pub fn reason(&self) -> Option<KickReason> {
        self.reason.get().copied()
    }

    /// Resolves once [`KillSwitch::kill`] was called.
    pub async fn killed(&self) -> KickReason {
        loop {
            if let Some(r) = self.reason.get() {
                return *r;
            }
            self.notify.notified().await;
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Over `device_queue_frames` or `device_queue_bytes`.
    Full(&'static str),
    /// The connection is gone.
    Closed,
}

/// One device's queue of outbound frames, filled by the hub and drained whole by
/// the device's connection, together with the device's [`KillSwitch`] (one
/// allocation per device).
///
/// It holds no buffer while empty: the connection takes the whole deque at once
/// ([`DeviceQueue::take`]) and the next push starts a new one, so an idle device
/// costs only this struct.
#[derive(Debug)]
pub struct DeviceQueue {
    state: parking_lot::Mutex<QueueState>,
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
    /// Why the connection must end, once something ended it.
    pub kill: KillSwitch,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Outbound>,
    bytes: usize,
    closed: bool,
}

impl DeviceQueue {
    /// A queue refusing more than `max_frames` frames or `max_bytes` bytes.
    pub fn new(max_frames: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(DeviceQueue {
            state: parking_lot::Mutex::new(QueueState::default()),
            ready: Notify::new(),
            max_frames,
            max_bytes,
            kill: KillSwitch::default(),
        })
    }

    fn push(&self, out: Outbound) -> Result<(), Refused> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.frames.len() >= self.max_frames {
            return Err(Refused::Full("frames"));
        }
        let bytes = state.bytes.saturating_add(out.frame.len());
        if bytes > self.max_bytes {
            return Err(Refused::Full("bytes"));
        }
        state.bytes = bytes;
        let was_empty = state.frames.is_empty();
        state.frames.push_back(out);
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Waits until frames are queued and takes them all (in order), leaving the
    /// queue empty and without a buffer.
    pub async fn take(&self) -> VecDeque<Outbound> {
        loop {
            let frames = self.try_take();
            if !frames.is_empty() {
                return frames;
            }
            self.ready.notified().await;
        }
    }

    /// Takes what is queued now, without waiting (possibly nothing).
    pub fn try_take(&self) -> VecDeque<Outbound> {
        let mut state = self.state.lock();
        state.bytes = 0;
        std::mem::take(&mut state.frames)
    }

    /// Frames and bytes queued now.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.frames.len(), state.bytes)
    }

    /// Refuses further frames and drops the queued ones (the connection ended).
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.frames = VecDeque::new();
        state.bytes = 0;
    }
}

/// One online device as the hub sees it.
#[derive(Debug, Clone)]
pub struct DeviceHandle {
    /// Unique per connection on this node.
    pub conn_id: u64,
    pub resource: Arc<str>,
    queue: Arc<DeviceQueue>,
}

impl DeviceHandle {
    pub fn new(conn_id: u64, resource: Arc<str>, queue: Arc<DeviceQueue>) -> Self {
        DeviceHandle {
            conn_id,
            resource,
            queue,
        }
    }

    /// Queues a frame; a queue full in frames or bytes kicks the device. Returns
    /// whether it was queued.
    pub fn push(&self, out: Outbound) -> bool {
        match self.queue.push(out) {
            Ok(()) => true,
            Err(Refused::Full(full_in)) => {
                self.slow_consumer(full_in);
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    fn slow_consumer(&self, full_in: &'static str) {
        if self.queue.kill.reason().is_none() {
            crate::log_limited!(
                info,
                conn = self.conn_id,
                full_in,
                "slow consumer kicked: device queue full"
            );
        }
        self.queue.kill.kill(KickReason::SlowConsumer);
    }

    /// Ends the device's connection with a kick.
    pub fn kick(&self, reason: KickReason) {
        self.queue.kill.kill(reason);
    }
}

/// Which devices of a user a delivery goes to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Audience<'a> {
    /// Skip this connection (the sender's own device).
    pub except_conn: Option<u64>,
    /// Only this resource, if set.
    pub only_resource: Option<&'a str>,
}

impl Audience<'_> {
    /// Whether `device` is one of the devices this audience selects.
    fn selects(&self, device: &DeviceHandle) -> bool {
        Some(device.conn_id) != self.except_conn
            && self.only_resource.is_none_or(|r| *device.resource == *r)
    }
}

/// A login the hub refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{max} devices of this user are online already (max_devices_per_user); log out one first")]
pub struct TooManyDevices {
    pub max: usize,
}

/// The online devices of this node, by user uuid.
#[derive(Debug)]
pub struct Hub {
    users: DashMap<u64, Vec<DeviceHandle>>,
    max_devices: usize,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub with no limit on devices per user.
    pub fn new() -> Self {
        Hub::with_device_limit(usize::MAX)
    }

    /// A hub that lets each user have at most `max_devices` devices online.
    pub fn with_device_limit(max_devices: usize) -> Self {
        Hub {
            users: DashMap::new(),
            max_devices,
        }
    }

    /// Registers a device; an older session of the same (user, resource) is kicked
    /// ("single-resource-kick") and removed. Refused when the user has
    /// `max_devices` other devices online.
    pub fn register(&self, uuid: u64, device: DeviceHandle) -> Result<(), TooManyDevices> {
        let mut devices = self.users.entry(uuid).or_default();
        let others = devices
            .iter()
            .filter(|d| d.resource != device.resource)
            .count();
        if others >= self.max_devices {
            crate::log_limited!(
                info,
                uuid,
                max = self.max_devices,
                "login refused: too many devices"
            );
            return Err(TooManyDevices {
                max: self.max_devices,
            });
        }
        devices.retain(|d| {
            if d.resource == device.resource {
                d.kick(KickReason::Replaced);
                false
            } else {
                true
            }
        });
        // Most users have one device: grow by one, not to four slots.
        devices.reserve_exact(1);
        devices.push(device);
        Ok(())
    }

    /// Removes one connection (and the user, when it was the last device).
    pub fn unregister(&self, uuid: u64, conn_id: u64) {
        self.users.remove_if_mut(&uuid, |_, devices| {
            devices.retain(|d| d.conn_id != conn_id);
            devices.is_empty()
        });
    }

    /// Queues `out` on the user's matching devices; returns how many took it.
    pub fn deliver(&self, uuid: u64, audience: Audience<'_>, out: &Outbound) -> usize {
        let Some(devices) = self.users.get(&uuid) else {
            return 0;
        };
        devices
            .iter()
            .filter(|d| audience.selects(d))
            .filter(|d| d.push(out.clone()))
            .count()
    }

    /// How many devices of `uuid` that `audience` selects are online.
    pub fn online_devices(&self, uuid: u64, audience: Audience<'_>) -> usize {
        self.users.get(&uuid).map_or(0, |devices| {
            devices.iter().filter(|d| audience.selects(d)).count()
        })
    }

    /// Number of online devices of a user.
    pub fn device_count(&self, uuid: u64) -> usize {
        self.users.get(&uuid).map_or(0, |d| d.len())
    }

    /// Number of users with at least one online device.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Kicks every device of one user.
    pub fn kick_user(&self, uuid: u64, reason: KickReason) {
        if let Some(devices) = self.users.get(&uuid) {
            for d in devices.iter() {
                d.kick(reason);
            }
        }
    }

    /// Kicks and removes the user's devices of `resource`, but connection
    /// `except_conn`: a device of that resource logged in on another node.
    pub fn kick_resource(&self, uuid: u64, resource: &str, except_conn: u64) {
        self.users.remove_if_mut(&uuid, |_, devices| {
            devices.retain(|d| {
                if *d.resource == *resource && d.conn_id != except_conn {
                    d.kick(KickReason::Replaced);
                    false
                } else {
                    true
                }
            });
            devices.is_empty()
        });
    }

    /// Asks every device's connection to resync from the store, reaching back to
    /// sequence `from` at least ([`RESYNC`]). Returns how many were asked.
    pub fn resync_all(&self, from: u64) -> usize {
        let marker = resync_marker(from);
        let mut n = 0;
        for entry in self.users.iter() {
            for d in entry.value() {
                n += usize::from(d.push(marker.clone()));
            }
        }
        n
    }

    /// Kicks every device (shutdown).
    pub fn kick_all(&self, reason: KickReason) {
        for entry in self.users.iter() {
            for d in entry.value() {
                d.kick(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(conn: u64, resource: &str, cap: usize) -> (DeviceHandle, Arc<DeviceQueue>) {
        let queue = DeviceQueue::new(cap, 1 << 20);
        (
            DeviceHandle::new(conn, resource.into(), queue.clone()),
            queue,
        )
    }

    fn out(seq: u64) -> Outbound {
        Outbound {
            seq,
            frame: Bytes::from_static(b"x"),
        }
    }

    #[tokio::test]
    async fn delivers_to_all_devices_but_the_excluded_one() {
        let hub = Hub::new();
        let (a, qa) = device(1, "phone", 8);
        let (b, qb) = device(2, "pad", 8);
        hub.register(7, a).unwrap();
        hub.register(7, b).unwrap();
        let aud = Audience {
            except_conn: Some(1),
            only_resource: None,
        };
        assert_eq!(hub.deliver(7, aud, &out(5)), 1);
        assert_eq!(qb.take().await[0].seq, 5);
        assert_eq!(qa.len(), (0, 0));
        let only_phone = Audience {
            except_conn: None,
            only_resource: Some("phone"),
        };
        assert_eq!(hub.deliver(7, only_phone, &out(6)), 1);
        assert_eq!(qa.take().await[0].seq, 6);
        assert_eq!(hub.deliver(8, Audience::default(), &out(7)), 0);
    }

    #[tokio::test]
    async fn same_resource_login_kicks_the_older_session() {
        let hub = Hub::new();
        let (old, old_queue) = device(1, "phone", 8);
        let (new, _) = device(2, "phone", 8);
        hub.register(7, old).unwrap();
        hub.register(7, new).unwrap();
        assert_eq!(old_queue.kill.killed().await, KickReason::Replaced);
        assert_eq!(hub.device_count(7), 1);
        // The old connection's cleanup does not remove the new one.
        hub.unregister(7, 1);
        assert_eq!(hub.device_count(7), 1);
        hub.unregister(7, 2);
        assert_eq!(hub.user_count(), 0);
    }

    #[tokio::test]
    async fn full_queue_kicks_slow_consumer() {
        let hub = Hub::new();
        let (d, queue) = device(1, "phone", 2);
        hub.register(7, d).unwrap();
        assert_eq!(hub.deliver(7, Audience::default(), &out(1)), 1);
        assert_eq!(hub.deliver(7, Audience::default(), &out(2)), 1);
        assert_eq!(hub.deliver(7, Audience::default(), &out(3)), 0);
        assert_eq!(queue.kill.killed().await, KickReason::SlowConsumer);
    }

    #[tokio::test]
    async fn queue_over_its_byte_budget_kicks_slow_consumer_and_taking_empties_it() {
        let hub = Hub::new();
        let queue = DeviceQueue::new(1000, 10);
        hub.register(7, DeviceHandle::new(1, "phone".into(), queue.clone()))
            .unwrap();
        let big = Outbound {
            seq: 1,
            frame: Bytes::from_static(b"123456"),
        };
        assert_eq!(hub.deliver(7, Audience::default(), &big), 1);
        assert_eq!(queue.len(), (1, 6));
        assert_eq!(hub.deliver(7, Audience::default(), &big), 0);
        assert_eq!(queue.kill.killed().await, KickReason::SlowConsumer);
        // Taking gives the budget back, and the queue keeps no buffer.
        let taken = queue.take().await;
        assert_eq!(taken.len(), 1);
        assert_eq!(queue.len(), (0, 0));
        assert_eq!(queue.state.lock().frames.capacity(), 0);
        queue.close();
        assert_eq!(hub.deliver(7, Audience::default(), &big), 0);
    }

    #[tokio::test]
    async fn devices_past_the_limit_are_refused_but_a_same_resource_login_replaces() {
        let hub = Hub::with_device_limit(2);
        let (a, _) = device(1, "phone", 8);
        let (b, _) = device(2, "pad", 8);
        let (c, _) = device(3, "web", 8);
        let (a2, _) = device(4, "phone", 8);
        hub.register(7, a).unwrap();
        hub.register(7, b).unwrap();
        assert_eq!(hub.register(7, c), Err(TooManyDevices { max: 2 }));
        hub.register(7, a2).unwrap();
        assert_eq!(hub.device_count(7), 2);
    }

    #[tokio::test]
    async fn another_nodes_login_kicks_one_resource_and_resync_markers_reach_every_device() {
        let hub = Hub::new();
        let (phone, phone_q) = device(1, "phone", 8);
        let (pad, pad_q) = device(2, "pad", 8);
        hub.register(7, phone).unwrap();
        hub.register(7, pad).unwrap();
        // A login of "phone" elsewhere (connection 99): this node's phone goes.
        hub.kick_resource(7, "phone", 99);
        assert_eq!(phone_q.kill.reason(), Some(KickReason::Replaced));
        assert_eq!(pad_q.kill.reason(), None);
        assert_eq!(hub.device_count(7), 1);
        // The kick of this very connection (its own login echoed) spares it.
        hub.kick_resource(7, "pad", 2);
        assert_eq!(hub.device_count(7), 1);

        assert_eq!(hub.resync_all(12_345), 1);
        let queued = pad_q.take().await;
        assert_eq!(queued.len(), 1);
        assert_eq!(resync_from(&queued[0]), Some(12_345));
        assert_eq!(resync_from(&out(5)), None, "a delivery is no marker");
    }
}
