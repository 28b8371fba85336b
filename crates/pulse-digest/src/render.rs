//! A digest as a person receives it: the subject, the plain text and the HTML (from `templates/digest.txt` and
//! `templates/digest.html`, askama, checked when this crate compiles; the HTML escapes every value), and the charts
//! as PNG pictures the HTML refers to by content id. Both parts are made from one [`DigestView`] of display strings,
//! so the text and the HTML say the same thing.

use std::collections::BTreeMap;
use std::ops::Deref;

use askama::Template;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use chrono::{Duration, NaiveDate};
use pulse_app::chart::{self, Series};
use pulse_app::error::{AppError, AppResult, ErrorKind};
use pulse_app::overview;
use pulse_app::text::thousands;

use crate::digest::{CampaignLine, Digest, Figure, people, published_count};

/// Where the digest's links point.
#[derive(Debug, Clone)]
pub struct Links {
    /// The dashboard's address, without a trailing slash.
    pub dashboard: String,
    /// The recipient's own unsubscribe link (signed), when there is one.
    pub unsubscribe: Option<String>,
}

impl Links {
    /// A dashboard page over the digest's last 13 weeks.
    fn page(&self, d: &Digest, path: &str) -> String {
        format!(
            "{}{path}?tenant={}&from={}&to={}",
            self.dashboard,
            d.tenant,
            d.week_end - Duration::weeks(12) - Duration::days(6),
            d.week_end
        )
    }
}

/// A chart drawn for the email: SVG (for the preview) and the PNG the email carries, under a content id.
#[derive(Debug, Clone)]
pub struct Picture {
    pub cid: String,
    pub alt: String,
    pub svg: String,
    pub png: Vec<u8>,
}

/// The digest as a person receives it.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    /// HTML referring to its pictures as `cid:` (for the email).
    pub html: String,
    pub pictures: Vec<Picture>,
}

impl Rendered {
    /// The HTML with pictures inlined as `data:` URIs, for a browser or a review.
    pub fn html_standalone(&self) -> String {
        let mut html = self.html.clone();
        for p in &self.pictures {
            html = html.replace(
                &format!("cid:{}", p.cid),
                &format!("data:image/png;base64,{}", BASE64_STANDARD.encode(&p.png)),
            );
        }
        html
    }
}

/// "+18% (329,395)", or why there is no comparison.
pub(crate) fn comparison(f: &Figure, before: Option<f64>) -> String {
    // A change between counts of people is computed from the published (rounded) counts: from the exact ones, a
    // percentage beside two rounded counts would narrow them.
    let change = if f.people {
        overview::change(published_count(f.now), published_count(before))
    } else {
        overview::change(f.now, before)
    };
    match (change, before) {
        (Some(c), Some(_)) => format!("{:+.0}% ({})", c * 100.0, figure_value(f, before)),
        (None, Some(_)) => format!("n/a ({})", figure_value(f, before)),
        (_, None) => "no data for that week".into(),
    }
}

fn figure_value(f: &Figure, v: Option<f64>) -> String {
    if f.people { people(v) } else { v.map_or_else(|| "n/a".into(), thousands) }
}

// ----- the view both templates read ---------------------------------------------------------------------------

const INCOMPLETE: &str = "Some pages do not have all seven days of this week yet (Meta closes each day a few hours after midnight US-Pacific time): the figures will rise a little.";

enum Status {
    /// The pipelines have not run over the week.
    NoData,
    /// Some pages lack days of the week: the note says so.
    Incomplete(&'static str),
    Complete,
}

struct HeadlineRow {
    label: &'static str,
    /// How the figure was counted (the HTML's tooltip).
    note: &'static str,
    now: String,
    vs_prev: String,
    vs_year: String,
}

struct League {
    heading: &'static str,
    lines: Vec<LeagueLine>,
}

struct LeagueLine {
    href: String,
    name: String,
    code: String,
    per_1000: String,
    engagements: String,
}

/// A picture as the HTML refers to it.
struct Img {
    cid: String,
    alt: String,
}

enum Ages {
    Shown(AgesShown),
    Withheld(AgesWithheld),
    /// Nothing computed for the tenant at all: no section.
    Absent,
}

struct AgesShown {
    /// `25 March` (HTML) and `2018-03-25` (text).
    window_to: String,
    window_to_iso: String,
    rows: Vec<AgeRow>,
    img: Option<Img>,
}

struct AgeRow {
    band: String,
    share: String,
    people: String,
}

struct AgesWithheld {
    note: String,
}

struct CampaignGroup {
    name: String,
    when: String,
    /// (metric in words, effect in words)
    lines: Vec<(String, String)>,
}

struct AttentionLine {
    /// What kind of thing needs attention, in words; `None` for an anomaly a campaign explains.
    what: Option<&'static str>,
    name: String,
    practice: String,
    detail: String,
}

struct PageLinks {
    overview: String,
    practices: String,
    age_bands: String,
    campaigns: String,
    quality: String,
}

/// Everything the digest says, as display strings, for the two templates.
struct DigestView {
    subject: String,
    title: String,
    tenant_name: String,
    week_from: String,
    week_to: String,
    status: Status,
    headline: Vec<HeadlineRow>,
    trend_imgs: Vec<Img>,
    practices_with_data: usize,
    leagues: Vec<League>,
    league_img: Option<Img>,
    ages: Ages,
    campaigns: Vec<CampaignGroup>,
    attention: Vec<AttentionLine>,
    /// "Figures computed on ... from the data for ... to ...".
    computed: Option<String>,
    links: PageLinks,
    unsubscribe: Option<String>,
}

#[derive(Template)]
#[template(path = "digest.html")]
struct DigestHtml<'a>(&'a DigestView);

#[derive(Template)]
#[template(path = "digest.txt")]
struct DigestText<'a>(&'a DigestView);

impl Deref for DigestHtml<'_> {
    type Target = DigestView;
    fn deref(&self) -> &DigestView {
        self.0
    }
}

impl Deref for DigestText<'_> {
    type Target = DigestView;
    fn deref(&self) -> &DigestView {
        self.0
    }
}

fn img(p: &Picture) -> Img {
    Img { cid: p.cid.clone(), alt: p.alt.clone() }
}

fn picture(cid: &str, alt: &str, svg: String) -> AppResult<Picture> {
    let png = crate::raster::png(&svg, 2.0)
        .map_err(|e| AppError::new(ErrorKind::Internal, format!("drawing the {cid} chart: {e}")))?;
    Ok(Picture { cid: cid.into(), alt: alt.into(), svg, png })
}

/// The charts: the trend (reach and engaged users, each on its own axis), the league, the age bands.
fn pictures(d: &Digest) -> AppResult<Vec<Picture>> {
    let mut pictures = Vec::new();
    let labels: Vec<String> = d.trend.iter().map(|t| t.0.format("%-d %b").to_string()).collect();
    // Reach and engaged users differ by an order of magnitude: each on its own axis, one above the other.
    for (cid, name, colour, values) in [
        ("trend", "reach", chart::BLUE, d.trend.iter().map(|t| t.1).collect::<Vec<_>>()),
        ("engaged", "engaged users", chart::ORANGE, d.trend.iter().map(|t| t.2).collect()),
    ] {
        let title = format!("Weekly {name}, last 13 weeks");
        let svg = chart::lines(
            &title,
            &labels,
            &[Series { name: name.into(), colour, values, dashed: false }],
            None,
            600,
            180,
        );
        pictures.push(picture(cid, &format!("Weekly {name} over the last 13 weeks"), svg)?);
    }
    if !d.top.is_empty() {
        let rows: Vec<(String, Option<f64>)> =
            d.top.iter().chain(d.bottom.iter().rev()).map(|p| (p.name.clone(), Some(p.per_1000))).collect();
        let svg =
            chart::bars("Engagements per 1,000 registered patients", &rows, chart::BLUE, 600, &|v| format!("{v:.1}"));
        pictures.push(picture("league", "Engagements per 1,000 registered patients, top and bottom practices", svg)?);
    }
    if d.bands.iter().any(|b| b.penetration.is_some()) {
        let rows: Vec<(String, Option<f64>)> =
            d.bands.iter().map(|b| (b.band.clone(), b.penetration.map(|p| p * 100.0))).collect();
        let svg = chart::bars("Engaged people as % of registered patients, by age", &rows, chart::GREEN, 600, &|v| {
            format!("{v:.1}%")
        });
        pictures.push(picture("ages", "Engaged people as a share of registered patients, by age band", svg)?);
    }
    Ok(pictures)
}

fn ages(d: &Digest, pictures: &[Picture]) -> Ages {
    if let Some(end) = d.bands_window_end {
        Ages::Shown(AgesShown {
            window_to: end.format("%-d %B").to_string(),
            window_to_iso: end.to_string(),
            rows: d
                .bands
                .iter()
                .map(|b| AgeRow {
                    band: b.band.clone(),
                    share: b.penetration.map_or_else(|| "n/a".into(), |p| format!("{:.1}%", p * 100.0)),
                    people: people(b.people),
                })
                .collect(),
            img: pictures.iter().find(|p| p.cid == "ages").map(img),
        })
    } else if let Some(latest) = d.bands_latest_available {
        let note = if latest < d.week_start {
            format!("Not computed for this week yet: the latest 28-day window is to {}.", latest.format("%-d %B %Y"))
        } else {
            format!(
                "No age breakdown for the 28 days to {}: Meta gives none for fewer than 100 people, and none where the \
                 API of the time had no page age metrics.",
                d.week_end.format("%-d %B %Y")
            )
        };
        Ages::Withheld(AgesWithheld { note })
    } else {
        Ages::Absent
    }
}

fn campaign_groups(campaigns: &[CampaignLine]) -> Vec<CampaignGroup> {
    let mut by_campaign: BTreeMap<&str, Vec<&CampaignLine>> = BTreeMap::new();
    for c in campaigns {
        by_campaign.entry(c.name.as_str()).or_default().push(c);
    }
    by_campaign
        .into_iter()
        .map(|(name, lines)| {
            let first = lines[0];
            CampaignGroup {
                name: if first.post_hoc {
                    format!("{name} (post hoc: registered after it started, so read it as exploratory)")
                } else {
                    name.to_owned()
                },
                when: format!(
                    "{} {} to {}",
                    if first.live { "live," } else { "ended," },
                    first.window_from.format("%-d %b"),
                    first.window_to.format("%-d %b %Y")
                ),
                lines: lines.iter().map(|c| (c.metric.replace('_', " "), c.words.clone())).collect(),
            }
        })
        .collect()
}

fn view(d: &Digest, links: &Links, pictures: &[Picture]) -> DigestView {
    let title =
        format!("{}: week of {} to {}", d.tenant_name, d.week_start.format("%-d %B"), d.week_end.format("%-d %B %Y"));
    let status = if !d.has_data() {
        Status::NoData
    } else if !d.complete {
        Status::Incomplete(INCOMPLETE)
    } else {
        Status::Complete
    };
    let headline = d
        .headline
        .iter()
        .map(|f| {
            let (now, vs_prev, vs_year) = match f.now {
                // The week has data but not this figure: Meta retired it (engaged users, from Graph API v19).
                None if d.has_data() => (
                    "not offered".to_owned(),
                    "the Graph API version in use does not report it".to_owned(),
                    String::new(),
                ),
                _ => (figure_value(f, f.now), comparison(f, f.previous), comparison(f, f.last_year)),
            };
            HeadlineRow { label: f.label, note: f.note, now, vs_prev, vs_year }
        })
        .collect();
    let leagues = [("Most engaged", &d.top), ("Least engaged", &d.bottom)]
        .into_iter()
        .filter(|(_, lines)| !lines.is_empty())
        .map(|(heading, lines)| League {
            heading,
            lines: lines
                .iter()
                .map(|p| LeagueLine {
                    href: format!("{}/practices/{}?tenant={}", links.dashboard, p.code, d.tenant),
                    name: p.name.clone(),
                    code: p.code.clone(),
                    per_1000: format!("{:.1}", p.per_1000),
                    engagements: people(Some(p.engagements)),
                })
                .collect(),
        })
        .collect();
    let attention = d
        .alerts
        .iter()
        .chain(&d.anomalies)
        .map(|a| AttentionLine {
            what: match a.kind.as_str() {
                "explained" => None,
                "reauth" => Some("Page needs re-authorising"),
                "token" => Some("Page's connection needs renewing"),
                "stale" => Some("Page has stopped reporting"),
                "gap" => Some("Days missing"),
                "anomaly" => Some("Unusual week"),
                _ => Some("Data check"),
            },
            name: a.name.clone(),
            practice: a.practice.clone(),
            detail: a.detail.clone(),
        })
        .collect();
    // When and over what the figures were computed, in words (the run's id is for operators: `pulse status`).
    let computed = d.run.as_ref().map(|run| {
        let computed = run.computed_at.get(..10).and_then(|d| d.parse::<NaiveDate>().ok());
        let when = computed.map_or_else(|| run.computed_at.clone(), |c| c.format("%-d %B %Y").to_string());
        format!(
            "Figures computed on {when} from the data for {} to {}.",
            run.range_from.format("%-d %B %Y"),
            run.range_to.format("%-d %B %Y")
        )
    });
    DigestView {
        subject: format!("Practice Pulse weekly digest: {title}"),
        title,
        tenant_name: d.tenant_name.clone(),
        week_from: d.week_start.format("%-d %B").to_string(),
        week_to: d.week_end.format("%-d %B %Y").to_string(),
        status,
        headline,
        trend_imgs: pictures.iter().filter(|p| p.cid == "trend" || p.cid == "engaged").map(img).collect(),
        practices_with_data: d.practices_with_data,
        leagues,
        league_img: pictures.iter().find(|p| p.cid == "league").map(img),
        ages: ages(d, pictures),
        campaigns: campaign_groups(&d.campaigns),
        attention,
        computed,
        links: PageLinks {
            overview: links.page(d, "/"),
            practices: links.page(d, "/practices"),
            age_bands: links.page(d, "/age-bands"),
            campaigns: links.page(d, "/campaigns"),
            quality: links.page(d, "/quality"),
        },
        unsubscribe: links.unsubscribe.clone(),
    }
}

/// Renders `d` for one recipient.
pub fn render(d: &Digest, links: &Links) -> AppResult<Rendered> {
    let pictures = pictures(d)?;
    let v = view(d, links, &pictures);
    let failed = |e: askama::Error| AppError::new(ErrorKind::Internal, format!("rendering the digest: {e}"));
    let text = DigestText(&v).render().map_err(failed)?;
    let html = DigestHtml(&v).render().map_err(failed)?;
    Ok(Rendered { subject: v.subject, text, html, pictures })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{Alert, Figure, PracticeLine};

    fn digest() -> Digest {
        let day = |d| NaiveDate::from_ymd_opt(2018, 3, d).unwrap();
        Digest {
            tenant: "north".into(),
            tenant_name: "North <Staffs> & Co".into(),
            week_start: day(19),
            week_end: day(25),
            headline: vec![Figure {
                label: "Reach",
                note: "gross \"sum\"",
                now: Some(1234.0),
                previous: Some(1000.0),
                last_year: None,
                people: true,
            }],
            trend: vec![(day(18), Some(900.0), Some(40.0)), (day(25), Some(1234.0), Some(50.0))],
            top: vec![PracticeLine {
                code: "M83001".into(),
                name: "<script>alert(1)</script>".into(),
                engagements: 100.0,
                registered: 5000.0,
                per_1000: 20.0,
            }],
            bottom: vec![],
            practices_with_data: 1,
            bands: vec![],
            bands_window_end: None,
            bands_latest_available: None,
            campaigns: vec![],
            alerts: vec![Alert {
                kind: "reauth".into(),
                practice: "M83001".into(),
                name: "<b>Surgery</b>".into(),
                detail: "re-link the page".into(),
            }],
            anomalies: vec![],
            complete: false,
            run: None,
        }
    }

    #[test]
    fn the_html_escapes_every_value_and_the_text_keeps_it_as_written() {
        let links =
            Links { dashboard: "https://pulse.example".into(), unsubscribe: Some("https://u.example/?a=1&b=2".into()) };
        let r = render(&digest(), &links).unwrap();
        for raw in ["<script>", "<b>Surgery", "North <Staffs>", "gross \"sum\"", "?a=1&b=2"] {
            assert!(!r.html.contains(raw), "{raw} reached the HTML unescaped");
        }
        assert!(r.html.contains("alert(1)") && r.html.contains("Surgery"), "the names are there, escaped");
        for written in [
            "<script>alert(1)</script> (M83001): 20.0 per 1,000",
            "Page needs re-authorising: <b>Surgery</b> (M83001)",
            "Stop these emails: https://u.example/?a=1&b=2",
        ] {
            assert!(r.text.contains(written), "{written} missing from the text:\n{}", r.text);
        }
        // One view, two parts: the same sections in the same order, and the note of an incomplete week in both.
        let order = |doc: &str, marks: &[&str]| {
            marks.iter().map(|m| doc.find(m).unwrap_or_else(|| panic!("{m} in {doc}"))).collect::<Vec<_>>()
        };
        let text_at = order(&r.text, &["THE WEEK", "PRACTICES", "CAMPAIGNS", "NEEDS ATTENTION"]);
        let html_at = order(&r.html, &[">The week<", ">Practices: ", ">Campaigns<", ">Needs attention<"]);
        assert!(text_at.is_sorted() && html_at.is_sorted());
        assert!(r.text.contains("do not have all seven days") && r.html.contains("do not have all seven days"));
        assert_eq!(r.pictures.len(), 3, "trend, engaged, league");
        assert!(r.html.contains("src=\"cid:league\""));
    }

    /// Delivery renders once with a placeholder link and puts each recipient's own link in its place: the
    /// placeholder must come through the template's escaping unchanged, in both parts, or no one could unsubscribe.
    #[test]
    fn the_unsubscribe_placeholder_survives_escaping_in_both_parts() {
        let placeholder = crate::delivery::UNSUBSCRIBE_PLACEHOLDER;
        let links = Links { dashboard: "https://pulse.example".into(), unsubscribe: Some(placeholder.into()) };
        let r = render(&digest(), &links).unwrap();
        assert!(r.text.contains(&format!("Stop these emails: {placeholder}")));
        assert!(r.html.contains(&format!("href=\"{placeholder}\">Unsubscribe</a>")), "{}", r.html);
    }
}
