//! The live progress table of `blindcall demo`: one row per participant, refreshed while the
//! scripted call runs.

use blindcall_client::{CallStats, DropCause};

/// One row of the live progress table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRow {
    /// Participant.
    pub name: String,
    /// waiting / member / left / removed.
    pub status: &'static str,
    /// Latest counters.
    pub stats: CallStats,
}

impl LiveRow {
    /// The row as one line of text.
    pub fn text(&self) -> String {
        let s = &self.stats;
        let drops: u64 = s
            .dropped
            .iter()
            .filter(|(c, _)| **c != DropCause::BeforeJoin)
            .map(|(_, n)| n)
            .sum();
        format!(
            "{:<8} {:<8} epoch {:>3}  code {:<36} sent {:>6}  opened {:>7}  drops {:>4}",
            self.name,
            self.status,
            s.epoch.map_or("-".into(), |e| e.to_string()),
            s.code.clone().unwrap_or_else(|| "-".into()),
            s.frames_sent,
            s.frames_opened,
            drops
        )
    }
}
