//! Leases: locks in the store that expire, so a scheduled job never runs twice at once even across processes and
//! machines, and a crashed holder does not block it for ever.
//!
//! The lake keeps the current lease per name and changes it under its cross-process write lock. ClickHouse has no
//! compare-and-set, so there every claim is a row and [`current`] replays them in order: a claim made while another
//! holder's lease is unexpired is void. Whether a claim is void is decided by the rows alone (their times), so it is
//! decided once: a void claim never becomes the lease later, whatever happens to the processes. Taking over from a
//! holder whose process is gone (judged when the claim is made, on the holder's machine) is written as two rows: a
//! release in the dead holder's name, then the claim ([`takeover`]). Both contenders insert, wait for each other's rows to be visible (at least 300 ms,
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

/// Who holds a lease now, as far as the store can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseView {
    /// The store cannot tell a live holder on another host from a dead one (leases kept in the store itself).
    Unknown,
    /// Nobody holds it.
    Free,
    /// This holder does, and is alive (its coordination-service session is).
    Held(Lease),
}

/// Whether `lease` still binds others at `now`, judged now: unexpired, and its holder's process not known to be gone.
pub fn live(lease: &Lease, now: DateTime<Utc>) -> bool {
    lease.expires_at > now && !lease.holder_exited()
}

/// The lease in force after replaying `claims` (one name's rows, any order): sorted by (acquired_at, holder), a claim
/// by a different holder while the current lease is unexpired at the claim's time is void; a release is a claim that
/// expires when it is made. Only the rows' times count (never whether a process is alive when they are replayed), so
/// the answer for a set of rows never changes.
pub fn current(claims: &[Lease]) -> Option<Lease> {
    let mut sorted: Vec<&Lease> = claims.iter().collect();
    sorted.sort_by(|a, b| a.acquired_at.cmp(&b.acquired_at).then_with(|| a.holder.cmp(&b.holder)));
    let mut now: Option<Lease> = None;
    for claim in sorted {
        match &now {
            Some(held) if held.holder != claim.holder && held.expires_at > claim.acquired_at => {}
            _ => now = Some(claim.clone()),
        }
    }
    now
}

/// The rows that take `held` over for `holder` at `now` when `held`'s process is gone: a release in the dead
/// holder's name (it replays as that holder's own release), then `holder`'s claim a microsecond later. If another
/// holder took it over first, both rows are void on replay.
pub fn takeover(held: &Lease, holder: &str, now: DateTime<Utc>, ttl: chrono::Duration) -> [Lease; 2] {
    let release = Lease { name: held.name.clone(), holder: held.holder.clone(), acquired_at: now, expires_at: now };
    let at = now + chrono::Duration::microseconds(1);
    [release, Lease { name: held.name.clone(), holder: holder.to_owned(), acquired_at: at, expires_at: at + ttl }]
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
    fn a_claim_void_when_made_stays_void_after_the_holder_exits() {
        // `dead` names a process on this machine that does not exist: its lease no longer binds a new claimant, but
        // the claim `b` made while it was held was void then and is void for ever.
        let dead = format!("{}:4000000000:x", pulse_domain::this_host());
        let rows = [claim(&dead, 10, 70), claim("b:1:x", 11, 70)];
        assert!(rows[0].holder_exited());
        assert_eq!(current(&rows).unwrap().holder, dead);
        // Taken over properly: a release in the dead holder's name, then the claim.
        let [release, mine] =
            takeover(&rows[0], "c:1:x", Utc.timestamp_opt(20, 0).unwrap(), chrono::Duration::seconds(60));
        let all = [rows[0].clone(), rows[1].clone(), release.clone(), mine.clone()];
        assert_eq!(current(&all).unwrap().holder, "c:1:x");
        // A second taker-over that came later is void: `c` holds it.
        let [r2, m2] = takeover(&rows[0], "d:1:x", Utc.timestamp_opt(21, 0).unwrap(), chrono::Duration::seconds(60));
        assert_eq!(current(&[all.to_vec(), vec![r2, m2]].concat()).unwrap().holder, "c:1:x");
    }

    #[test]
    fn a_release_lets_the_next_claim_in_and_renewals_extend() {
        let rows = [claim("a:1:x", 10, 70), claim("a:1:x", 30, 90), claim("a:1:x", 40, 40), claim("b:1:x", 41, 100)];
        assert_eq!(current(&rows[..2]).unwrap().expires_at.timestamp(), 90);
        assert_eq!(current(&rows).unwrap().holder, "b:1:x");
    }
}
