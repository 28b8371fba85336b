//! The Graph API surface, as pure request → response logic (the HTTP server and batch requests both call it).
// Graph errors are the answer, not an exceptional path: returning them by value keeps the handlers readable.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use pulse_domain::time::{end_time_for_day, format_graph_time, pacific_midnight};
use pulse_domain::{ApiVersion, Level, MetricCatalogue, Period, ValueKind};
use pulse_graph::errors::http_status;
use pulse_graph::wire::{
    BatchHeader, BatchRequest, BatchResponse, Cursors, DebugTokenData, DebugTokenResponse, GraphError, GraphErrorBody,
    Insight, InsightValue, InsightsResponse, MetricValue, PageObject, Paging, PostObject, PostsResponse,
};
use serde_json::Number;

use crate::faults::{BodyFault, FaultState, UsageReport, Verdict};
use crate::rng::text;
use crate::world::{DayFigures, Post, World};

/// Meta's limit on `until - since`.
pub const MAX_RANGE_SECS: i64 = 8_035_200;
pub const MAX_BATCH: usize = 50;

/// An incoming call, already taken apart.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// From `Authorization: Bearer ...`.
    pub bearer: Option<String>,
    /// Form fields of a POST body.
    pub form: Vec<(String, String)>,
}

impl Request {
    pub fn get(path: &str, query: &[(&str, &str)]) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            query: query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Self::default()
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().chain(self.form.iter()).find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Milliseconds to wait before answering (a slow-response fault).
    pub delay_ms: u64,
}

type Answer = Result<String, GraphError>;

/// The simulated Meta.
pub struct Sim {
    pub world: World,
    catalogue: MetricCatalogue,
    state: Mutex<FaultState>,
    today: RwLock<NaiveDate>,
    base_url: RwLock<String>,
    app_secret: Option<String>,
    /// What Facebook Login has issued.
    logins: Mutex<crate::login::Logins>,
}

fn graph_error(code: i64, subcode: Option<i64>, message: impl Into<String>) -> GraphError {
    let message = message.into();
    GraphError {
        kind: if code == 190 || code == 100 || code == 104 {
            "OAuthException".into()
        } else {
            "GraphMethodException".into()
        },
        message,
        code,
        error_subcode: subcode,
        is_transient: matches!(code, 1 | 2 | 4 | 17 | 32 | 613).then_some(matches!(code, 1 | 2)),
        error_user_title: None,
        error_user_msg: None,
        fbtrace_id: String::new(),
    }
}

fn unsupported_get(id: &str) -> GraphError {
    graph_error(
        100,
        Some(33),
        format!(
            "Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
        ),
    )
}

fn invalid_metric() -> GraphError {
    graph_error(100, None, "(#100) The value must be a valid insights metric")
}

impl Sim {
    pub fn new(world: World, app_secret: Option<String>) -> Self {
        let today = world.end() + Duration::days(1);
        Self {
            world,
            catalogue: MetricCatalogue::default(),
            state: Mutex::new(FaultState::default()),
            today: RwLock::new(today),
            base_url: RwLock::new("https://graph.facebook.com".into()),
            app_secret,
            logins: Mutex::new(crate::login::Logins::default()),
        }
    }

    /// The simulated "today": the first day without complete data.
    pub fn today(&self) -> NaiveDate {
        *self.today.read().expect("clock lock")
    }

    /// Moves the simulated clock (tests and incremental demo runs: new days become available).
    pub fn set_today(&self, day: NaiveDate) {
        *self.today.write().expect("clock lock") = day;
    }

    /// The base URL written into paging links.
    pub fn set_base_url(&self, url: &str) {
        *self.base_url.write().expect("url lock") = url.trim_end_matches('/').to_owned();
    }

    pub fn calls(&self) -> u32 {
        self.state.lock().expect("state lock").total_calls()
    }

    /// Answers one call.
    pub fn handle(&self, req: &Request) -> Response {
        if req.method == "POST" && req.param("batch").is_some() {
            return self.batch(req);
        }
        let mut segments: Vec<&str> = req.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let version = match segments.first().and_then(|s| s.parse::<ApiVersion>().ok()) {
            Some(v) => {
                segments.remove(0);
                v
            }
            None => self.world.api_version(),
        };
        if let Some(resp) = self.login(req, &segments) {
            return resp;
        }
        let object = segments.first().copied().unwrap_or("");
        let page = if let Some((page_id, _)) = object.split_once('_') {
            self.world.page_by_id(page_id).map(|p| p.index)
        } else {
            self.world.page_by_id(object).map(|p| p.index)
        };
        let token = req.bearer.clone().or_else(|| req.param("access_token").map(str::to_owned));
        let request_key = canonical_key(req);
        let (verdict, body_fault, delay_ms, usage) = {
            let mut state = self.state.lock().expect("state lock");
            state.decide(&self.world.scenario.faults, self.world.seed, page, &request_key)
        };
        let page_id = page.map(|p| self.world.pages[p].id.clone());
        let answer = match verdict {
            Verdict::AppThrottled { .. } => Err(graph_error(4, None, "(#4) Application request limit reached")),
            Verdict::PageThrottled { code, .. } => Err(graph_error(
                code,
                (code == 80001).then_some(2446079),
                match code {
                    80001 => {
                        "There have been too many calls to this Page account. Wait a bit and try again.".to_owned()
                    }
                    32 => "(#32) Page request limit reached".to_owned(),
                    613 => "(#613) Calls to this api have exceeded the rate limit.".to_owned(),
                    _ => "(#17) User request limit reached".to_owned(),
                },
            )),
            Verdict::Transient { code } => Err(graph_error(
                code,
                None,
                if code == 1 {
                    "An unknown error occurred"
                } else {
                    "An unexpected error has occurred. Please retry your request later."
                },
            )),
            Verdict::TokenDead { subcode } => Err(graph_error(
                190,
                Some(subcode),
                if subcode == 460 {
                    "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons."
                } else {
                    "Error validating access token: Session has expired on Saturday, 10-Mar-18 09:00:00 PST. The current time is Saturday, 10-Mar-18 10:00:00 PST."
                },
            )),
            Verdict::Permission => {
                Err(graph_error(200, None, "(#200) Requires pages_read_engagement permission to manage the object"))
            }
            Verdict::Pass => self.route(req, version, &segments, page, token.as_deref()),
        };
        let mut headers = usage_headers(usage, page_id.as_deref());
        headers.push(("content-type".into(), "application/json; charset=UTF-8".into()));
        match answer {
            Ok(mut body) => {
                match body_fault {
                    BodyFault::None => {}
                    BodyFault::Truncated => body.truncate(body.len() / 2),
                    BodyFault::Malformed => {
                        body = format!("<html><body>502 Bad Gateway</body></html>{}", &body[..body.len().min(10)])
                    }
                }
                Response { status: 200, headers, body, delay_ms }
            }
            Err(mut error) => {
                error.fbtrace_id = format!("Sim{:011x}", text(&request_key) & 0xFFF_FFFF_FFFF);
                let status = http_status(error.code);
                let body = serde_json::to_string(&GraphErrorBody { error }).expect("serialisable");
                Response { status, headers, body, delay_ms }
            }
        }
    }

    fn route(
        &self,
        req: &Request,
        version: ApiVersion,
        segments: &[&str],
        page: Option<usize>,
        token: Option<&str>,
    ) -> Answer {
        let Some(&object) = segments.first() else {
            return Err(graph_error(100, None, "(#100) Unsupported request: no object id in the path"));
        };
        if object == "debug_token" {
            return self.debug_token(req);
        }
        let Some(token) = token else {
            return Err(graph_error(104, None, "An access token is required to request this resource."));
        };
        let Some(page) = page else {
            return Err(unsupported_get(object));
        };
        let p = &self.world.pages[page];
        if token != p.token {
            match self.logins.lock().expect("logins lock").page_token(token, page, self.today()) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(graph_error(190, None, "Invalid OAuth access token - Cannot parse access token")),
            }
        }
        if let Some(secret) = &self.app_secret {
            let expected = appsecret_proof(secret, token);
            match req.param("appsecret_proof") {
                None => {
                    return Err(graph_error(
                        100,
                        None,
                        "API calls from the server require an appsecret_proof argument",
                    ));
                }
                Some(proof) if proof != expected => {
                    return Err(graph_error(100, None, "Invalid appsecret_proof provided in the API argument"));
                }
                Some(_) => {}
            }
        }
        let is_post = object.contains('_');
        match (&segments[1..], is_post) {
            ([], false) => self.page_fields(req, page),
            (["insights"], _) | (["insights", _], _) | (["insights", _, _], _) => {
                let metrics = segments.get(2).map(|m| m.to_string()).or_else(|| req.param("metric").map(str::to_owned));
                let period = segments.get(3).map(|p| p.to_string()).or_else(|| req.param("period").map(str::to_owned));
                if is_post {
                    let post = self
                        .world
                        .post(object)
                        .filter(|p| p.created_day < self.today())
                        .ok_or_else(|| unsupported_get(object))?;
                    self.post_insights(version, &post, metrics.as_deref(), period.as_deref())
                        .map(|r| serde_json::to_string(&r).expect("serialisable"))
                } else {
                    self.page_insights(req, version, page, metrics.as_deref(), period.as_deref())
                }
            }
            (["published_posts"], false) | (["posts"], false) => self.posts(req, version, page, segments[1]),
            ([], true) => {
                let post = self
                    .world
                    .post(object)
                    .filter(|p| p.created_day < self.today())
                    .ok_or_else(|| unsupported_get(object))?;
                let obj = self.post_object(version, &post, "id,created_time,message,permalink_url")?;
                Ok(serde_json::to_string(&obj).expect("serialisable"))
            }
            _ => Err(unsupported_get(&segments.join("/"))),
        }
    }

    fn metric_allowed(
        &self,
        name: &str,
        version: ApiVersion,
        level: Level,
        retired: Option<&str>,
    ) -> Result<&'static pulse_domain::GraphMetric, GraphError> {
        let g = self.catalogue.by_graph_name(name).ok_or_else(invalid_metric)?;
        if g.canonical.level() != level || !g.is_valid(version, self.today()) || retired == Some(name) {
            return Err(invalid_metric());
        }
        Ok(g)
    }

    fn page_insights(
        &self,
        req: &Request,
        version: ApiVersion,
        page: usize,
        metrics: Option<&str>,
        period: Option<&str>,
    ) -> Answer {
        let metrics = metrics
            .filter(|m| !m.is_empty())
            .ok_or_else(|| graph_error(100, None, "(#100) The parameter metric is required"))?;
        let period = match period {
            None => None,
            Some(p) => Some(p.parse::<Period>().map_err(|_| {
                graph_error(100, None, "(#100) Period must be one of the following values: day, week, days_28, month, lifetime, total_over_range")
            })?),
        };
        let retired = self.state.lock().expect("state lock").retired(&self.world.scenario.faults).map(str::to_owned);
        let mut wanted = Vec::new();
        for name in metrics.split(',').map(str::trim) {
            wanted.push(self.metric_allowed(name, version, Level::Page, retired.as_deref())?);
        }
        let today = self.today();
        let (since, until) = self.window(req, today)?;
        let first = since.max(self.world.start());
        let last = (until - Duration::days(1)).min(today - Duration::days(1));
        let mut cache = DayCache::new(&self.world, page);
        let p = &self.world.pages[page];
        let mut data = Vec::new();
        for g in wanted {
            for &per in g.periods.iter().filter(|per| period.is_none_or(|want| want == **per)) {
                let mut values = Vec::new();
                let mut day = first;
                while day <= last {
                    let value = self.insight_value(&mut cache, page, g.name, g.canonical.value_kind(), per, day);
                    values.push(InsightValue { value, end_time: Some(format_graph_time(end_time_for_day(day))) });
                    day += Duration::days(1);
                }
                data.push(Insight {
                    name: g.name.to_owned(),
                    period: per.as_str().to_owned(),
                    values,
                    title: Some(title(g.name, per)),
                    description: Some(format!("{}: {}", period_word(per), g.canonical.description())),
                    id: format!("{}/insights/{}/{}", p.id, g.name, per.as_str()),
                });
            }
        }
        let span = until - since;
        let link = |from: NaiveDate, to: NaiveDate| {
            let mut q: Vec<(String, String)> = req
                .query
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "since" | "until" | "date_preset"))
                .cloned()
                .collect();
            q.push(("since".into(), pacific_midnight(from).to_string()));
            q.push(("until".into(), pacific_midnight(to).to_string()));
            let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish();
            format!("{}{}?{}", self.base_url.read().expect("url lock"), req.path, query)
        };
        let paging = Paging {
            cursors: None,
            previous: Some(link(since - span, since)),
            next: (until < today).then(|| link(until, until + span)),
        };
        Ok(serde_json::to_string(&InsightsResponse { data, paging: Some(paging) }).expect("serialisable"))
    }

    fn insight_value(
        &self,
        cache: &mut DayCache,
        page: usize,
        name: &str,
        kind: ValueKind,
        period: Period,
        day: NaiveDate,
    ) -> MetricValue {
        let n = period.window_days().unwrap_or(1) as usize;
        let days: Vec<DayFigures> = (0..n as i64).rev().map(|b| cache.get(day - Duration::days(b))).collect();
        let sum = |f: fn(&DayFigures) -> i64| days.iter().map(f).sum::<i64>();
        let unique = |f: fn(&DayFigures) -> i64| {
            let daily: Vec<i64> = days.iter().map(f).collect();
            if n == 1 { daily[0] } else { self.world.window_unique(&daily, n) }
        };
        let today = &days[n - 1];
        let number = match name {
            "page_impressions" | "page_media_view" => sum(|d| d.views),
            "page_impressions_unique" | "page_total_media_view_unique" | "page_impressions_by_age_gender_unique" => {
                unique(|d| d.reach)
            }
            "page_post_engagements" => sum(|d| d.engagements),
            "page_engaged_users" | "page_content_activity_by_age_gender_unique" => unique(|d| d.engaged),
            "page_fans" | "page_follows" | "page_fans_gender_age" => today.followers,
            "page_fan_adds_unique" | "page_daily_follows_unique" => unique(|d| d.new_followers),
            "page_video_views" => sum(|d| d.video_views),
            _ => 0,
        };
        match kind {
            ValueKind::Number => MetricValue::int(number),
            ValueKind::AgeGenderBreakdown => {
                breakdown(&self.world, page, number, text(name) ^ (day.to_epoch_days() as u64) ^ ((n as u64) << 40))
            }
        }
    }

    fn post_insights(
        &self,
        version: ApiVersion,
        post: &Post,
        metrics: Option<&str>,
        period: Option<&str>,
    ) -> Result<InsightsResponse, GraphError> {
        let metrics = metrics
            .filter(|m| !m.is_empty())
            .ok_or_else(|| graph_error(100, None, "(#100) The parameter metric is required"))?;
        if let Some(p) = period
            && p.parse::<Period>().is_err()
        {
            return Err(graph_error(
                100,
                None,
                "(#100) Period must be one of the following values: day, week, days_28, month, lifetime, total_over_range",
            ));
        }
        let retired = self.state.lock().expect("state lock").retired(&self.world.scenario.faults).map(str::to_owned);
        let as_of = self.today() - Duration::days(1);
        let totals = self.world.post_lifetime(post, as_of);
        let mut data = Vec::new();
        for name in metrics.split(',').map(str::trim) {
            let g = self.metric_allowed(name, version, Level::Post, retired.as_deref())?;
            if period.is_some_and(|p| p != "lifetime") {
                continue;
            }
            let value = match name {
                "post_impressions" | "post_media_view" => MetricValue::int(totals.views.round() as i64),
                "post_impressions_unique" | "post_total_media_view_unique" => {
                    MetricValue::int(totals.reach.round() as i64)
                }
                "post_clicks" => MetricValue::int(totals.engagements.round() as i64),
                "post_engaged_users" => MetricValue::int(totals.engaged.round() as i64),
                "post_video_views" => MetricValue::int(totals.video_views.round() as i64),
                "post_video_view_time_by_age_bucket_and_gender" => {
                    let viewers = totals.video_views.round() as i64;
                    let ms = if viewers < 100 { 0 } else { viewers * 9_000 };
                    breakdown(&self.world, post.page, ms.max(viewers.min(99)), text(&post.id))
                }
                _ => MetricValue::int(0),
            };
            data.push(Insight {
                name: name.to_owned(),
                period: "lifetime".into(),
                values: vec![InsightValue { value, end_time: None }],
                title: Some(title(name, Period::Lifetime)),
                description: Some(format!("Lifetime: {}", g.canonical.description())),
                id: format!("{}/insights/{name}/lifetime", post.id),
            });
        }
        Ok(InsightsResponse { data, paging: None })
    }

    fn window(&self, req: &Request, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), GraphError> {
        if let Some(preset) = req.param("date_preset") {
            let days = |n: i64| Ok((today - Duration::days(n), today));
            return match preset {
                "today" => Ok((today, today + Duration::days(1))),
                "yesterday" => days(1),
                "last_3d" => days(3),
                "last_7d" => days(7),
                "last_14d" => days(14),
                "last_28d" => days(28),
                "last_30d" => days(30),
                "last_90d" => days(90),
                "this_month" => Ok((today.with_day0(0).expect("first of month"), today)),
                "last_month" => {
                    let first = today.with_day0(0).expect("first of month");
                    Ok(((first - Duration::days(1)).with_day0(0).expect("first"), first))
                }
                other => Err(graph_error(
                    100,
                    None,
                    format!(
                        "(#100) date_preset must be one of the following values: today, yesterday, last_3d, last_7d, last_14d, last_28d, last_30d, last_90d, this_month, last_month (got {other})"
                    ),
                )),
            };
        }
        let since = req.param("since").map(|s| parse_time(s, "since")).transpose()?;
        let until = req.param("until").map(|s| parse_time(s, "until")).transpose()?;
        let (since, until) = match (since, until) {
            (None, None) => (today - Duration::days(2), today),
            (Some(s), None) => (s, (s + Duration::days(90)).min(today).max(s + Duration::days(1))),
            (None, Some(u)) => (u - Duration::days(2), u),
            (Some(s), Some(u)) => (s, u),
        };
        if until < since {
            return Err(graph_error(100, None, "(#100) The since parameter must be before the until parameter"));
        }
        if (until - since).num_seconds() > MAX_RANGE_SECS {
            return Err(graph_error(
                100,
                None,
                "(#100) There cannot be more than 93 days (8035200 s) between since and until",
            ));
        }
        Ok((since, until))
    }

    fn post_object(&self, version: ApiVersion, post: &Post, fields: &str) -> Result<PostObject, GraphError> {
        let mut obj = PostObject {
            id: post.id.clone(),
            created_time: None,
            message: None,
            permalink_url: None,
            status_type: None,
            kind: None,
            insights: None,
        };
        for field in split_fields(fields) {
            match field.as_str() {
                "id" => {}
                "created_time" => obj.created_time = Some(format_graph_time(World::created_time(post))),
                "message" => obj.message = Some(post.message.clone()),
                "permalink_url" => {
                    let (page, number) = post.id.split_once('_').expect("post ids have a page");
                    obj.permalink_url = Some(format!("https://www.facebook.com/{page}/posts/{number}/"));
                }
                "status_type" => {
                    obj.status_type = Some(
                        match post.kind {
                            "photo" => "added_photos",
                            "video" => "added_video",
                            "link" => "shared_story",
                            _ => "mobile_status_update",
                        }
                        .into(),
                    )
                }
                "type" if version < ApiVersion::new(3, 3) => obj.kind = Some(post.kind.into()),
                "type" => {
                    return Err(graph_error(12, None, "(#12) type field is deprecated for versions v3.3 and higher"));
                }
                f if f.starts_with("insights") => {
                    let metrics = f
                        .split_once(".metric(")
                        .and_then(|(_, rest)| rest.split_once(')'))
                        .map(|(m, _)| m.to_owned())
                        .ok_or_else(|| graph_error(100, None, "(#100) insights requires .metric(...)"))?;
                    obj.insights = Some(self.post_insights(version, post, Some(&metrics), None)?);
                }
                other => {
                    return Err(graph_error(
                        100,
                        None,
                        format!("(#100) Tried accessing nonexisting field ({other}) on node type (Post)"),
                    ));
                }
            }
        }
        Ok(obj)
    }

    fn posts(&self, req: &Request, version: ApiVersion, page: usize, edge: &str) -> Answer {
        let limit: usize = match req.param("limit") {
            None => 25,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(graph_error(100, None, "(#100) The limit parameter must be between 1 and 100"));
                }
            },
        };
        let today = self.today();
        let since = req
            .param("since")
            .map(|s| parse_time(s, "since"))
            .transpose()?
            .unwrap_or(self.world.start())
            .max(self.world.start());
        let until = req.param("until").map(|s| parse_time(s, "until")).transpose()?.unwrap_or(today).min(today);
        let fields = req.param("fields").unwrap_or("id,created_time,message");
        let offset = match req.param("after") {
            None => 0,
            Some(c) => decode_cursor(c).ok_or_else(|| graph_error(100, None, "(#100) The after cursor is invalid"))?,
        };
        let mut all: Vec<Post> = Vec::new();
        let mut day = until - Duration::days(1);
        while day >= since {
            let mut posts = self.world.posts_on(page, day);
            posts.sort_by(|a, b| b.created_secs.cmp(&a.created_secs).then_with(|| b.id.cmp(&a.id)));
            all.extend(posts);
            day -= Duration::days(1);
        }
        let page_posts: Vec<&Post> = all.iter().skip(offset).take(limit).collect();
        let data = page_posts.iter().map(|p| self.post_object(version, p, fields)).collect::<Result<Vec<_>, _>>()?;
        let end = offset + data.len();
        // With the empty-page fault, the last page of posts still links to a page with no data that itself still
        // has `next` (Meta does this); a client must stop at an empty page.
        let empty_tail = self.world.scenario.faults.empty_page_with_next;
        let next_offset = if end < all.len() || (empty_tail && !data.is_empty()) {
            Some(end)
        } else if empty_tail && data.is_empty() && offset == all.len() {
            Some(offset + limit)
        } else {
            None
        };
        let link = |after: usize| {
            let mut q: Vec<(String, String)> =
                req.query.iter().filter(|(k, _)| k != "after" && k != "before").cloned().collect();
            q.push(("after".into(), encode_cursor(after)));
            let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish();
            format!(
                "{}/{}/{}/{edge}?{query}",
                self.base_url.read().expect("url lock"),
                version,
                self.world.pages[page].id
            )
        };
        let paging = Paging {
            cursors: Some(Cursors { before: Some(encode_cursor(offset)), after: Some(encode_cursor(end)) }),
            previous: None,
            next: next_offset.map(link),
        };
        Ok(serde_json::to_string(&PostsResponse { data, paging: Some(paging) }).expect("serialisable"))
    }

    fn page_fields(&self, req: &Request, page: usize) -> Answer {
        let p = &self.world.pages[page];
        let followers = self.world.followers(page, self.today() - Duration::days(1));
        let mut obj =
            PageObject { id: p.id.clone(), name: None, fan_count: None, followers_count: None, access_token: None };
        for field in split_fields(req.param("fields").unwrap_or("name")) {
            match field.as_str() {
                "id" => {}
                "name" => obj.name = Some(p.name.clone()),
                "fan_count" => obj.fan_count = Some(followers),
                "followers_count" => obj.followers_count = Some(followers),
                "access_token" => obj.access_token = Some(p.token.clone()),
                other => {
                    return Err(graph_error(
                        100,
                        None,
                        format!("(#100) Tried accessing nonexisting field ({other}) on node type (Page)"),
                    ));
                }
            }
        }
        Ok(serde_json::to_string(&obj).expect("serialisable"))
    }

    fn debug_token(&self, req: &Request) -> Answer {
        if let Some(secret) = &self.app_secret {
            let app_token = format!("{}|{secret}", self.world.scenario.world.app_id);
            let given = req.bearer.clone().or_else(|| req.param("access_token").map(str::to_owned));
            if given.as_deref() != Some(app_token.as_str()) {
                return Err(graph_error(
                    190,
                    None,
                    "(#190) debug_token needs the app's access token (app id|app secret)",
                ));
            }
        }
        let input = req
            .param("input_token")
            .ok_or_else(|| graph_error(100, None, "(#100) The parameter input_token is required"))?;
        if let Some(data) = self.logins.lock().expect("logins lock").debug(
            input,
            &self.world.scenario.world.app_id,
            &self.world,
            self.today(),
        ) {
            return Ok(serde_json::to_string(&DebugTokenResponse { data }).expect("serialisable"));
        }
        let page = self.world.pages.iter().find(|p| p.token == input);
        let dead = page.and_then(|p| self.world.scenario.faults.token_deaths.iter().find(|d| d.page == p.index));
        let data = DebugTokenData {
            app_id: self.world.scenario.world.app_id.clone(),
            kind: "PAGE".into(),
            application: "Practice Pulse (simulated)".into(),
            expires_at: 0,
            is_valid: page.is_some() && dead.is_none(),
            scopes: vec!["pages_read_engagement".into(), "read_insights".into(), "pages_show_list".into()],
            profile_id: page.map(|p| p.id.clone()),
            error: page.is_none().then(|| graph_error(190, None, "Invalid OAuth access token")),
            data_access_expires_at: 0,
        };
        Ok(serde_json::to_string(&DebugTokenResponse { data }).expect("serialisable"))
    }

    /// Facebook Login's endpoints (`dialog/oauth`, `oauth/access_token`, `me/...`), or `None` for any other path.
    fn login(&self, req: &Request, segments: &[&str]) -> Option<Response> {
        let params: HashMap<String, String> =
            req.query.iter().chain(req.form.iter()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let app_id = self.world.scenario.world.app_id.clone();
        let json = |answer: Result<String, GraphError>| match answer {
            Ok(body) => Response {
                status: 200,
                headers: vec![("content-type".into(), "application/json; charset=UTF-8".into())],
                body,
                delay_ms: 0,
            },
            Err(error) => Response {
                status: http_status(error.code),
                headers: vec![("content-type".into(), "application/json; charset=UTF-8".into())],
                body: serde_json::to_string(&GraphErrorBody { error }).expect("serialisable"),
                delay_ms: 0,
            },
        };
        let html = |status: u16, body: String| Response {
            status,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body,
            delay_ms: 0,
        };
        let token = req.bearer.clone().or_else(|| req.param("access_token").map(str::to_owned));
        // With the app secret required, calls with a user token need appsecret_proof, as Meta's do.
        if segments.first() == Some(&"me")
            && let Some(secret) = &self.app_secret
            && req.param("appsecret_proof") != Some(appsecret_proof(secret, token.as_deref().unwrap_or("")).as_str())
        {
            return Some(json(Err(graph_error(
                100,
                None,
                "API calls from the server require an appsecret_proof argument",
            ))));
        }
        let mut logins = self.logins.lock().expect("logins lock");
        Some(match segments {
            ["me"] => json(logins.me(self.world.seed, token.as_deref()).map(|v| v.to_string())),
            ["dialog", "oauth"] => match crate::login::Logins::dialog(&self.world, &app_id, &params) {
                Ok(page) => html(200, page),
                Err(why) => html(400, format!("<!doctype html><p>{why}</p>")),
            },
            ["dialog", "oauth", "confirm"] if req.method == "POST" => {
                match logins.confirm(&self.world, self.today(), &req.form) {
                    Ok(location) => Response {
                        status: 302,
                        headers: vec![("location".into(), location)],
                        body: String::new(),
                        delay_ms: 0,
                    },
                    Err(why) => html(400, format!("<!doctype html><p>{why}</p>")),
                }
            }
            ["oauth", "access_token"] => json(
                logins
                    .access_token(self.world.seed, &app_id, self.app_secret.as_deref(), &params)
                    .map(|t| serde_json::to_string(&t).expect("serialisable")),
            ),
            ["me", "permissions"] => {
                json(logins.permissions(token.as_deref()).map(|r| serde_json::to_string(&r).expect("serialisable")))
            }
            ["me", "accounts"] => {
                let base = self.base_url.read().expect("url lock").clone();
                json(
                    logins
                        .accounts(&self.world, &base, &req.path, token.as_deref(), &params)
                        .map(|r| serde_json::to_string(&r).expect("serialisable")),
                )
            }
            _ => return None,
        })
    }

    /// Kills every token Facebook Login issued for the page with id `page_id` (190 with `subcode` from then on).
    pub fn kill_page_tokens(&self, page_id: &str, subcode: i64) -> usize {
        let Some(page) = self.world.page_by_id(page_id).map(|p| p.index) else { return 0 };
        self.logins.lock().expect("logins lock").kill_page(page, subcode)
    }

    /// `user` removes the app: every page token they were issued dies (190/458).
    pub fn remove_app(&self, user: &str) -> usize {
        self.logins.lock().expect("logins lock").remove_app(user)
    }

    fn batch(&self, req: &Request) -> Response {
        let raw = req.param("batch").unwrap_or("[]");
        let error = |code: i64, message: &str| {
            let body = serde_json::to_string(&GraphErrorBody { error: graph_error(code, None, message) })
                .expect("serialisable");
            Response {
                status: 400,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
                delay_ms: 0,
            }
        };
        let Ok(inner) = serde_json::from_str::<Vec<BatchRequest>>(raw) else {
            return error(100, "(#100) The parameter batch must be a JSON array of requests");
        };
        if inner.len() > MAX_BATCH {
            return error(100, "(#100) Too many requests in batch message. Maximum batch size is 50");
        }
        let token = req.bearer.clone().or_else(|| req.param("access_token").map(str::to_owned));
        let mut delay = 0;
        let responses: Vec<BatchResponse> = inner
            .iter()
            .map(|r| {
                let (path, query) = r.relative_url.split_once('?').unwrap_or((&r.relative_url, ""));
                let sub = Request {
                    method: r.method.to_uppercase(),
                    path: format!("/{}", path.trim_start_matches('/')),
                    query: form_urlencoded::parse(query.as_bytes()).into_owned().collect(),
                    bearer: token.clone(),
                    form: Vec::new(),
                };
                let resp = self.handle(&sub);
                delay = delay.max(resp.delay_ms);
                BatchResponse {
                    code: resp.status,
                    headers: resp.headers.into_iter().map(|(name, value)| BatchHeader { name, value }).collect(),
                    body: resp.body,
                }
            })
            .collect();
        Response {
            status: 200,
            headers: vec![("content-type".into(), "application/json; charset=UTF-8".into())],
            body: serde_json::to_string(&responses).expect("serialisable"),
            delay_ms: delay,
        }
    }
}

/// Day figures of one page, computed once per request.
struct DayCache<'a> {
    world: &'a World,
    page: usize,
    days: HashMap<NaiveDate, DayFigures>,
}

impl<'a> DayCache<'a> {
    fn new(world: &'a World, page: usize) -> Self {
        Self { world, page, days: HashMap::new() }
    }

    fn get(&mut self, day: NaiveDate) -> DayFigures {
        if day < self.world.start() {
            return DayFigures { followers: self.world.followers(self.page, day), ..DayFigures::default() };
        }
        *self.days.entry(day).or_insert_with(|| self.world.day(self.page, day))
    }
}

/// Meta withholds demographic breakdowns below 100 people: an empty object.
fn breakdown(world: &World, page: usize, total: i64, salt: u64) -> MetricValue {
    if total < 100 {
        return MetricValue::Breakdown(BTreeMap::new());
    }
    MetricValue::Breakdown(world.split(page, total, salt).into_iter().map(|(k, v)| (k, Number::from(v))).collect())
}

fn usage_headers(u: UsageReport, page: Option<&str>) -> Vec<(String, String)> {
    let app = format!(
        r#"{{"call_count":{},"total_cputime":{},"total_time":{}}}"#,
        u.app_percent,
        u.app_percent / 2,
        u.app_percent / 2
    );
    let mut headers = vec![("x-app-usage".to_owned(), app)];
    if let Some(page) = page {
        headers.push((
            "x-business-use-case-usage".to_owned(),
            format!(
                r#"{{"{page}":[{{"type":"pages","call_count":{},"total_cputime":{},"total_time":{},"estimated_time_to_regain_access":{}}}]}}"#,
                u.page_percent,
                u.page_percent / 3,
                u.page_percent / 3,
                u.regain_minutes
            ),
        ));
    }
    headers
}

pub use pulse_graph::appsecret_proof;

fn canonical_key(req: &Request) -> String {
    let mut q: Vec<&(String, String)> =
        req.query.iter().filter(|(k, _)| k != "access_token" && k != "appsecret_proof").collect();
    q.sort();
    format!("{} {} {:?}", req.method, req.path, q)
}

/// `since`/`until`: a date (YYYY-MM-DD, midnight Pacific) or a Unix timestamp.
fn parse_time(value: &str, name: &str) -> Result<NaiveDate, GraphError> {
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(d);
    }
    if let Ok(ts) = value.parse::<i64>()
        && let Some(t) = Utc.timestamp_opt(ts, 0).single()
    {
        // A timestamp names the Pacific day it falls in (our own paging links use Pacific midnights).
        return Ok(t.with_timezone(&chrono_tz::America::Los_Angeles).date_naive());
    }
    Err(graph_error(100, None, format!("(#100) The parameter {name} is not a valid date or Unix timestamp: {value}")))
}

fn split_fields(fields: &str) -> Vec<String> {
    // Split at commas outside parentheses: `id,insights.metric(a,b)`.
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in fields.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_owned());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

fn encode_cursor(offset: usize) -> String {
    format!("QVFI{:012x}", (offset as u64) ^ 0x5A5A_5A5A_5A5A)
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let hex = cursor.strip_prefix("QVFI")?;
    if hex.len() != 12 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|v| (v ^ 0x5A5A_5A5A_5A5A) as usize)
}

fn period_word(p: Period) -> &'static str {
    match p {
        Period::Day => "Daily",
        Period::Week => "Weekly",
        Period::Days28 => "28 Days",
        Period::Lifetime => "Lifetime",
    }
}

fn title(name: &str, p: Period) -> String {
    let words: String = name
        .trim_start_matches("page_")
        .trim_start_matches("post_")
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!("{} {words}", period_word(p))
}
