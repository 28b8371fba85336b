//! Sending a list's digest for a week, at most once per recipient.
//!
//! Each (list, week, recipient) has a delivery record in the tenant's journal (stream `delivery`): `pending` is
//! written (and acknowledged by the store) before the message goes to the mail server, `sent` or `failed` after. A
//! re-run skips what was sent, retries what the server deferred once its backoff has passed ([`next_try`]: until
//! the list's next weekly digest is due, or `[digest] max_attempts` when set; a permanent refusal is not retried),
//! and never re-sends a delivery that was interrupted between `pending` and its
//! outcome — the server may have taken it — unless the operator says so (`pulse digest send --resend-interrupted`).
//! A send whose message went but whose reply was lost (the line dropped, the wait timed out) is `interrupted` the
//! same way. The daemon's job and a manual send take the same per-list lease, so only one sends at a time.
//! One recipient's failure does not hold up the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use pulse_config::Config;
use pulse_domain::StateEvent;
use pulse_store::Store;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::digest::{self, Links};
use crate::mail::{self, Mailer, SendError};
use pulse_app::error::{AppError, AppResult};
use pulse_app::subscriptions;

pub const STREAM: &str = "delivery";

/// Stands for the recipient's own unsubscribe link in a digest rendered once for the whole list.
pub(crate) const UNSUBSCRIBE_PLACEHOLDER: &str = "https://unsubscribe.invalid/placeholder";

/// One step of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// `pending`, `sent`, `failed` (will be retried), `gave_up`.
    pub state: String,
    pub attempt: u32,
    pub message_id: String,
    /// The server's reply, or what went wrong.
    pub detail: String,
    /// When a failed delivery may be tried again.
    pub retry_at: Option<DateTime<Utc>>,
}

/// What sending a list's week did, recipient by recipient.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListOutcome {
    pub list: String,
    pub week_end: Option<NaiveDate>,
    pub sent: Vec<String>,
    pub already_sent: Vec<String>,
    /// Failed this time or before; retried after the time given.
    pub waiting: Vec<(String, DateTime<Utc>, String)>,
    /// Refused for good, or out of attempts.
    pub gave_up: Vec<(String, String)>,
    /// `pending` with no outcome: a run stopped mid-send. Not re-sent without the operator.
    pub interrupted: Vec<String>,
    /// No figures for the week: nothing sent.
    pub no_data: bool,
    /// Some pages lack days of the week and incomplete weeks were not allowed: nothing sent yet.
    pub incomplete: bool,
    /// Stopped early (shutdown) before these.
    pub not_reached: Vec<String>,
}

impl ListOutcome {
    pub fn summary(&self) -> String {
        if self.no_data {
            return format!("list {}: no figures for the week yet, nothing sent", self.list);
        }
        if self.incomplete {
            return format!(
                "list {}: the week is not complete in the data yet (some pages lack days; the daily ingest and pipelines fill them), nothing sent",
                self.list
            );
        }
        let mut s = format!(
            "list {} week ending {}: {} sent, {} sent before",
            self.list,
            self.week_end.map(|d| d.to_string()).unwrap_or_default(),
            self.sent.len(),
            self.already_sent.len()
        );
        for (r, at, why) in &self.waiting {
            s.push_str(&format!("; {r} failed ({why}), retry after {}", at.format("%Y-%m-%d %H:%M UTC")));
        }
        for (r, why) in &self.gave_up {
            s.push_str(&format!("; {r} given up: {why}"));
        }
        for r in &self.interrupted {
            s.push_str(&format!(
                "; {r} was interrupted mid-send (it may have arrived): not re-sent; `pulse digest send --list {} --week {} --resend-interrupted` sends it",
                self.list,
                self.week_end.map(|d| d.to_string()).unwrap_or_default()
            ));
        }
        if !self.not_reached.is_empty() {
            s.push_str(&format!("; stopped before {} recipient(s), sent on the next run", self.not_reached.len()));
        }
        s
    }

    /// Whether anything is left to do or went wrong.
    pub fn clean(&self) -> bool {
        self.waiting.is_empty() && self.gave_up.is_empty() && self.interrupted.is_empty() && self.not_reached.is_empty()
    }
}

fn key(list: &str, week_end: NaiveDate, recipient: &str) -> String {
    format!("{list}|{week_end}|{}", recipient.to_ascii_lowercase())
}

/// The left-hand side of a Message-ID stable for one (list, week, recipient), without the address in it (the sender's
/// domain is added on the right).
fn message_id(list: &str, week_end: NaiveDate, recipient: &str) -> String {
    let h = sha2::Sha256::digest(recipient.to_ascii_lowercase().as_bytes());
    format!("digest.{list}.{week_end}.{}", hex::encode(&h[..8]))
}

/// Every delivery's steps for `list` and `week_end`, by recipient address (lower case).
pub async fn history<S: Store>(
    store: &S,
    config: &Config,
    list: &str,
    week_end: NaiveDate,
) -> AppResult<BTreeMap<String, Vec<Step>>> {
    let sub = subscriptions::configured(config, list)?;
    let scope = config.operator_access().scope(sub.tenant.as_str())?;
    let prefix = format!("{list}|{week_end}|");
    let mut out: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    for e in store.read_state(&scope, STREAM).await? {
        if let Some(r) = e.key.strip_prefix(&prefix)
            && let Ok(step) = serde_json::from_str::<Step>(&e.body)
        {
            out.entry(r.to_owned()).or_default().push(step);
        }
    }
    Ok(out)
}

/// Which digest to send.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub list: String,
    /// The Sunday ending the week.
    pub week_end: NaiveDate,
    /// Decides which failed deliveries are due a retry (the daemon's clock).
    pub now: DateTime<Utc>,
    /// Send again to recipients whose delivery was interrupted mid-send (they may get it twice).
    pub resend_interrupted: bool,
    /// Send even when some pages lack days of the week (the digest says so). Otherwise such a week is not sent yet.
    pub allow_incomplete: bool,
    /// The daemon's sends: from this time the week's digest is no longer owed (the next week's is due,
    /// [`next_digest_due`]), so a recipient still deferred is given up and no retry is set after it. `None` for an
    /// operator's send of a chosen week, which tries everyone not served and leaves retries to the operator.
    pub superseded: Option<DateTime<Utc>>,
}

/// Longest wait between two tries of a deferred recipient.
pub const RETRY_CAP_HOURS: i64 = 6;

/// When the list's next weekly digest is due after the one for the week ending `week_end`: a tick sends the last
/// whole week before its local day, so the first tick from local midnight of `week_end + 8` (in the schedule's zone)
/// is the first to send the next week. Without a usable schedule, that midnight in UTC.
pub fn next_digest_due(config: &pulse_config::Config, week_end: NaiveDate) -> DateTime<Utc> {
    use chrono::TimeZone;
    let midnight = (week_end + Duration::days(8)).and_hms_opt(0, 0, 0).unwrap_or_default();
    let tz = config.scheduler.tz();
    let local_midnight = tz.from_local_datetime(&midnight).earliest().map(|t| t.with_timezone(&Utc));
    let fallback = local_midnight.unwrap_or_else(|| midnight.and_utc());
    let Ok(schedule) = pulse_config::schedule::Schedule::new(&config.scheduler.digest, tz) else {
        return fallback;
    };
    schedule.next_after(fallback - Duration::seconds(1)).unwrap_or(fallback)
}

/// When a recipient the server deferred on its `attempt`-th try is tried again, or `None` to give it up: waits of
/// `retry_after_minutes` doubling, at most [`RETRY_CAP_HOURS`], while the next try comes before `superseded` (when
/// the list's next weekly digest is due, [`next_digest_due`]) and within `max_attempts` when that is set. A server
/// that says "later" is never taken for a refusal while the week's digest is still the latest.
pub fn next_try(
    attempt: u32,
    digest: &pulse_config::DigestConfig,
    now: DateTime<Utc>,
    superseded: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if digest.max_attempts.is_some_and(|m| attempt >= m.max(1)) {
        return None;
    }
    let doubled = i64::from(digest.retry_after_minutes.max(1)) << attempt.saturating_sub(1).min(20);
    let retry_at = now + Duration::minutes(doubled.min(RETRY_CAP_HOURS * 60));
    (retry_at < superseded).then_some(retry_at)
}

/// What `pulse digest send` calls the process sending by hand, as lease holders are named (`host:pid:id`), so a
/// daemon can tell whether it is still alive.
pub fn manual_holder() -> String {
    format!("{}:{}:manual-{}", pulse_domain::this_host(), std::process::id(), uuid::Uuid::new_v4().simple())
}

/// Sends the list's digest by hand under the same per-list lease the scheduler's digest job takes (`digest:<list>`),
/// renewed while it sends: while a daemon (or another manual send) holds it, nothing is sent and the error names the
/// holder and until when, so no recipient gets two copies from two senders.
pub async fn send_list_leased<S: Store + Clone + 'static>(
    store: &S,
    config: &Config,
    mailer: &Mailer,
    request: &SendRequest,
    holder: &str,
) -> AppResult<ListOutcome> {
    let sub = subscriptions::configured(config, &request.list)?;
    let scope = config.operator_access().write_scope(sub.tenant.as_str())?;
    let job = format!("digest:{}", request.list);
    let ttl = std::time::Duration::from_secs(u64::from(config.scheduler.lease_minutes.max(1)) * 60);
    let asked = tokio::time::Instant::now();
    if let pulse_store::LeaseOutcome::HeldBy(l) = store.try_lease(&scope, &job, holder, ttl).await? {
        return Err(AppError::new(
            pulse_app::error::ErrorKind::Unavailable,
            format!(
                "list `{}` is being sent by {} (its lease runs until {}); nothing was sent",
                request.list,
                l.holder,
                l.expires_at.format("%H:%M:%S UTC")
            ),
        )
        .with_hint(
            "wait for that run to finish (`pulse status` shows it), then send again: recipients it served are skipped",
        ));
    }
    let halt = Arc::new(AtomicBool::new(false));
    let renew = keep_lease(store, &scope, &job, holder, ttl, asked, halt.clone());
    let result = send_list(store, config, mailer, request, &halt).await;
    renew.abort();
    store.release_lease(&scope, &job, holder).await?;
    result
}

/// Renews `holder`'s lease on `job`, taken by a call made at `asked`, while the returned task runs (as often as the
/// store asks,
/// [`Store::lease_trust`]), and fences the sender: if the lease is found held by another (it lapsed, say while this
/// process was paused) or is not confirmed within the time the store trusts a confirmation for, `halt` is set, so the
/// sender stops before its next recipient instead of sending beside the new holder. A failed renewal is tried again
/// sooner than the usual interval, while there is time.
pub fn keep_lease<S: Store + Clone + 'static>(
    store: &S,
    scope: &pulse_config::WriteScope,
    job: &str,
    holder: &str,
    ttl: std::time::Duration,
    asked: tokio::time::Instant,
    halt: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (store, scope, job, holder) = (store.clone(), scope.clone(), job.to_owned(), holder.to_owned());
    tokio::spawn(async move {
        let (every, trust) = store.lease_trust(ttl);
        // The lease was confirmed when it was asked for (`asked`, just before the call that took it), not now.
        let mut confirmed = asked;
        let mut wait = (asked + every).saturating_duration_since(tokio::time::Instant::now());
        loop {
            tokio::time::sleep(wait).await;
            let deadline = confirmed + trust;
            let asked = tokio::time::Instant::now();
            match tokio::time::timeout_at(deadline, store.try_lease(&scope, &job, &holder, ttl)).await {
                Ok(Ok(pulse_store::LeaseOutcome::Acquired(_))) => {
                    // Confirmed as of when it was asked, not when the answer came.
                    confirmed = asked;
                    wait = every;
                }
                Ok(Ok(pulse_store::LeaseOutcome::HeldBy(l))) => {
                    tracing::error!(job = %job, holder = %l.holder, "the lease was lost to another process; stopping before the next recipient");
                    halt.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(Err(e)) if tokio::time::Instant::now() + every / 4 < deadline => {
                    tracing::warn!(job = %job, error = %e, "renewing the lease failed; trying again");
                    wait = every / 4;
                }
                Ok(Err(e)) => {
                    tracing::error!(job = %job, error = %e, "the lease could not be renewed before it may lapse; stopping before the next recipient");
                    halt.store(true, Ordering::SeqCst);
                    return;
                }
                Err(_) => {
                    tracing::error!(job = %job, "the lease was not confirmed in time (it may lapse); stopping before the next recipient");
                    halt.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    })
}

/// Sends the list's digest for the week to every current recipient not yet served; `stop` is checked between
/// recipients. The caller holds the list's lease (the scheduler's job, or [`send_list_leased`]).
pub async fn send_list<S: Store>(
    store: &S,
    config: &Config,
    mailer: &Mailer,
    request: &SendRequest,
    stop: &AtomicBool,
) -> AppResult<ListOutcome> {
    let SendRequest { list, week_end, now, resend_interrupted, allow_incomplete, superseded } = request.clone();
    let list = list.as_str();
    let sub = subscriptions::configured(config, list)?;
    let scope = config.operator_access().write_scope(sub.tenant.as_str())?;
    let members = subscriptions::list(store, config, list).await?;
    let mut outcome = ListOutcome { list: list.to_owned(), week_end: Some(week_end), ..ListOutcome::default() };
    let digest = digest::build(store, config, sub.tenant.as_str(), week_end).await?;
    if !digest.has_data() {
        outcome.no_data = true;
        return Ok(outcome);
    }
    if !digest.complete && !allow_incomplete {
        outcome.incomplete = true;
        return Ok(outcome);
    }
    // Checked before anything is sent: without a link secret there is no unsubscribe link.
    subscriptions::token(config, list, "check@example.invalid")?;
    let links = Links {
        dashboard: config.digest.dashboard_url.trim_end_matches('/').to_owned(),
        unsubscribe: Some(UNSUBSCRIBE_PLACEHOLDER.into()),
    };
    let rendered = digest::render(&digest, &links)?;
    let history = history(store, config, list, week_end).await?;
    for (i, recipient) in members.recipients.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            outcome.not_reached = members.recipients[i..].to_vec();
            break;
        }
        let steps = history.get(&recipient.to_ascii_lowercase()).cloned().unwrap_or_default();
        let attempts = steps.iter().filter(|s| s.state == "pending").count() as u32;
        let id = message_id(list, week_end, recipient);
        let record = |state: &str, attempt: u32, detail: String, retry_at: Option<DateTime<Utc>>| StateEvent {
            id: uuid::Uuid::new_v4().to_string(),
            stream: STREAM.into(),
            key: key(list, week_end, recipient),
            at: Utc::now(),
            body: serde_json::to_string(&Step {
                state: state.into(),
                attempt,
                message_id: id.clone(),
                detail,
                retry_at,
            })
            .unwrap_or_default(),
        };
        match steps.last() {
            Some(s) if s.state == "sent" => {
                outcome.already_sent.push(recipient.clone());
                continue;
            }
            Some(s) if s.state == "gave_up" => {
                outcome.gave_up.push((recipient.clone(), s.detail.clone()));
                continue;
            }
            Some(s) if (s.state == "pending" || s.state == "interrupted") && !resend_interrupted => {
                outcome.interrupted.push(recipient.clone());
                continue;
            }
            Some(s) if s.state == "failed" && superseded.is_some_and(|t| now >= t) => {
                // The next week's digest is due: this week's is no longer owed to a recipient still deferred.
                let why =
                    format!("{} (still deferred when the next week's digest was due: not sent this week)", s.detail);
                store.append_state(&scope, &[record("gave_up", attempts, why.clone(), None)]).await?;
                outcome.gave_up.push((recipient.clone(), why));
                continue;
            }
            Some(s) if s.state == "failed" && s.retry_at.is_some_and(|t| t > now) => {
                outcome.waiting.push((recipient.clone(), s.retry_at.unwrap_or(now), s.detail.clone()));
                continue;
            }
            _ => {}
        }
        let attempt = attempts + 1;
        let unsubscribe = subscriptions::unsubscribe_link(config, list, recipient)?;
        let mut mine = rendered.clone();
        mine.text = mine.text.replace(UNSUBSCRIBE_PLACEHOLDER, &unsubscribe);
        mine.html = mine.html.replace(UNSUBSCRIBE_PLACEHOLDER, &pulse_app::chart::escape(&unsubscribe));
        let headers = mail::ListHeaders {
            message_id: id.clone(),
            list: Some(list.to_owned()),
            unsubscribe: Some(unsubscribe.clone()),
        };
        let message = match mail::message(&mine, &mailer.from, recipient, &headers) {
            Ok(m) => m,
            Err(e) => {
                store.append_state(&scope, &[record("gave_up", attempt, e.message.clone(), None)]).await?;
                outcome.gave_up.push((recipient.clone(), e.message));
                continue;
            }
        };
        // Read again just before the attempt: had another sender served this recipient since this run began (two
        // senders can only overlap if a lease was lost, and the fence above stops this one soon after), skip it.
        let fresh = self::history(store, config, list, week_end).await?;
        let fresh = fresh.get(&recipient.to_ascii_lowercase()).map_or(0, Vec::len);
        if fresh != steps.len() {
            outcome.already_sent.push(recipient.clone());
            tracing::warn!(list, %week_end, "a recipient's delivery changed under this run; not sent again");
            continue;
        }
        // The lease may have been found lost while the history was read: stop before anything leaves.
        if stop.load(Ordering::SeqCst) {
            outcome.not_reached = members.recipients[i..].to_vec();
            break;
        }
        // The record of the attempt is durable before the message leaves.
        store.append_state(&scope, &[record("pending", attempt, String::new(), None)]).await?;
        match mailer.send(message).await {
            Ok(reply) => {
                store.append_state(&scope, &[record("sent", attempt, reply, None)]).await?;
                tracing::info!(list, %week_end, attempt, "digest sent");
                metrics::counter!("pulse_digest_deliveries_total", "outcome" => "sent").increment(1);
                outcome.sent.push(recipient.clone());
            }
            Err(SendError::Transient(why))
                if let Some(retry_at) =
                    next_try(attempt, &config.digest, now, superseded.unwrap_or(DateTime::<Utc>::MAX_UTC)) =>
            {
                store.append_state(&scope, &[record("failed", attempt, why.clone(), Some(retry_at))]).await?;
                tracing::warn!(list, %week_end, attempt, error = %why, "digest not sent; will retry");
                metrics::counter!("pulse_digest_deliveries_total", "outcome" => "deferred").increment(1);
                outcome.waiting.push((recipient.clone(), retry_at, why));
            }
            Err(SendError::Interrupted(why)) => {
                // The message went; whether it arrived is unknown. At most once: never retried by itself.
                store.append_state(&scope, &[record("interrupted", attempt, why.clone(), None)]).await?;
                tracing::warn!(list, %week_end, attempt, error = %why, "digest reply lost; not re-sent");
                metrics::counter!("pulse_digest_deliveries_total", "outcome" => "unknown").increment(1);
                outcome.interrupted.push(recipient.clone());
            }
            Err(e) => {
                let why = match &e {
                    SendError::Transient(w) => match config.digest.max_attempts {
                        Some(m) if attempt >= m => format!("{w} (deferred on all {attempt} attempts, max_attempts)"),
                        _ => format!(
                            "{w} (deferred on all {attempt} attempts, until the next week's digest was due: not sent \
                             this week)"
                        ),
                    },
                    SendError::Permanent(w) => w.clone(),
                    SendError::Interrupted(w) => w.clone(),
                };
                store.append_state(&scope, &[record("gave_up", attempt, why.clone(), None)]).await?;
                tracing::warn!(list, %week_end, attempt, error = %why, "digest given up for a recipient");
                metrics::counter!("pulse_digest_deliveries_total", "outcome" => "given_up").increment(1);
                outcome.gave_up.push((recipient.clone(), why));
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn digest(max_attempts: Option<u32>) -> pulse_config::DigestConfig {
        pulse_config::DigestConfig { max_attempts, retry_after_minutes: 5, ..Default::default() }
    }

    fn config(schedule: &str, tz: &str) -> pulse_config::Config {
        let text = format!(
            "[store]\nlake_dir = \"lake\"\n\n[scheduler]\ndigest = \"{schedule}\"\ntimezone = \"{tz}\"\n\n\
             [[tenant]]\nid = \"stoke\"\nname = \"Stoke\"\n"
        );
        pulse_config::parse(&text, std::path::Path::new("pulse.toml")).unwrap()
    }

    /// The next week's digest is due at the first tick that sends the next week (ticks send the last whole week
    /// before their local day): London Mondays, Sydney Mondays (east of UTC), Thursdays, and Sunday evenings (a
    /// Sunday tick sends the week that ended the Sunday before).
    #[test]
    fn the_next_digest_is_due_at_the_first_tick_of_the_next_week() {
        let week_end = NaiveDate::from_ymd_opt(2018, 3, 25).unwrap();
        let london = next_digest_due(&config("0 8 * * MON", "Europe/London"), week_end);
        assert_eq!(london, Utc.with_ymd_and_hms(2018, 4, 2, 7, 0, 0).unwrap());
        let sydney = next_digest_due(&config("0 8 * * MON", "Australia/Sydney"), week_end);
        assert_eq!(sydney, Utc.with_ymd_and_hms(2018, 4, 1, 22, 0, 0).unwrap());
        let thursday = next_digest_due(&config("30 9 * * THU", "Europe/London"), week_end);
        assert_eq!(thursday, Utc.with_ymd_and_hms(2018, 4, 5, 8, 30, 0).unwrap());
        // Sunday 1 April's tick sends the week ending 25 March; Sunday 8 April's sends the next.
        let sunday = next_digest_due(&config("0 20 * * SUN", "Europe/London"), week_end);
        assert_eq!(sunday, Utc.with_ymd_and_hms(2018, 4, 8, 19, 0, 0).unwrap());
        let new_york = next_digest_due(&config("0 20 * * SUN", "America/New_York"), week_end);
        assert_eq!(new_york, Utc.with_ymd_and_hms(2018, 4, 9, 0, 0, 0).unwrap());
        // Each week's own tick comes before its "next digest" (nothing is given up on its first try).
        for (schedule, tz) in [
            ("0 8 * * MON", "Europe/London"),
            ("0 20 * * SUN", "America/New_York"),
            ("0 8 * * MON", "Australia/Sydney"),
        ] {
            let c = config(schedule, tz);
            let s = pulse_config::schedule::Schedule::new(schedule, c.scheduler.tz()).unwrap();
            let mut tick = Utc.with_ymd_and_hms(2018, 3, 20, 0, 0, 0).unwrap();
            for _ in 0..6 {
                tick = s.next_after(tick).unwrap();
                let local_day = tick.with_timezone(&c.scheduler.tz()).date_naive();
                let week = crate::digest::last_whole_week(local_day);
                let due = next_digest_due(&c, week);
                // A week later, give or take a clock change.
                assert!(
                    tick < due && due <= tick + Duration::days(7) + Duration::hours(1),
                    "{schedule} {tz}: tick {tick} week {week} due {due}"
                );
            }
        }
    }

    /// A server that keeps saying "later" is tried again, never taken for a refusal, until the next week's digest is
    /// due, however many attempts that takes; `max_attempts`, when set, gives up sooner.
    #[test]
    fn a_deferred_recipient_stays_owed_until_the_next_weeks_digest() {
        let due = Utc.with_ymd_and_hms(2018, 3, 26, 7, 0, 0).unwrap();
        let superseded = Utc.with_ymd_and_hms(2018, 4, 2, 7, 0, 0).unwrap();
        let (mut now, mut attempt, mut waits) = (due, 1, vec![]);
        while let Some(next) = next_try(attempt, &digest(None), now, superseded) {
            waits.push((next - now).num_minutes());
            now = next;
            attempt += 1;
        }
        // 5, 10, 20, ... doubling, then every 6 hours, up to the next digest.
        assert_eq!(&waits[..7], &[5, 10, 20, 40, 80, 160, 320]);
        assert!(waits[7..].iter().all(|w| *w == 360), "{waits:?}");
        assert!(attempt > 20, "tried {attempt} times");
        assert!(now < superseded && now + Duration::hours(6) >= superseded, "last try {now}");
        // The old default of 5 attempts would have given up after 155 minutes, an hour-long outage included.
        assert!(next_try(5, &digest(None), due + Duration::minutes(155), superseded).is_some());
        // An explicit cap is honoured.
        assert_eq!(next_try(3, &digest(Some(3)), due, superseded), None);
        assert!(next_try(2, &digest(Some(3)), due, superseded).is_some());
        // A retry that would fall after the next digest is due is not scheduled.
        assert_eq!(next_try(1, &digest(None), superseded - Duration::minutes(2), superseded), None);
    }
}
