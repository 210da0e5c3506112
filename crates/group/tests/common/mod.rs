//! A simulated call room: a toy delivery service that sequences commits (the first commit per
//! epoch wins and is broadcast to everyone), N members and a manual clock.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod raw;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use blindcall_group::{CallConfig, CallGroup, Client, Error, Event, MemberConfig, PendingCommit};

/// A frame opened by a member, copied out of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub leaf: u32,
    pub identity: String,
    pub context: u64,
    pub epoch: u64,
    pub payload: Vec<u8>,
}

/// What the toy DS did with a submitted commit.
pub enum Verdict {
    /// Sequenced: confirmed at the sender and delivered to everyone else. Per-member errors of
    /// the others (e.g. policy rejections) are returned.
    Accepted(Vec<(String, Error)>),
    /// Another commit already took this epoch; the sender gets its commit back to discard.
    Rejected(PendingCommit),
}

pub struct Room {
    pub now: Instant,
    pub call: CallConfig,
    pub local: MemberConfig,
    pub members: BTreeMap<String, CallGroup>,
    pub events: BTreeMap<String, Vec<Event>>,
    /// The epoch the DS expects the next commit in.
    pub ds_epoch: u64,
    /// Every handshake message the DS broadcast, in order.
    pub log: Vec<Vec<u8>>,
    /// Whether the DS relays members' peer messages (epoch confirmations) to everyone.
    pub relay_peer_messages: bool,
    /// Peer messages held back when `relay_peer_messages` is off: (sender, payload).
    pub held_peer_messages: Vec<(String, Vec<u8>)>,
}

impl Room {
    /// A room whose first member `host` created the call.
    pub fn new(host: &str, call: CallConfig, local: MemberConfig) -> Self {
        let now = Instant::now();
        let client = Client::new(host, call.mls_suite).unwrap();
        let group = CallGroup::create(client, &call, local, now).unwrap();
        let mut room = Self {
            now,
            call,
            local,
            members: BTreeMap::new(),
            events: BTreeMap::new(),
            ds_epoch: group.epoch(),
            log: Vec::new(),
            relay_peer_messages: true,
            held_peer_messages: Vec::new(),
        };
        room.members.insert(host.to_string(), group);
        room.drain();
        room
    }

    /// A call with `names[0]` as host and the others added in one commit by the host.
    pub fn with_members(names: &[&str], call: CallConfig, local: MemberConfig) -> Self {
        let mut room = Self::new(names[0], call, local);
        if names.len() > 1 {
            room.add(names[0], &names[1..]);
        }
        room
    }

    pub fn get(&self, name: &str) -> &CallGroup {
        &self.members[name]
    }

    pub fn get_mut(&mut self, name: &str) -> &mut CallGroup {
        self.members.get_mut(name).unwrap()
    }

    /// Relays members' peer messages (to everyone else, as the relay does), then moves every
    /// member's queued events into `events`.
    pub fn drain(&mut self) {
        loop {
            let mut out = Vec::new();
            for (name, m) in &mut self.members {
                while let Some(p) = m.poll_peer_message() {
                    out.push((name.clone(), p));
                }
            }
            if out.is_empty() {
                break;
            }
            if !self.relay_peer_messages {
                self.held_peer_messages.extend(out);
                break;
            }
            for (from, payload) in out {
                self.deliver_peer(&from, &payload, None);
            }
        }
        for (name, m) in &mut self.members {
            while let Some(e) = m.poll_event() {
                self.events.entry(name.clone()).or_default().push(e);
            }
        }
    }

    /// Delivers a peer message from `from` to every other active member, or only to `to`.
    pub fn deliver_peer(&mut self, from: &str, payload: &[u8], to: Option<&[&str]>) {
        let now = self.now;
        for (name, m) in &mut self.members {
            let wanted = to.is_none_or(|t| t.contains(&name.as_str()));
            if name != from && wanted && m.is_active() {
                // Refusals (e.g. a confirmation of an epoch the receiver left) are counted by
                // real clients; the harness ignores them.
                let _ = m.handle_peer_message(now, payload);
            }
        }
    }

    pub fn take_events(&mut self, name: &str) -> Vec<Event> {
        self.drain();
        self.events.remove(name).unwrap_or_default()
    }

    /// Submits `pc` from `from` to the DS: the first commit per epoch wins.
    pub fn submit(&mut self, from: &str, pc: PendingCommit) -> Verdict {
        if pc.from_epoch() != self.ds_epoch {
            return Verdict::Rejected(pc);
        }
        self.ds_epoch = pc.next_epoch();
        let commit = pc.commit().to_vec();
        let now = self.now;
        pc.confirm(self.get_mut(from), now).unwrap();
        self.log.push(commit.clone());
        let errors = self.broadcast_except(from, &commit);
        self.drain();
        Verdict::Accepted(errors)
    }

    /// Submits and expects acceptance by the DS and by every member.
    pub fn commit(&mut self, from: &str, pc: PendingCommit) {
        match self.submit(from, pc) {
            Verdict::Accepted(errors) => assert!(errors.is_empty(), "members refused: {errors:?}"),
            Verdict::Rejected(_) => panic!("DS refused a commit from {from}"),
        }
    }

    /// Delivers `bytes` to every active member except `from`; returns their errors.
    pub fn broadcast_except(&mut self, from: &str, bytes: &[u8]) -> Vec<(String, Error)> {
        let now = self.now;
        let mut errors = Vec::new();
        for (name, m) in &mut self.members {
            if name != from
                && m.is_active()
                && let Err(e) = m.handle_message(now, bytes)
            {
                errors.push((name.clone(), e));
            }
        }
        self.drain();
        errors
    }

    /// `by` adds fresh clients named `names`; they join from the Welcome.
    pub fn add(&mut self, by: &str, names: &[&str]) {
        let clients: Vec<Client> = names
            .iter()
            .map(|n| Client::new(n, self.call.mls_suite).unwrap())
            .collect();
        self.add_clients(by, clients, names);
    }

    /// `by` adds the given clients, known here as `names`; they join from the Welcome.
    #[allow(dead_code)]
    pub fn add_clients(&mut self, by: &str, clients: Vec<Client>, names: &[&str]) {
        let kps: Vec<Vec<u8>> = clients.iter().map(|c| c.key_package().unwrap()).collect();
        let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
        let pc = self.get_mut(by).add_members(&refs).unwrap();
        let welcome = pc.welcome().unwrap().to_vec();
        self.commit(by, pc);
        for (client, name) in clients.into_iter().zip(names) {
            let g = CallGroup::join(client, &welcome, self.local, self.now).unwrap();
            self.members.insert(name.to_string(), g);
        }
        self.drain();
    }

    /// `by` removes the member named `name`.
    pub fn remove(&mut self, by: &str, name: &str) {
        let leaf = self.get(name).own_leaf();
        let pc = self.get_mut(by).remove_members(&[leaf]).unwrap();
        self.commit(by, pc);
    }

    /// Advances the manual clock by `d` and fires every due timer.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        for m in self.members.values_mut() {
            if m.poll_timeout().is_some_and(|t| t <= now) {
                m.handle_timeout(now);
            }
        }
        self.drain();
    }

    /// Every member whose path update is due sends it (one after another, each sequenced).
    pub fn run_path_updates(&mut self) {
        self.drain();
        let due: Vec<String> = self
            .events
            .iter()
            .filter(|(_, es)| es.contains(&Event::PathUpdateDue))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.events
                .get_mut(&name)
                .unwrap()
                .retain(|e| *e != Event::PathUpdateDue);
            let pc = self.get_mut(&name).self_update().unwrap();
            self.commit(&name, pc);
        }
    }

    pub fn activate_all(&mut self) {
        for m in self.members.values_mut() {
            if m.is_active() {
                m.activate_send_epoch();
            }
        }
        self.drain();
    }

    /// `name` seals `payload` on its stream `context`.
    pub fn seal(&mut self, name: &str, context: u64, payload: &[u8]) -> Vec<u8> {
        let now = self.now;
        self.get_mut(name)
            .seal(now, context, b"meta", payload)
            .unwrap()
    }

    /// `name` tries to open `frame`.
    pub fn open(&mut self, name: &str, frame: &[u8]) -> Result<Got, blindcall_group::FrameError> {
        let mut buf = frame.to_vec();
        let opened = self.get_mut(name).open(b"meta", &mut buf)?;
        Ok(Got {
            leaf: opened.sender,
            identity: opened.identity.to_string(),
            context: opened.context,
            epoch: opened.epoch,
            payload: opened.plaintext.to_vec(),
        })
    }

    pub fn epochs(&self) -> Vec<(String, u64)> {
        self.members
            .iter()
            .filter(|(_, m)| m.is_active())
            .map(|(n, m)| (n.clone(), m.epoch()))
            .collect()
    }

    /// Asserts all active members are at one epoch with one security code.
    pub fn assert_converged(&self) {
        let active: Vec<&CallGroup> = self.members.values().filter(|m| m.is_active()).collect();
        let first = active[0];
        for m in &active {
            assert_eq!(
                m.epoch(),
                first.epoch(),
                "epochs differ: {:?}",
                self.epochs()
            );
            assert_eq!(m.security_code(), first.security_code());
            assert_eq!(m.roster(), first.roster());
        }
    }
}
