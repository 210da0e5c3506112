//! The relay-side offer/answer state of one participant's PeerConnection (sans-IO).
//!
//! The relay is always the offerer; a participant only answers. Changes requested while an
//! offer is outstanding are batched into one follow-up offer once the answer arrives, so two
//! offers are never in flight on one connection.

use crate::error::TransportError;

/// Whether the shell should create an offer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegotiationStep {
    /// Create and send the offer with this generation number.
    Offer(u64),
    /// An offer is outstanding; the change will go out with the next one.
    Wait,
}

/// Offer/answer bookkeeping for one connection.
#[derive(Debug, Default)]
pub struct Negotiation {
    generation: u64,
    awaiting: Option<u64>,
    dirty: bool,
}

impl Negotiation {
    /// A connection that has not negotiated yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Something changed (a track added or removed): offer now or after the pending answer.
    pub fn request(&mut self) -> NegotiationStep {
        if self.awaiting.is_some() {
            self.dirty = true;
            return NegotiationStep::Wait;
        }
        self.generation += 1;
        self.awaiting = Some(self.generation);
        NegotiationStep::Offer(self.generation)
    }

    /// The generation of the outstanding offer, if any.
    pub fn awaiting(&self) -> Option<u64> {
        self.awaiting
    }

    /// The creation of offer `generation` failed: forget it so negotiation can be retried.
    pub fn abandon(&mut self, generation: u64) {
        if self.awaiting == Some(generation) {
            self.awaiting = None;
            self.dirty = true;
        }
    }

    /// The peer answered. Returns the answered generation and what to do next.
    pub fn handle_answer(&mut self) -> Result<(u64, NegotiationStep), TransportError> {
        let answered = self
            .awaiting
            .take()
            .ok_or(TransportError::UnexpectedAnswer)?;
        let next = if std::mem::take(&mut self.dirty) {
            self.request()
        } else {
            NegotiationStep::Wait
        };
        Ok((answered, next))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: MT-RELAY-4
    #[test]
    fn one_offer_in_flight_and_changes_batched() {
        let mut n = Negotiation::new();
        assert!(matches!(
            n.handle_answer(),
            Err(TransportError::UnexpectedAnswer)
        ));
        assert_eq!(n.request(), NegotiationStep::Offer(1));
        assert_eq!(n.request(), NegotiationStep::Wait);
        assert_eq!(n.request(), NegotiationStep::Wait);
        assert_eq!(n.handle_answer().unwrap(), (1, NegotiationStep::Offer(2)));
        assert_eq!(n.awaiting(), Some(2));
        assert_eq!(n.handle_answer().unwrap(), (2, NegotiationStep::Wait));
        assert!(matches!(
            n.handle_answer(),
            Err(TransportError::UnexpectedAnswer)
        ));
        // A failed offer can be retried.
        assert_eq!(n.request(), NegotiationStep::Offer(3));
        n.abandon(3);
        assert_eq!(n.awaiting(), None);
        assert_eq!(n.request(), NegotiationStep::Offer(4));
    }
}
