//! Leases: locks in the store that expire, so a scheduled job never runs twice at once even across processes and
//! machines, and a crashed holder does not block it for ever.
//!
//! The lake keeps the current lease per name and changes it under its cross-process write lock. ClickHouse has no
//! compare-and-set, so there every claim is a row and [`current`] replays them in order: a claim made while another
//! holder's lease is live is void. Both contenders insert, wait for each other's rows to be visible (at least 300 ms,
//! and three times their own insert's time), replay, wait again and replay again, and agree on one winner. The
//! guarantee rests on a rival's insert landing within that window and on the contenders' clocks agreeing to well
//! under it; one scheduler per deployment (as docker-compose runs it) never depends on it.

use chrono::{DateTime, Utc};
use pulse_domain::Lease;

/// What [`crate::Store::try_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The lease is the caller's until `expires_at`.
    Acquired(Lease),
    /// Someone else holds it.
    HeldBy(Lease),
}

impl LeaseOutcome {
    pub fn acquired(&self) -> bool {
        matches!(self, LeaseOutcome::Acquired(_))
    }
}

/// Whether `lease` still binds others at `now`.
pub fn live(lease: &Lease, now: DateTime<Utc>) -> bool {
    lease.expires_at > now && !lease.holder_exited()
}

/// The lease in force after replaying `claims` (one name's rows, any order): sorted by (acquired_at, holder), a claim
/// by a different holder while the current lease is live at the claim's time is void; a release is a claim that
/// expires when it is made.
pub fn current(claims: &[Lease]) -> Option<Lease> {
    let mut sorted: Vec<&Lease> = claims.iter().collect();
    sorted.sort_by(|a, b| a.acquired_at.cmp(&b.acquired_at).then_with(|| a.holder.cmp(&b.holder)));
    let mut now: Option<Lease> = None;
    for claim in sorted {
        match &now {
            Some(held) if held.holder != claim.holder && live(held, claim.acquired_at) => {}
            _ => now = Some(claim.clone()),
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn claim(holder: &str, at: i64, until: i64) -> Lease {
        Lease {
            name: "digest".into(),
            holder: holder.into(),
            acquired_at: Utc.timestamp_opt(at, 0).unwrap(),
            expires_at: Utc.timestamp_opt(until, 0).unwrap(),
        }
    }

    #[test]
    fn the_first_live_claim_wins_and_later_ones_are_void() {
        let rows = [claim("b:1:x", 11, 70), claim("a:1:x", 10, 70), claim("c:1:x", 80, 140)];
        // b claimed while a's lease was live: void. c claimed after a's expired: c holds it.
        assert_eq!(current(&rows[..2]).unwrap().holder, "a:1:x");
        assert_eq!(current(&rows).unwrap().holder, "c:1:x");
    }

    #[test]
    fn a_release_lets_the_next_claim_in_and_renewals_extend() {
        let rows = [claim("a:1:x", 10, 70), claim("a:1:x", 30, 90), claim("a:1:x", 40, 40), claim("b:1:x", 41, 100)];
        assert_eq!(current(&rows[..2]).unwrap().expires_at.timestamp(), 90);
        assert_eq!(current(&rows).unwrap().holder, "b:1:x");
    }
}
