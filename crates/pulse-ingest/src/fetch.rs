//! Fetching: one window of page insights (isolating a metric Meta refuses), and a window's posts with their lifetime
//! insights (following cursors).

use std::sync::Arc;

use chrono::{Duration as Days, Utc};
use pulse_domain::time::pacific_midnight;
use pulse_domain::{ApiVersion, GraphMetric, PageInsightFact, Period, Post, PostInsightSnapshot};
use pulse_graph::ErrorClass;
use pulse_graph::wire::{InsightsView, PostsResponse};

use crate::call::{BoxFut, call, parse_failed};
use crate::client::{CallError, Fetched, decode};
use crate::context::{PageCtx, Shared};
use crate::parse::{self, Origin};
use crate::plan::{MetricAt, Window, periods};

/// One window's page insights, and which metrics Meta answered for (a refused metric is missing from it, so its
/// checkpoint must not move past this window).
pub(crate) struct InsightsFetch {
    pub facts: Vec<PageInsightFact>,
    pub delivered: Vec<MetricAt>,
}

/// A window's posts and their snapshots; `complete` is false when a post metric had to be left out.
pub(crate) struct PostsFetch {
    pub posts: Vec<Post>,
    pub snapshots: Vec<PostInsightSnapshot>,
    pub complete: bool,
}

/// Fetches one window of page insights for every metric and period asked for, in one call (no `period` parameter
/// when several periods are wanted: Meta then answers each metric at all its periods, and the unwanted ones are
/// dropped on parsing). A metric Meta rejects as invalid is found by splitting the metric names, recorded as
/// retired, and left out; the other metrics are still fetched.
pub(crate) fn fetch_insights<'a>(
    shared: &'a Shared,
    ctx: &'a PageCtx,
    metrics: Vec<MetricAt>,
    window: Window,
) -> BoxFut<'a, Result<InsightsFetch, CallError>> {
    Box::pin(async move {
        let metrics: Vec<MetricAt> = {
            let retired = shared.retired.lock().expect("lock");
            metrics.into_iter().filter(|(_, m)| !retired.contains(m.name)).collect()
        };
        let mut names: Vec<&'static str> = Vec::new();
        for (_, m) in &metrics {
            if !names.contains(&m.name) {
                names.push(m.name);
            }
        }
        if names.is_empty() {
            return Ok(InsightsFetch { facts: Vec::new(), delivered: Vec::new() });
        }
        let period = match periods(&metrics).as_slice() {
            [one] => Some(one.as_str()),
            _ => None,
        };
        let origin = Origin { fetched_at: Utc::now(), ..ctx.origin.clone() };
        let client = shared.client.clone();
        let token = ctx.target.token.clone();
        let page = ctx.target.page.to_string();
        let (since, until) = (pacific_midnight(window.from), pacific_midnight(window.to + Days::days(1)));
        let wanted: Arc<[MetricAt]> = metrics.clone().into();
        let asked = names.clone();
        let result = call(shared, ctx, move || {
            let (client, token, page, names, origin, wanted) =
                (client.clone(), token.clone(), page.clone(), asked.clone(), origin.clone(), wanted.clone());
            Box::pin(async move {
                let Fetched { body, usage, bytes } =
                    client.insights(&token, &page, &names, period, Some(since), Some(until)).await?;
                let body: InsightsView = decode(&token, &body)?;
                let wants = |name: &str, period: Period| wanted.iter().any(|(p, m)| *p == period && m.name == name);
                let facts = parse::page_facts(&origin, &body, window.from, window.to, &wants)
                    .map_err(|e| parse_failed(bytes, e))?;
                Ok((facts, bytes, usage))
            })
        })
        .await;
        match result {
            Err(CallError::Graph { class: ErrorClass::InvalidMetric, .. }) if names.len() == 1 => {
                let name = names[0];
                if shared.retired.lock().expect("lock").insert(name.to_owned()) {
                    tracing::warn!(metric = name, version = %shared.client.version(), "Meta rejected a metric as invalid: left out of this run, its checkpoint held back");
                }
                Ok(InsightsFetch { facts: Vec::new(), delivered: Vec::new() })
            }
            Err(CallError::Graph { class: ErrorClass::InvalidMetric, .. }) => {
                let first_half = &names[..names.len() / 2];
                let (a, b): (Vec<MetricAt>, Vec<MetricAt>) =
                    metrics.into_iter().partition(|(_, m)| first_half.contains(&m.name));
                let mut first = fetch_insights(shared, ctx, a, window).await?;
                let second = fetch_insights(shared, ctx, b, window).await?;
                first.facts.extend(second.facts);
                first.delivered.extend(second.delivered);
                Ok(first)
            }
            Ok(facts) => Ok(InsightsFetch { facts, delivered: metrics }),
            Err(e) => Err(e),
        }
    })
}

/// Lists the posts created in the window with their lifetime insights (field expansion), following cursors until
/// a page has no `next` or no data.
pub(crate) fn fetch_posts<'a>(
    shared: &'a Shared,
    ctx: &'a PageCtx,
    metrics: Vec<&'static GraphMetric>,
    window: Window,
) -> BoxFut<'a, Result<PostsFetch, CallError>> {
    Box::pin(async move {
        let asked = metrics.len();
        let metrics: Vec<&'static GraphMetric> = {
            let retired = shared.retired.lock().expect("lock");
            metrics.into_iter().filter(|m| !retired.contains(m.name)).collect()
        };
        let dropped = asked - metrics.len();
        let names: Vec<&str> = metrics.iter().map(|m| m.name).collect();
        let kind_field = if shared.client.version() < ApiVersion::new(3, 3) { "type" } else { "status_type" };
        let mut fields = format!("id,created_time,message,permalink_url,{kind_field}");
        if !names.is_empty() {
            fields.push_str(&format!(",insights.metric({})", names.join(",")));
        }
        let snapshot_day = shared.opts.plan.today - Days::days(1);
        let (since, until) = (pacific_midnight(window.from), pacific_midnight(window.to + Days::days(1)));
        let mut posts = Vec::new();
        let mut snapshots = Vec::new();
        let mut next: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            let origin = Origin { fetched_at: Utc::now(), ..ctx.origin.clone() };
            let (client, token, page, fields, link) = (
                shared.client.clone(),
                ctx.target.token.clone(),
                ctx.target.page.to_string(),
                fields.clone(),
                next.clone(),
            );
            let result = call(shared, ctx, move || {
                let (client, token, page, fields, link, origin) =
                    (client.clone(), token.clone(), page.clone(), fields.clone(), link.clone(), origin.clone());
                Box::pin(async move {
                    let fetched: Fetched<PostsResponse> = match &link {
                        Some(l) => client.follow(&token, l).await?,
                        None => client.published_posts(&token, &page, &fields, since, until, 100).await?,
                    };
                    let parsed = parse::posts(&origin, &fetched.body, snapshot_day)
                        .map_err(|e| parse_failed(fetched.bytes, e))?;
                    let next = fetched.body.paging.as_ref().and_then(|p| p.next.clone());
                    let empty = fetched.body.data.is_empty();
                    Ok(((parsed, next, empty), fetched.bytes, fetched.usage))
                })
            })
            .await;
            match result {
                Ok(((page_posts, page_snaps), link, empty)) => {
                    posts.extend(page_posts);
                    snapshots.extend(page_snaps);
                    // Meta may end a listing with an empty page that still has `next`: stop there.
                    if empty || link.is_none() || pages > 10_000 {
                        break;
                    }
                    next = link;
                }
                Err(CallError::Graph { class: ErrorClass::InvalidMetric, .. }) if !metrics.is_empty() => {
                    // One of the expanded insight metrics is refused: find it on a small probe, then list again.
                    isolate_post_metrics(shared, ctx, &metrics, window).await?;
                    let mut again = fetch_posts(shared, ctx, metrics, window).await?;
                    again.complete = false;
                    return Ok(again);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(PostsFetch { posts, snapshots, complete: dropped == 0 })
    })
}

/// Finds which of the post metrics Meta rejects by asking for each alone on a one-post listing.
async fn isolate_post_metrics(
    shared: &Shared,
    ctx: &PageCtx,
    metrics: &[&'static GraphMetric],
    window: Window,
) -> Result<(), CallError> {
    let kind_field = if shared.client.version() < ApiVersion::new(3, 3) { "type" } else { "status_type" };
    let (since, until) = (pacific_midnight(window.from), pacific_midnight(window.to + Days::days(1)));
    let mut found = false;
    for m in metrics {
        let fields = format!("id,{kind_field},insights.metric({})", m.name);
        let (client, token, page) = (shared.client.clone(), ctx.target.token.clone(), ctx.target.page.to_string());
        let r = call(shared, ctx, move || {
            let (client, token, page, fields) = (client.clone(), token.clone(), page.clone(), fields.clone());
            Box::pin(async move {
                let f = client.published_posts(&token, &page, &fields, since, until, 1).await?;
                Ok(((), f.bytes, f.usage))
            })
        })
        .await;
        match r {
            Err(CallError::Graph { class: ErrorClass::InvalidMetric, .. }) => {
                found = true;
                if shared.retired.lock().expect("lock").insert(m.name.to_owned()) {
                    tracing::warn!(metric = m.name, version = %shared.client.version(), "Meta rejected a post metric as invalid: recorded as retired");
                }
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    if found {
        Ok(())
    } else {
        Err(CallError::Malformed {
            status: 400,
            bytes: 0,
            reason: "Meta rejected the post metrics but none alone".into(),
            retryable: false,
        })
    }
}
