//! Campaigns managed through the API and dashboard, and pre-registered: a campaign registered before its start is
//! stored with its plan (what it could detect, from the history before it), so its analysis was fixed before anyone
//! saw its outcome; one registered on or after its start day is labelled post hoc wherever its effect is shown.
//!
//! Registrations and withdrawals are events in the tenant's journal (stream `campaign`), with who and when: nothing is
//! edited or deleted. The first registration of a name wins (a second, even at the same moment, is refused and left
//! without effect); a withdrawn campaign is no longer computed and stays listed as withdrawn. Config campaigns
//! (`[[campaign]]`) are listed too, as configured: their definition time is not recorded.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use pulse_config::{Access, CampaignConfig, Config, TenantScope, WriteScope};
use pulse_domain::StateEvent;
use pulse_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult, ErrorKind};
use crate::plan;

pub const STREAM: &str = "campaign";

/// The longest name a registered campaign may have (it is shown in reports and headings).
pub const MAX_NAME: usize = 80;

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
    /// `pre-registered` (registered before its start), `post hoc` (on or after it) or `configured` (a config
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
}

impl Managed {
    pub fn is_active(&self) -> bool {
        self.withdrawn_at.is_none()
    }

    pub fn is_post_hoc(&self) -> bool {
        self.registration == POST_HOC
    }
}

pub const PRE_REGISTERED: &str = "pre-registered";
pub const POST_HOC: &str = "post hoc";
pub const CONFIGURED: &str = "configured";

/// The first moment of a campaign's first day: midnight Pacific time, the day boundary of Meta's daily figures.
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
    for e in store.read_state(scope, STREAM).await? {
        let Ok(event) = serde_json::from_str::<Event>(&e.body) else { continue };
        match (event.action.as_str(), event.campaign) {
            ("register", Some(c)) => {
                // The first definition of a name wins: a later registration of it has no effect.
                if out.iter().any(|(m, _)| m.name == c.name) {
                    continue;
                }
                let registration = if e.at < start_instant(c.start) { PRE_REGISTERED } else { POST_HOC };
                let mut m = managed(tenant, &c, "registered", registration);
                m.registered_at = Some(e.at);
                m.registered_by = Some(event.by);
                m.plan = event.plan;
                m.plan_note = event.plan_note;
                m.registration_id = Some(e.id);
                out.push((m, c));
            }
            ("withdraw", _) => {
                if let Some((m, _)) =
                    out.iter_mut().find(|(m, _)| m.name == e.key && m.source == "registered" && m.is_active())
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
/// the operator). Before its start the plan is computed and stored with it; on or after its start day it is recorded
/// as post hoc, without a plan (one made now would be made knowing the outcome).
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
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(bad(
            "name",
            format!("a campaign's name is 1 to {MAX_NAME} characters, without control characters"),
        ));
    }
    let start = pulse_config::real_date("start", &request.start).map_err(|e| bad("start", e))?;
    if request.days > 28 {
        return Err(bad("days", format!("days {} must be from 1 to 28", request.days)));
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
    if list(store, config, &scope).await?.iter().any(|(m, _)| m.name == campaign.name) {
        return Err(AppError::new(ErrorKind::Conflict, format!("tenant {scope} already has a campaign `{name}`"))
            .at("name")
            .with_hint("a campaign's definition is kept as registered: register a new one under another name"));
    }
    // The plan, before the start only: its input is checked (a bad metric or share is the request's fault), and a
    // history too short to plan from is recorded as the reason there is no plan.
    let (plan, plan_note) = if now < start_instant(start) {
        let req = plan::PlanRequest {
            tenant: scope.to_string(),
            start,
            days: request.days.max(1),
            share: request.share.unwrap_or(0.5),
            metric: request.metric.clone().unwrap_or_else(|| "views".into()),
            target: request.target,
        };
        plan::check(&req)?;
        match plan::plan_on(store, config, access, &req).await {
            Ok(answer) => (Some(plan::plan_json(&answer)), None),
            Err(e) if e.kind == ErrorKind::BadRequest => (None, Some(format!("no plan could be made: {}", e.message))),
            Err(e) => return Err(e),
        }
    } else {
        (None, Some("registered on or after its start: a plan made now would be made knowing the outcome".to_owned()))
    };
    let event = StateEvent {
        id: uuid::Uuid::new_v4().to_string(),
        stream: STREAM.into(),
        key: campaign.name.clone(),
        at: now,
        body: serde_json::to_string(&Event {
            action: "register".into(),
            by: by.to_owned(),
            campaign: Some(campaign.clone()),
            plan,
            plan_note,
        })
        .map_err(|e| AppError::from(anyhow::anyhow!("a campaign registration was not written: {e}")))?,
    };
    store.append_state(&write, std::slice::from_ref(&event)).await?;
    // Two registrations of one name at once both pass the check above: the journal's first wins, and the other is
    // told so (its event stays in the journal without effect).
    let listed = list(store, config, &scope).await?;
    let (mine, _) = listed
        .into_iter()
        .find(|(m, _)| m.name == campaign.name)
        .ok_or_else(|| AppError::from(anyhow::anyhow!("campaign `{name}` was written but is not read back")))?;
    if mine.registration_id.as_deref() != Some(event.id.as_str()) {
        return Err(AppError::new(ErrorKind::Conflict, format!("tenant {scope} already has a campaign `{name}`"))
            .at("name")
            .with_hint("another registration of this name came first: register under another name"));
    }
    Ok(mine)
}

/// Withdraws a registered campaign: its reports are no longer computed (from the next run), and it stays listed as
/// withdrawn, with who and when. A config campaign is withdrawn by editing the config.
pub async fn withdraw<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    tenant: &str,
    name: &str,
    by: &str,
) -> AppResult<Managed> {
    let scope = crate::tenant::resolve(access, Some(tenant), "tenant", "name one of your tenants")?;
    let write: WriteScope = config.operator_access().write_scope(scope.as_str())?;
    let found = list(store, config, &scope).await?.into_iter().find(|(m, _)| m.name == name);
    let Some((m, _)) = found else {
        return Err(AppError::not_found(format!("tenant {scope} has no campaign `{name}`")).at("name"));
    };
    if m.source == "config" {
        return Err(AppError::bad_request(format!("campaign `{name}` is declared in the config"))
            .at("name")
            .with_hint("an operator removes its [[campaign]] from the config"));
    }
    if !m.is_active() {
        return Ok(m);
    }
    let event = StateEvent {
        id: uuid::Uuid::new_v4().to_string(),
        stream: STREAM.into(),
        key: name.to_owned(),
        at: Utc::now(),
        body: serde_json::to_string(&Event {
            action: "withdraw".into(),
            by: by.to_owned(),
            campaign: None,
            plan: None,
            plan_note: None,
        })
        .unwrap_or_default(),
    };
    store.append_state(&write, &[event]).await?;
    list(store, config, &scope)
        .await?
        .into_iter()
        .map(|(m, _)| m)
        .find(|m| m.name == name)
        .ok_or_else(|| AppError::from(anyhow::anyhow!("campaign `{name}` is not read back")))
}

/// The registration words shown beside a campaign's effect: empty for a pre-registered or configured one.
pub fn label(listed: &[Managed], tenant: &str, campaign: &str) -> Option<&'static str> {
    listed.iter().find(|m| m.tenant == tenant && m.name == campaign).and_then(|m| match m.registration.as_str() {
        POST_HOC => Some(POST_HOC),
        PRE_REGISTERED => Some(PRE_REGISTERED),
        _ => None,
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
