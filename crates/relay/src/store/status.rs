//! A cluster's state as its store shows it, for `blindcall cluster status` (spec/cluster.md,
//! CL-STATUS-1): every node's last heartbeat and every room's home, epoch and member count.

use std::time::Duration;

use super::{HomeRecord, NodeRecord};
use crate::ds::RoomId;

/// One node, from its heartbeat.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// The heartbeat.
    pub record: NodeRecord,
    /// Time since the heartbeat was written, by the NATS server's clock against this
    /// machine's (informative: nodes judge each other's liveness by their own clocks).
    pub age: Duration,
}

/// One room.
#[derive(Debug, Clone)]
pub struct RoomStatus {
    /// The room.
    pub room: RoomId,
    /// Its home: the holder of the highest term (`None`: no home claimed yet).
    pub home: Option<HomeRecord>,
    /// Its epoch: after the highest sequenced commit, else the genesis epoch.
    pub epoch: Option<u64>,
    /// Members in that epoch's GroupInfo.
    pub members: Option<usize>,
}

/// What the store holds about the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterStatus {
    /// Nodes with a heartbeat in the store, by id.
    pub nodes: Vec<NodeStatus>,
    /// Rooms with an entry in the store, by id.
    pub rooms: Vec<RoomStatus>,
    /// Entries that could not be read or were refused (key and reason).
    pub refused: Vec<String>,
}
