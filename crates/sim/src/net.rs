//! The simulated network. A control connection is a reliable ordered byte stream (TLS over
//! TCP in reality): each direction delivers in order, after latency, jitter and the time the
//! bytes take at the link's bandwidth. Faults at this level are delay, a slow link (long
//! latency, little bandwidth), a partition (nothing arrives until it heals, then everything
//! does, in order) and a disconnect (both ends see the connection close; bytes in flight are
//! lost). Media is datagrams: each hop may lose, duplicate or delay (and so reorder) a packet.

use std::time::Duration;

use blindcall_relay::ConnId;

use crate::clock::SimTime;
use crate::rng::Rng;

/// Latency, jitter and bandwidth of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// One-way latency.
    pub latency: Duration,
    /// Up to this much more, at random.
    pub jitter: Duration,
    /// Bytes per second; `None`: unlimited.
    pub bytes_per_second: Option<u64>,
}

/// Which way bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to relay.
    Up,
    /// Relay to client.
    Down,
}

#[derive(Debug, Clone, Copy, Default)]
struct Direction {
    /// When the link has sent everything written so far (bandwidth).
    free_at: SimTime,
    /// The latest delivery scheduled (deliveries stay in order).
    last: SimTime,
}

/// One control connection between a participant and the relay.
#[derive(Debug, Clone)]
pub struct Link {
    /// The relay's id of the connection.
    pub conn: ConnId,
    /// The participant's connection number (a participant may reconnect).
    pub generation: u32,
    /// The relay still holds the connection (it has not closed it nor seen it close).
    pub relay_open: bool,
    /// The client still reads the connection.
    pub client_open: bool,
    /// The network cut it.
    pub broken: bool,
    base: Profile,
    slow: Option<(SimTime, Profile)>,
    partitioned_until: SimTime,
    up: Direction,
    down: Direction,
}

impl Link {
    /// A new open connection with `base` characteristics.
    pub fn new(conn: ConnId, generation: u32, base: Profile) -> Self {
        Self {
            conn,
            generation,
            relay_open: true,
            client_open: true,
            broken: false,
            base,
            slow: None,
            partitioned_until: SimTime::ZERO,
            up: Direction::default(),
            down: Direction::default(),
        }
    }

    /// Takes over what the network does to `old` (the participant's previous connection): a
    /// slow spell or a partition still under way.
    pub fn inherit(&mut self, old: &Link) {
        self.slow = old.slow;
        self.partitioned_until = self.partitioned_until.max(old.partitioned_until);
    }

    /// Whether bytes can still flow both ways.
    pub fn is_up(&self) -> bool {
        self.relay_open && self.client_open && !self.broken
    }

    /// The link's profile at `now`.
    pub fn profile(&self, now: SimTime) -> Profile {
        match self.slow {
            Some((until, p)) if now < until => p,
            _ => self.base,
        }
    }

    /// Makes the link slow until `until`.
    pub fn set_slow(&mut self, until: SimTime, profile: Profile) {
        self.slow = Some((until, profile));
    }

    /// Whether the link is partitioned at `now`.
    pub fn partitioned(&self, now: SimTime) -> bool {
        now < self.partitioned_until
    }

    /// Partitions the link until `until`; returns the earliest time anything may arrive.
    pub fn partition(&mut self, now: SimTime, until: SimTime) -> SimTime {
        self.partitioned_until = self.partitioned_until.max(until);
        self.partitioned_until.plus(self.profile(now).latency)
    }

    /// Moves a delivery that was in flight when a partition began: it arrives no earlier than
    /// `earliest`, and after everything scheduled before it in its direction.
    pub fn delay_in_flight(&mut self, dir: Dir, at: SimTime, earliest: SimTime) -> SimTime {
        let d = self.direction(dir);
        let at = at.max(earliest).max(d.last);
        d.last = at;
        at
    }

    fn direction(&mut self, dir: Dir) -> &mut Direction {
        match dir {
            Dir::Up => &mut self.up,
            Dir::Down => &mut self.down,
        }
    }

    /// When `len` bytes written at `now` in direction `dir` arrive (in order with earlier
    /// writes).
    pub fn schedule(&mut self, dir: Dir, now: SimTime, len: usize, rng: &mut Rng) -> SimTime {
        let p = self.profile(now);
        let partitioned_until = self.partitioned_until;
        let jitter = jitter(p.jitter, rng);
        let d = self.direction(dir);
        let start = now.max(d.free_at);
        let on_wire = p.bytes_per_second.map_or(0, |bps| {
            (len as u64)
                .saturating_mul(1_000_000_000)
                .checked_div(bps.max(1))
                .unwrap_or(0)
        });
        d.free_at = SimTime(start.0.saturating_add(on_wire));
        let mut at = d.free_at.plus(p.latency).plus(jitter);
        if now < partitioned_until {
            at = at.max(partitioned_until.plus(p.latency));
        }
        at = at.max(d.last);
        d.last = at;
        at
    }

    /// When a close written at `now` reaches the other end (after the bytes before it).
    pub fn schedule_close(&mut self, dir: Dir, now: SimTime, rng: &mut Rng) -> SimTime {
        self.schedule(dir, now, 0, rng)
    }
}

/// A random delay up to `max`.
pub fn jitter(max: Duration, rng: &mut Rng) -> Duration {
    let max_us = u64::try_from(max.as_micros()).unwrap_or(0);
    Duration::from_micros(rng.range(0, max_us))
}

/// Faults of one media hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaFaults {
    /// Loss, per mille.
    pub loss: u32,
    /// Duplication, per mille.
    pub duplicate: u32,
    /// Extra random delay per packet.
    pub jitter: Duration,
}

impl MediaFaults {
    /// The delivery times of one packet over a hop of `latency` (none: lost; two: duplicated).
    pub fn hop(&self, now: SimTime, latency: Duration, rng: &mut Rng) -> Vec<SimTime> {
        if rng.chance(self.loss) {
            return Vec::new();
        }
        let mut out = vec![now.plus(latency).plus(jitter(self.jitter, rng))];
        if rng.chance(self.duplicate) {
            out.push(now.plus(latency).plus(jitter(self.jitter, rng)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(bps: Option<u64>) -> Link {
        Link::new(
            ConnId(1),
            0,
            Profile {
                latency: Duration::from_millis(10),
                jitter: Duration::from_millis(5),
                bytes_per_second: bps,
            },
        )
    }

    // covers: SIM-NET-1
    #[test]
    fn a_stream_delivers_in_order_after_latency_and_bandwidth() {
        let mut r = Rng::new(1);
        let mut l = link(Some(1_000));
        let a = l.schedule(Dir::Up, SimTime::ZERO, 500, &mut r);
        let b = l.schedule(Dir::Up, SimTime::ZERO, 1, &mut r);
        assert!(a >= SimTime::from_millis(510), "{a}");
        assert!(b >= a);
        let mut l = link(None);
        let mut last = SimTime::ZERO;
        for i in 0..100 {
            let t = l.schedule(Dir::Down, SimTime::from_millis(i), 10, &mut r);
            assert!(t >= last && t >= SimTime::from_millis(i + 10));
            last = t;
        }
    }

    // covers: SIM-NET-1
    #[test]
    fn a_partition_holds_bytes_until_it_heals() {
        let mut r = Rng::new(2);
        let mut l = link(None);
        let heal = SimTime::from_millis(1_000);
        let earliest = l.partition(SimTime::ZERO, heal);
        assert!(l.partitioned(SimTime::from_millis(999)));
        assert!(!l.partitioned(heal));
        let t = l.schedule(Dir::Up, SimTime::from_millis(5), 10, &mut r);
        assert!(t >= earliest);
        let moved = l.delay_in_flight(Dir::Up, SimTime::from_millis(20), earliest);
        assert!(
            moved >= t,
            "in-flight bytes stay behind later writes that were scheduled"
        );
    }
}
