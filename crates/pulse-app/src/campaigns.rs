//! Campaigns managed through the API and dashboard, and pre-registered: a campaign registered before its cutoff (the
//! start of the day before its first day, midnight Pacific: posts from that day already count towards it) is stored
//! with its plan (what it could detect, from the history before it), so its analysis was fixed before any of its
//! posts were seen; one registered later is labelled post hoc on the dashboard and in the digest.
//!
//! Registrations and withdrawals are events in the tenant's journal (stream `campaign`), with who and when: nothing is
//! edited or deleted. Changes to a tenant's campaigns are written one at a time (a lease in the store around the
//! check, the write and the read-back), so a name is registered once: a second registration, even at the same moment,
//! is refused. A campaign can be withdrawn only before its cutoff (afterwards it stays computed, so a disappointing
//! one cannot be dropped quietly); withdrawn ones stay listed. Config campaigns (`[[campaign]]`) are listed too, as
//! configured (their definition time is not recorded); a registered campaign whose name the config later also uses
//! stays on record, marked as shadowed, and the config's is computed.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use pulse_config::{Access, CampaignConfig, Config, TenantScope, WriteScope};
use pulse_domain::StateEvent;
use pulse_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult, ErrorKind};
use crate::plan;

pub const STREAM: &str = "campaign";

/// The longest name a registered campaign may have (it is shown in reports and headings).
pub const MAX_NAME: usize = 80;
/// The longest hashtag, link or text a campaign matches posts by, and the most post ids it lists.
pub const MAX_MATCHER: usize = 200;
pub const MAX_POSTS: usize = 500;
/// Registered campaigns not withdrawn, per tenant (each is computed by every jobs run).
pub const MAX_ACTIVE: usize = 50;
/// How far ahead a campaign may be registered.
pub const MAX_YEARS_AHEAD: i32 = 2;
/// The journal lease that writes a tenant's campaign changes one at a time.
const LEASE: &str = "campaign-registry";

/// What a registration asks for: the campaign, and for the plan stored with it, the share of pages expected to take
/// part and the metric (and optionally the effect it is meant to have).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub tenant: String,
    pub name: String,
    /// First day (Pacific time, as Meta's days), YYYY-MM-DD.
    #[schema(value_type = String)]
    pub start: String,
    pub days: u32,
    pub hashtag: Option<String>,
    pub link: Option<String>,
    pub text: Option<String>,
    #[serde(default)]
    pub posts: Vec<String>,
    /// video, photo, link or status.
    pub post_type: Option<String>,
    /// For the plan: the share of the tenant's pages expected to take part (default 0.5).
    pub share: Option<f64>,
    /// For the plan: views (default), reach, engagements or video_views.
    pub metric: Option<String>,
    /// For the plan: the effect the campaign is meant to have over its pages and days.
    pub target: Option<f64>,
}

/// A journal event of the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    /// `register` or `withdraw`.
    action: String,
    by: String,
    #[serde(default)]
    campaign: Option<CampaignConfig>,
    /// The plan stored at registration (the plan's JSON), or why there is none.
    #[serde(default)]
    plan: Option<serde_json::Value>,
    #[serde(default)]
    plan_note: Option<String>,
}

/// A campaign as listed: its definition, where it comes from and whether its analysis was fixed before its start.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Managed {
    pub tenant: String,
    pub name: String,
    #[schema(value_type = String)]
    pub start: NaiveDate,
    pub days: u32,
    /// How its posts are recognised, in words (`hashtag #StrokeAware`).
    pub matches: String,
    pub post_type: Option<String>,
    /// `config` or `registered`.
    pub source: String,
    /// `pre-registered` (registered before its [`cutoff`]), `post hoc` (at or after it) or `configured` (a config
    /// campaign: when it was defined is not recorded).
    pub registration: String,
    pub registered_at: Option<DateTime<Utc>>,
    pub registered_by: Option<String>,
    /// The plan stored at registration (the same JSON as `GET /api/v1/campaigns/plan`).
    #[schema(value_type = Option<Object>)]
    pub plan: Option<serde_json::Value>,
    /// Why no plan was stored, when none was.
    pub plan_note: Option<String>,
    pub withdrawn_at: Option<DateTime<Utc>>,
    pub withdrawn_by: Option<String>,
    /// The journal event that registered it.
    pub registration_id: Option<String>,
    /// A config campaign of the same name was added after it was registered: the config's is computed, this one is
    /// kept on record only.
    pub shadowed: bool,
}

impl Managed {
    /// Computed by the next jobs run.
    pub fn is_active(&self) -> bool {
        self.withdrawn_at.is_none() && !self.shadowed
    }
}

pub const PRE_REGISTERED: &str = "pre-registered";
pub const POST_HOC: &str = "post hoc";
pub const CONFIGURED: &str = "configured";

/// The last moment a campaign can be pre-registered: the start of the day before its first day (posts created that day
/// count towards it), at midnight Pacific time, the day boundary of Meta's daily figures.
pub fn cutoff(start: NaiveDate) -> DateTime<Utc> {
    start_instant(start - chrono::Duration::days(1))
}

/// The first moment of a day in Meta's days: midnight Pacific time.
pub fn start_instant(start: NaiveDate) -> DateTime<Utc> {
    let midnight = start.and_hms_opt(0, 0, 0).unwrap_or_default();
    chrono_tz::America::Los_Angeles
        .from_local_datetime(&midnight)
        .earliest()
        .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc))
}

fn matches_words(c: &CampaignConfig) -> String {
    if let Some(h) = &c.hashtag {
        format!("hashtag {h}")
    } else if let Some(l) = &c.link {
        format!("link {l}")
    } else if let Some(t) = &c.text {
        format!("text \"{t}\"")
    } else {
        format!("{} listed posts", c.posts.len())
    }
}

fn managed(tenant: &str, c: &CampaignConfig, source: &str, registration: &str) -> Managed {
    Managed {
        tenant: tenant.to_owned(),
        name: c.name.clone(),
        start: c.start,
        days: c.days,
        matches: matches_words(c),
        post_type: c.post_type.clone(),
        source: source.to_owned(),
        registration: registration.to_owned(),
        registered_at: None,
        registered_by: None,
        plan: None,
        plan_note: None,
        withdrawn_at: None,
        withdrawn_by: None,
        registration_id: None,
        shadowed: false,
    }
}

/// Every campaign of the tenant: the config's, then the registered ones in the order registered (withdrawn ones
/// included, marked). A journal event that cannot be read is skipped (its raw text stays in the journal).
pub async fn list<S: Store>(
    store: &S,
    config: &Config,
    scope: &TenantScope,
) -> AppResult<Vec<(Managed, CampaignConfig)>> {
    let tenant = scope.as_str();
    let mut out: Vec<(Managed, CampaignConfig)> = config
        .campaigns
        .iter()
        .filter(|c| c.tenants.is_empty() || c.tenants.contains(scope.tenant()))
        .map(|c| (managed(tenant, c, "config", CONFIGURED), c.clone()))
        .collect();
    let configured = out.len();
    for e in store.read_state(scope, STREAM).await? {
        let event = match serde_json::from_str::<Event>(&e.body) {
            Ok(event) => event,
            Err(err) => {
                // Kept in the journal as written; a newer version's event, or a damaged one, is said, not guessed at.
                tracing::warn!(tenant, event = %e.id, key = %e.key, error = %err, "a campaign journal event was not read");
                continue;
            }
        };
        match (event.action.as_str(), event.campaign) {
            ("register", Some(c)) => {
                // The first registration of a name wins (registrations are written one at a time, each checking the
                // name first, so a second is only here if written by hand or by an older version).
                if out[configured..].iter().any(|(m, _)| m.name == c.name) {
                    continue;
                }
                let registration = if e.at < cutoff(c.start) { PRE_REGISTERED } else { POST_HOC };
                let mut m = managed(tenant, &c, "registered", registration);
                m.registered_at = Some(e.at);
                m.registered_by = Some(event.by);
                m.plan = event.plan;
                m.plan_note = event.plan_note;
                m.registration_id = Some(e.id);
                m.shadowed = out[..configured].iter().any(|(k, _)| k.name == c.name);
                out.push((m, c));
            }
            ("withdraw", _) => {
                if let Some((m, _)) =
                    out[configured..].iter_mut().find(|(m, _)| m.name == e.key && m.withdrawn_at.is_none())
                {
                    m.withdrawn_at = Some(e.at);
                    m.withdrawn_by = Some(event.by);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The campaigns a tenant's reports compute: the config's and the registered ones not withdrawn.
pub async fn effective<S: Store>(store: &S, config: &Config, scope: &TenantScope) -> AppResult<Vec<CampaignConfig>> {
    Ok(list(store, config, scope).await?.into_iter().filter(|(m, _)| m.is_active()).map(|(_, c)| c).collect())
}

/// Every campaign of each tenant `access` may read, or of the one named.
pub async fn listed<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    tenant: Option<&str>,
) -> AppResult<Vec<Managed>> {
    let scopes = match tenant {
        Some(t) => vec![access.scope(t)?],
        None => access.scopes(),
    };
    let mut out = Vec::new();
    for scope in scopes {
        out.extend(list(store, config, &scope).await?.into_iter().map(|(m, _)| m));
    }
    Ok(out)
}

/// Registers a campaign for a tenant `access` may read (the surface checks the right to manage campaigns: admin keys,
/// the operator). Before its [`cutoff`] the plan is computed and stored with it (pre-registered); at or after the
/// cutoff it is recorded as post hoc, without a plan (one made then would be made with its posts in view).
pub async fn register<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    request: &RegisterRequest,
    by: &str,
    now: DateTime<Utc>,
) -> AppResult<Managed> {
    let bad = |field: &str, message: String| AppError::bad_request(message).at(field.to_owned());
    let scope = crate::tenant::resolve(access, Some(&request.tenant), "tenant", "name one of your tenants")?;
    let write: WriteScope = config.operator_access().write_scope(scope.as_str())?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(bad(
            "name",
            format!("a campaign's name is 1 to {MAX_NAME} characters, without control or invisible characters"),
        ));
    }
    let start = pulse_config::real_date("start", &request.start).map_err(|e| bad("start", e))?;
    let latest = now.date_naive().with_year(now.year() + MAX_YEARS_AHEAD).unwrap_or(now.date_naive());
    if start < pulse_pipelines::jobs::HISTORY_START || start > latest {
        return Err(bad(
            "start",
            format!(
                "start {start} must be from {} (Facebook's first day) to {latest} ({MAX_YEARS_AHEAD} years ahead)",
                pulse_pipelines::jobs::HISTORY_START
            ),
        ));
    }
    for (field, value) in [("hashtag", &request.hashtag), ("link", &request.link), ("text", &request.text)] {
        if value.as_ref().is_some_and(|v| v.chars().count() > MAX_MATCHER) {
            return Err(bad(field, format!("{field} is longer than {MAX_MATCHER} characters")));
        }
    }
    if request.posts.len() > MAX_POSTS || request.posts.iter().any(|p| p.trim().is_empty() || p.len() > 100) {
        return Err(bad("posts", format!("posts lists 1 to {MAX_POSTS} post ids, none empty")));
    }
    let campaign = CampaignConfig {
        name: name.to_owned(),
        start,
        days: request.days,
        hashtag: request.hashtag.clone(),
        link: request.link.clone(),
        text: request.text.clone(),
        posts: request.posts.clone(),
        post_type: request.post_type.clone(),
        tenants: vec![scope.tenant().clone()],
    };
    if let Some((field, problem)) = campaign.problems().into_iter().next() {
        return Err(bad(field, problem));
    }
    let plan_request = plan::PlanRequest {
        tenant: scope.to_string(),
        start,
        days: request.days,
        share: request.share.unwrap_or(0.5),
        metric: request.metric.clone().unwrap_or_else(|| "views".into()),
        target: request.target,
    };
    plan::check(&plan_request)?;
    let taken = |listed: &[(Managed, CampaignConfig)]| -> AppResult<()> {
        if listed.iter().any(|(m, _)| m.name == campaign.name) {
            return Err(AppError::new(ErrorKind::Conflict, format!("tenant {scope} already has a campaign `{name}`"))
                .at("name")
                .with_hint("a campaign's definition is kept as registered: register a new one under another name"));
        }
        if listed.iter().filter(|(m, _)| m.source == "registered" && m.is_active()).count() >= MAX_ACTIVE {
            return Err(AppError::new(
                ErrorKind::Conflict,
                format!("tenant {scope} has {MAX_ACTIVE} registered campaigns computed, the most it may have"),
            )
            .with_hint(
                "withdraw ones that have not started, or ask the operator to move long-lived ones to the config",
            ));
        }
        Ok(())
    };
    taken(&list(store, config, &scope).await?)?;
    // The plan, before the cutoff only (one made later would be made with the campaign's posts in view); a history
    // too short to plan from is recorded as the reason there is no plan.
    let (plan, plan_note) = if now < cutoff(start) {
        match plan::plan_on(store, config, access, &plan_request).await {
            Ok(answer) => (Some(plan::plan_json(&answer)), None),
            Err(e) if e.kind == ErrorKind::BadRequest => (None, Some(format!("no plan could be made: {}", e.message))),
            Err(e) => return Err(e),
        }
    } else {
        (None, Some("registered after its cutoff: a plan made now would be made with its posts in view".to_owned()))
    };
    let body = serde_json::to_string(&Event {
        action: "register".into(),
        by: by.to_owned(),
        campaign: Some(campaign.clone()),
        plan,
        plan_note,
    })
    .map_err(|e| AppError::from(anyhow::anyhow!("a campaign registration was not written: {e}")))?;
    let id = uuid::Uuid::new_v4().to_string();
    let listed = one_at_a_time(store, &write, async {
        // Checked again under the lease: another registration may have come in while the plan was made.
        taken(&list(store, config, &scope).await?)?;
        let event = StateEvent { id: id.clone(), stream: STREAM.into(), key: campaign.name.clone(), at: now, body };
        store.append_state(&write, &[event]).await?;
        list(store, config, &scope).await
    })
    .await?;
    listed
        .into_iter()
        .map(|(m, _)| m)
        .find(|m| m.registration_id.as_deref() == Some(id.as_str()))
        .ok_or_else(|| AppError::from(anyhow::anyhow!("campaign `{name}` was written but is not read back")))
}

/// Zero-width and direction-changing characters, which would let two names look the same.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// Runs `f` holding the tenant's campaign lease: changes to a tenant's campaigns are written one at a time. Waits up
/// to five seconds for another change to finish.
async fn one_at_a_time<S: Store, T>(
    store: &S,
    write: &WriteScope,
    f: impl std::future::Future<Output = AppResult<T>>,
) -> AppResult<T> {
    let holder = format!("campaigns:{}", uuid::Uuid::new_v4().simple());
    let mut tries = 0;
    while !store.try_lease(write, LEASE, &holder, std::time::Duration::from_secs(30)).await?.acquired() {
        tries += 1;
        if tries >= 100 {
            return Err(AppError::new(
                ErrorKind::Unavailable,
                format!("another change to tenant {write}'s campaigns is still being written"),
            )
            .retry_after(5));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let result = f.await;
    let _ = store.release_lease(write, LEASE, &holder).await;
    result
}

/// Withdraws a registered campaign before its cutoff: it is no longer computed (from the next run), and it stays
/// listed as withdrawn, with who and when. After the cutoff it stays computed (its posts may already be in view);
/// a config campaign is withdrawn by editing the config.
pub async fn withdraw<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    tenant: &str,
    name: &str,
    by: &str,
    now: DateTime<Utc>,
) -> AppResult<Managed> {
    let scope = crate::tenant::resolve(access, Some(tenant), "tenant", "name one of your tenants")?;
    let write: WriteScope = config.operator_access().write_scope(scope.as_str())?;
    let name = name.trim();
    let listed = one_at_a_time(store, &write, async {
        let found = list(store, config, &scope).await?.into_iter().map(|(m, _)| m).find(|m| m.name == name);
        let Some(m) = found else {
            return Err(AppError::not_found(format!("tenant {scope} has no campaign `{name}`")).at("name"));
        };
        if m.source == "config" {
            return Err(AppError::bad_request(format!("campaign `{name}` is declared in the config"))
                .at("name")
                .with_hint("an operator removes its [[campaign]] from the config"));
        }
        if m.withdrawn_at.is_some() {
            return Ok(m);
        }
        if now >= cutoff(m.start) {
            return Err(AppError::new(
                ErrorKind::Conflict,
                format!("campaign `{name}` can no longer be withdrawn: its posts count from {}", m.start - chrono::Duration::days(1)),
            )
            .at("name")
            .with_hint("a campaign stays computed once its posts may be in view, so a disappointing one is not dropped quietly"));
        }
        // After its registration in the journal's order, whatever the clocks of the machines writing.
        let at = m.registered_at.map_or(now, |r| now.max(r + chrono::Duration::microseconds(1)));
        let body = serde_json::to_string(&Event {
            action: "withdraw".into(),
            by: by.to_owned(),
            campaign: None,
            plan: None,
            plan_note: None,
        })
        .map_err(|e| AppError::from(anyhow::anyhow!("a withdrawal was not written: {e}")))?;
        let event = StateEvent { id: uuid::Uuid::new_v4().to_string(), stream: STREAM.into(), key: name.to_owned(), at, body };
        store.append_state(&write, &[event]).await?;
        let m = list(store, config, &scope).await?.into_iter().map(|(m, _)| m).find(|m| m.name == name);
        match m {
            Some(m) if m.withdrawn_at.is_some() => Ok(m),
            _ => Err(AppError::from(anyhow::anyhow!("the withdrawal of `{name}` was written but is not read back"))),
        }
    })
    .await?;
    Ok(listed)
}

/// The registration words shown beside a campaign's effect: `pre-registered` or `post hoc` for the registered campaign
/// computed under that name, none for a config one.
pub fn label(listed: &[Managed], tenant: &str, campaign: &str) -> Option<&'static str> {
    listed.iter().find(|m| m.tenant == tenant && m.name == campaign && m.is_active()).and_then(|m| {
        match m.registration.as_str() {
            POST_HOC => Some(POST_HOC),
            PRE_REGISTERED => Some(PRE_REGISTERED),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_starts_at_midnight_pacific() {
        let d = NaiveDate::from_ymd_opt(2018, 3, 10).unwrap();
        assert_eq!(start_instant(d).to_rfc3339(), "2018-03-10T08:00:00+00:00");
        let summer = NaiveDate::from_ymd_opt(2018, 7, 1).unwrap();
        assert_eq!(start_instant(summer).to_rfc3339(), "2018-07-01T07:00:00+00:00");
    }
}
