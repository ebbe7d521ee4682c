//! Online sessions: which devices of which users are connected to this node, and
//! fan-out of encoded frames to them.
//!
//! Each device has a bounded FIFO queue of [`Outbound`] frames drained by its
//! connection task, bounded twice: in frames (`device_queue_frames`) and in bytes
//! (`device_queue_bytes`). The hub only ever `try_send`s: a device whose queue is
//! full is kicked as a slow consumer (it resyncs from its cursor), so one slow
//! reader never grows server memory or stalls the router.
//!
//! A user has at most `max_devices_per_user` devices online; a login beyond that is
//! refused (the newest is refused, so a stolen token cannot push the owner's devices
//! off). A login with a resource already online replaces that device instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{mpsc, Notify};

use crate::protocol::KickReason;

/// A frame queued for one device. `seq` is the timeline sequence it carries
/// (0 for frames that are not timeline messages, e.g. acks), so a device still
/// sending its login backlog can skip live frames the backlog already covered.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub seq: u64,
    pub frame: Bytes,
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

/// Bytes waiting in one device's queue, shared by the hub (adds) and the
/// connection draining it (subtracts).
#[derive(Debug)]
pub struct QueueBytes {
    queued: AtomicUsize,
    budget: usize,
}

impl QueueBytes {
    pub fn new(budget: usize) -> Arc<Self> {
        Arc::new(QueueBytes {
            queued: AtomicUsize::new(0),
            budget,
        })
    }

    /// Reserves `n` bytes; false if that would pass the budget.
    fn reserve(&self, n: usize) -> bool {
        // One atomic add on the fan-out path; undone in the rare refusal.
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.budget {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back `n` bytes taken off the queue.
    pub fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// One online device as the hub sees it.
#[derive(Debug, Clone)]
pub struct DeviceHandle {
    /// Unique per connection on this node.
    pub conn_id: u64,
    pub resource: Arc<str>,
    queue: mpsc::Sender<Outbound>,
    bytes: Arc<QueueBytes>,
    kill: Arc<KillSwitch>,
}

impl DeviceHandle {
    pub fn new(
        conn_id: u64,
        resource: Arc<str>,
        queue: mpsc::Sender<Outbound>,
        bytes: Arc<QueueBytes>,
        kill: Arc<KillSwitch>,
    ) -> Self {
        DeviceHandle {
            conn_id,
            resource,
            queue,
            bytes,
            kill,
        }
    }

    /// Queues a frame; a queue full in frames or bytes kicks the device. Returns
    /// whether it was queued.
    pub fn push(&self, out: Outbound) -> bool {
        let len = out.frame.len();
        if !self.bytes.reserve(len) {
            self.slow_consumer("bytes");
            return false;
        }
        match self.queue.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bytes.release(len);
                self.slow_consumer("frames");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.bytes.release(len);
                false
            }
        }
    }

    fn slow_consumer(&self, full_in: &'static str) {
        if self.kill.reason().is_none() {
            crate::log_limited!(
                info,
                conn = self.conn_id,
                full_in,
                "slow consumer kicked: device queue full"
            );
        }
        self.kill.kill(KickReason::SlowConsumer);
    }

    /// Ends the device's connection with a kick.
    pub fn kick(&self, reason: KickReason) {
        self.kill.kill(reason);
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
        let mut n = 0;
        for d in devices.iter() {
            if Some(d.conn_id) == audience.except_conn {
                continue;
            }
            if let Some(r) = audience.only_resource {
                if *d.resource != *r {
                    continue;
                }
            }
            if d.push(out.clone()) {
                n += 1;
            }
        }
        n
    }

    /// Number of online devices of a user.
    pub fn device_count(&self, uuid: u64) -> usize {
        self.users.get(&uuid).map_or(0, |d| d.len())
    }

    /// Number of users with at least one online device.
    pub fn user_count(&self) -> usize {
        self.users.len()
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

    fn device(
        conn: u64,
        resource: &str,
        cap: usize,
    ) -> (DeviceHandle, mpsc::Receiver<Outbound>, Arc<KillSwitch>) {
        let (tx, rx) = mpsc::channel(cap);
        let kill = Arc::new(KillSwitch::default());
        (
            DeviceHandle::new(
                conn,
                resource.into(),
                tx,
                QueueBytes::new(1 << 20),
                kill.clone(),
            ),
            rx,
            kill,
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
        let (a, mut ra, _) = device(1, "phone", 8);
        let (b, mut rb, _) = device(2, "pad", 8);
        hub.register(7, a).unwrap();
        hub.register(7, b).unwrap();
        let aud = Audience {
            except_conn: Some(1),
            only_resource: None,
        };
        assert_eq!(hub.deliver(7, aud, &out(5)), 1);
        assert_eq!(rb.recv().await.unwrap().seq, 5);
        assert!(ra.try_recv().is_err());
        let only_phone = Audience {
            except_conn: None,
            only_resource: Some("phone"),
        };
        assert_eq!(hub.deliver(7, only_phone, &out(6)), 1);
        assert_eq!(ra.recv().await.unwrap().seq, 6);
        assert_eq!(hub.deliver(8, Audience::default(), &out(7)), 0);
    }

    #[tokio::test]
    async fn same_resource_login_kicks_the_older_session() {
        let hub = Hub::new();
        let (old, _r1, old_kill) = device(1, "phone", 8);
        let (new, _r2, _) = device(2, "phone", 8);
        hub.register(7, old).unwrap();
        hub.register(7, new).unwrap();
        assert_eq!(old_kill.killed().await, KickReason::Replaced);
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
        let (d, _rx, kill) = device(1, "phone", 2);
        hub.register(7, d).unwrap();
        assert_eq!(hub.deliver(7, Audience::default(), &out(1)), 1);
        assert_eq!(hub.deliver(7, Audience::default(), &out(2)), 1);
        assert_eq!(hub.deliver(7, Audience::default(), &out(3)), 0);
        assert_eq!(kill.killed().await, KickReason::SlowConsumer);
    }

    #[tokio::test]
    async fn queue_over_its_byte_budget_kicks_slow_consumer() {
        let hub = Hub::new();
        let (tx, mut rx) = mpsc::channel(1000);
        let kill = Arc::new(KillSwitch::default());
        let bytes = QueueBytes::new(10);
        let d = DeviceHandle::new(1, "phone".into(), tx, bytes.clone(), kill.clone());
        hub.register(7, d).unwrap();
        let big = Outbound {
            seq: 1,
            frame: Bytes::from_static(b"123456"),
        };
        assert_eq!(hub.deliver(7, Audience::default(), &big), 1);
        assert_eq!(bytes.queued(), 6);
        assert_eq!(hub.deliver(7, Audience::default(), &big), 0);
        assert_eq!(kill.killed().await, KickReason::SlowConsumer);
        // Draining gives the bytes back.
        let taken = rx.recv().await.unwrap();
        bytes.release(taken.frame.len());
        assert_eq!(bytes.queued(), 0);
    }

    #[tokio::test]
    async fn devices_past_the_limit_are_refused_but_a_same_resource_login_replaces() {
        let hub = Hub::with_device_limit(2);
        let (a, _ra, _) = device(1, "phone", 8);
        let (b, _rb, _) = device(2, "pad", 8);
        let (c, _rc, _) = device(3, "web", 8);
        let (a2, _ra2, _) = device(4, "phone", 8);
        hub.register(7, a).unwrap();
        hub.register(7, b).unwrap();
        assert_eq!(hub.register(7, c), Err(TooManyDevices { max: 2 }));
        hub.register(7, a2).unwrap();
        assert_eq!(hub.device_count(7), 2);
    }
}
