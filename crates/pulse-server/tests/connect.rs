//! Connecting practices' pages end to end on the simulator's Facebook Login: an admin's invitation, the connect page,
//! the consent dialog, the code and long-lived token exchanges, the page chosen, the token sealed in the vault, and
//! the next ingest reading that page with it. Every refusal the issue names: a forged `state`, a callback in another
//! browser, a reused invitation, an expired one, a declined permission, a cancelled login, a page that is not the
//! practice's, a page another organisation has connected. Then a token killed in the simulator is found by the
//! token check, which makes a re-authorisation link; going through it replaces the token and ingest resumes. No
//! token is in the log or anywhere in the lake.
//!
//! `connect_browser.py` drives the same flow in headless Chromium (skipped without it unless
//! `PULSE_REQUIRE_BROWSER=1`, which CI sets).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, Utc};
use common::{captured_logs, chromium, client, free_port, serve_at};
use pulse_app::keys::KeyScope;
use pulse_config::Config;
use pulse_sim::{Sim, World};
use pulse_store::Store;

const APP_SECRET: &str = "sim-app-secret-for-the-connect-test-0001";
const VAULT_KEY: &str = "4f1c2b7e9a8d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615e4d3";

struct World2 {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    sim: pulse_sim::RunningSim,
    config: Config,
    served: common::Served,
    /// A practice of the first tenant whose page the simulator has but the config does not list (the config was
    /// written without it), and that page: its manager connects it through an invitation.
    unlisted: Option<(String, String)>,
}

/// The case-study world on a simulator that requires the app secret, a config without any page token (the
/// simulator's secrets file is not written) but with a vault and onboarding, and the server over it.
async fn setup() -> World2 {
    setup_with(false).await
}

/// As [`setup`]; with `csv`, each tenant's practices (and their pages, without tokens) come from a practices CSV,
/// as a real deployment starts.
async fn setup_with(csv: bool) -> World2 {
    let _ = captured_logs();
    let scenario = pulse_sim::scenario::resolve("case-study").unwrap();
    let world = World::new(scenario, None);
    let sim = pulse_sim::start(Arc::new(Sim::new(world, Some(APP_SECRET.into()))), 0).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let path = if csv {
        let path = pulse_demo::write_config(&sim.sim.world, &dir, None).unwrap();
        let toml = std::fs::read_to_string(&path).unwrap().replacen(
            "[graph]\n",
            &format!("[graph]\nbase_url = \"{}\"\n", sim.url()),
            1,
        );
        assert!(toml.contains("practices_csv = "), "{toml}");
        std::fs::write(&path, toml).unwrap();
        path
    } else {
        let path = pulse_demo::write_config(&sim.sim.world, &dir, Some(&sim.url())).unwrap();
        std::fs::remove_file(dir.join("sim-tokens.secrets.toml")).unwrap();
        path
    };
    // The first tenant's last practice with a page loses it from the config (not from the simulator).
    let unlisted = (!csv).then(|| {
        let world = &sim.sim.world;
        let page = world.pages.iter().rev().find(|p| world.practices[p.practice].tenant == 0).expect("a page");
        let practice = world.practices[page.practice].code.to_string();
        let toml = std::fs::read_to_string(&path).unwrap();
        let start = toml.find(&format!("[[tenant.practice.page]]\nid = \"{}\"", page.id)).expect("the page's block");
        let end = start + toml[start..].find("}\n").expect("its token line") + 2;
        std::fs::write(&path, format!("{}{}", &toml[..start], &toml[end..])).unwrap();
        (practice, page.id.clone())
    });
    std::fs::write(dir.join("app.secrets.toml"), format!("app = \"{APP_SECRET}\"\nvault = \"{VAULT_KEY}\"\n")).unwrap();
    let port = free_port();
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml = toml.replacen(
        "[graph]\n",
        &format!(
            "[graph]\napp_id = \"{}\"\napp_secret = {{ file = \"app.secrets.toml\", key = \"app\" }}\n",
            sim.sim.world.scenario.world.app_id
        ),
        1,
    );
    toml.push_str(&format!(
        "\n[vault]\nkey = {{ file = \"app.secrets.toml\", key = \"vault\" }}\n\n[onboarding]\npublic_url = \"http://127.0.0.1:{port}\"\ndialog_url = \"{}\"\n",
        sim.url()
    ));
    std::fs::write(&path, toml).unwrap();
    let config = pulse_config::load(&path).expect("config loads");
    let store = pulse_app::open::store(&config).unwrap();
    store.migrate().await.unwrap();
    let served = serve_at(config.clone(), &format!("127.0.0.1:{port}")).await;
    assert!(
        unlisted.as_ref().is_none_or(|(p, _)| config.tenants[0]
            .practices
            .iter()
            .any(|x| x.code.as_str() == p && x.pages.is_empty()))
    );
    World2 { _dir: tmp, dir, sim, config, served, unlisted }
}

fn tenant_of(w: &World2, i: usize) -> String {
    w.config.tenants[i].id.to_string()
}

/// A practice of tenant `i` with a page (`true`) or without one.
fn practice(w: &World2, i: usize, with_page: bool) -> (String, Option<String>) {
    let unlisted = w.unlisted.as_ref().map(|u| u.0.as_str());
    let p = w.config.tenants[i]
        .practices
        .iter()
        .find(|p| p.pages.is_empty() != with_page && Some(p.code.as_str()) != unlisted)
        .expect("such a practice");
    (p.code.to_string(), p.pages.first().map(|pg| pg.id.to_string()))
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")).map(|r| r.split(';').next().unwrap_or("").to_owned()))
}

fn params(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker).unwrap_or_else(|| panic!("no hidden {name} in {html}")) + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

async fn invite(w: &World2, key: &str, tenant: &str, practice: &str) -> String {
    let resp = client()
        .post(format!("{}/api/v1/invitations", w.served.url))
        .bearer_auth(key)
        .json(&serde_json::json!({"tenant": tenant, "practices": [practice]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let body: serde_json::Value = resp.json().await.unwrap();
    body["invitations"][0]["link"].as_str().unwrap().to_owned()
}

/// Invitations for every practice of `tenant` without a working token (the API's `all_without_token`).
async fn invite_all(w: &World2, key: &str, tenant: &str) -> Vec<serde_json::Value> {
    let resp = client()
        .post(format!("{}/api/v1/invitations", w.served.url))
        .bearer_auth(key)
        .json(&serde_json::json!({"tenant": tenant, "all_without_token": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    body["invitations"].as_array().unwrap().clone()
}

/// The invitation link to the consent dialog's answer: (the callback URL Facebook sends the browser to, the
/// browser's binding cookie). `grant` lists the permissions left ticked; `allow` false presses Cancel.
async fn consent(w: &World2, link: &str, user: &str, grant: &[&str], allow: bool) -> (String, String) {
    let http = client();
    let page = http.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Continue with Facebook") && html.contains("read_insights"), "{html}");
    let invitation = hidden(&html, "invitation");
    let start = http
        .post(format!("{}/connect/start", w.served.url))
        .form(&[("invitation", invitation.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303, "{}", start.text().await.unwrap());
    let binding = set_cookie(&start, "pulse_connect").expect("binding cookie");
    let dialog = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(dialog.starts_with(&format!("{}/", w.sim.url())) && dialog.contains("/dialog/oauth?"), "{dialog}");
    let p = params(&dialog);
    assert_eq!(p["scope"], "pages_show_list,pages_read_engagement,read_insights", "only what ingest needs");
    assert!(!dialog.contains(APP_SECRET));
    let consent = http.get(&dialog).send().await.unwrap().text().await.unwrap();
    assert!(consent.contains(user), "{user} can log in: {consent}");
    let mut form: Vec<(&str, &str)> = vec![
        ("user", user),
        ("redirect_uri", &p["redirect_uri"]),
        ("state", &p["state"]),
        ("scope", &p["scope"]),
        ("client_id", &p["client_id"]),
        ("decision", if allow { "allow" } else { "cancel" }),
    ];
    form.extend(grant.iter().map(|g| ("grant", *g)));
    let back = http.post(format!("{}/dialog/oauth/confirm", w.sim.url())).form(&form).send().await.unwrap();
    assert_eq!(back.status(), 302);
    (back.headers()["location"].to_str().unwrap().to_owned(), binding)
}

const ALL: [&str; 3] = ["pages_show_list", "pages_read_engagement", "read_insights"];

/// Through the callback to the chooser: its HTML and the state to choose with.
async fn chooser(callback: &str, binding: &str) -> (u16, String) {
    let resp = client().get(callback).header("cookie", format!("pulse_connect={binding}")).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn choose(w: &World2, state: &str, binding: &str, page: &str) -> (u16, String) {
    let resp = client()
        .post(format!("{}/connect/choose", w.served.url))
        .header("cookie", format!("pulse_connect={binding}"))
        .form(&[("state", state), ("page", page)])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Every file under `dir`, as bytes.
fn every_file(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The first tenant's practices with a claimed page, as the regional view counts them.
async fn region_claimed(w: &World2, key: &str) -> u64 {
    let resp = client().get(format!("{}/api/v1/region", w.served.url)).bearer_auth(key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let t =
        body["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == w.config.tenants[0].id.as_str()).cloned();
    t.unwrap_or_else(|| panic!("{body}"))["claimed"].as_u64().unwrap()
}

/// A practice of the first tenant without a page in the config.
fn p0_of(w: &World2) -> String {
    practice(w, 0, false).0
}

async fn ingest(w: &World2, tenant: &str) -> pulse_app::ingest::IngestRun {
    let today = w.sim.sim.today();
    let request = pulse_app::ingest::IngestRequest {
        tenants: vec![tenant.to_owned()],
        since: Some(today - Duration::days(10)),
        today: Some(today),
        lookback_days: 1,
        concurrency: 4,
        ..Default::default()
    };
    pulse_app::ingest::run(&w.config, &request, |_| {}).await.expect("ingest runs")
}

/// The run read `page` without a failure or a re-authorisation.
fn clean(run: &pulse_app::ingest::IngestRun, page: &str) -> bool {
    run.report.reauth.iter().all(|r| r.page != page) && run.report.failures.iter().all(|f| f.page != page)
}

async fn rows_of(w: &World2, tenant: &str, page: &str) -> usize {
    let store = pulse_app::open::store(&w.config).unwrap();
    let scope = w.config.operator_access().scope(tenant).unwrap();
    let facts = store
        .read_page_insights(
            &scope,
            &pulse_store::FactFilter::days(w.sim.sim.today() - Duration::days(30), w.sim.sim.today()),
        )
        .await
        .unwrap();
    facts.iter().filter(|f| f.page.as_str() == page).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_practice_manager_connects_the_page_and_every_misuse_is_refused() {
    let w = setup().await;
    let (a, b) = (tenant_of(&w, 0), tenant_of(&w, 1));
    let admin = common::key(&w.config, &[a.as_str()], &[KeyScope::Read, KeyScope::Admin]);
    let reader = common::key(&w.config, &[a.as_str()], &[KeyScope::Read]);
    let (p1, page1) = practice(&w, 0, true);
    let page1 = page1.unwrap();
    let manager = pulse_sim::login::manager_of(&p1);

    // Only admins invite; an analyst's key is refused.
    let refused = client()
        .post(format!("{}/api/v1/invitations", w.served.url))
        .bearer_auth(&reader)
        .json(&serde_json::json!({"tenant": a, "practices": [p1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // Nothing is ingested for the tenant before: no page has a token.
    let store = pulse_app::open::store(&w.config).unwrap();
    let (targets, skipped) = pulse_app::ingest::targets(&store, &w.config, std::slice::from_ref(&a)).await.unwrap();
    assert!(targets.is_empty() && !skipped.is_empty());

    // Every practice without a working token can be invited at once (here: all of the tenant's).
    let all = invite_all(&w, &admin, &a).await;
    assert_eq!(all.len(), w.config.tenants[0].practices.len());
    // An admin withdraws one: its link stops working at once.
    let withdrawn = all[0].clone();
    let resp = client()
        .post(format!("{}/api/v1/invitations/{}/revoke", w.served.url, withdrawn["id"].as_str().unwrap()))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = client().get(withdrawn["link"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("was withdrawn"));

    // The whole way: invitation, consent, callback, the practice's page chosen, connected.
    let link = invite(&w, &admin, &a, &p1).await;
    assert!(link.starts_with(&format!("{}/connect?invitation=inv1.", w.served.url)), "{link}");
    let (callback, binding) = consent(&w, &link, &manager, &ALL, true).await;
    assert!(callback.starts_with(&format!("{}/connect/callback?", w.served.url)), "{callback}");
    let (status, html) = chooser(&callback, &binding).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&page1) && html.contains("page in our records"), "{html}");
    let state = hidden(&html, "state");
    // The callback cannot be replayed: its code and state are spent.
    let (status, again) = chooser(&callback, &binding).await;
    assert_eq!(status, 400, "{again}");
    let (status, done) = choose(&w, &state, &binding, &page1).await;
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("is now connected"), "{done}");

    // The next ingest reads that page with the vault's token.
    let (targets, _) = pulse_app::ingest::targets(&store, &w.config, std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(targets.iter().map(|t| t.page.to_string()).collect::<Vec<_>>(), vec![page1.clone()]);
    let run = ingest(&w, &a).await;
    assert!(clean(&run, &page1) && run.report.rows_written > 0, "{}", run.closing());
    let before = rows_of(&w, &a, &page1).await;
    assert!(before > 0, "the connected page's insights were stored");

    // The invitation worked once.
    let reused = client()
        .post(format!("{}/connect/start", w.served.url))
        .form(&[("invitation", params(&link)["invitation"].as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 403);
    assert!(reused.text().await.unwrap().contains("already been used"));

    // A forged state, and a callback in another browser.
    let others: Vec<(String, String)> = w.config.tenants[0]
        .practices
        .iter()
        .filter(|p| !p.pages.is_empty() && p.code.as_str() != p1)
        .map(|p| (p.code.to_string(), p.pages[0].id.to_string()))
        .collect();
    let (p2, page2b) = others[0].clone();
    let link2 = invite(&w, &admin, &a, &p2).await;
    let (callback2, binding2) = consent(&w, &link2, &pulse_sim::login::manager_of(&p2), &ALL, true).await;
    let forged = callback2.replace(&params(&callback2)["state"], "forged-state");
    let (status, html) = chooser(&forged, &binding2).await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("was not started here"));
    let (status, html) = chooser(&callback2, "another-browser").await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("started in another browser"));

    // A declined permission: refused, saying which; the invitation still works afterwards.
    let (callback3, binding3) =
        consent(&w, &link2, &pulse_sim::login::manager_of(&p2), &["pages_show_list", "pages_read_engagement"], true)
            .await;
    let (status, html) = chooser(&callback3, &binding3).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("was not granted read_insights"), "{html}");
    // A cancelled login.
    let (callback4, binding4) = consent(&w, &link2, &pulse_sim::login::manager_of(&p2), &ALL, false).await;
    let (status, html) = chooser(&callback4, &binding4).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("did not finish"), "{html}");

    // A page that is not the practice's: the federation's admin picks another practice's page.
    let (callback5, binding5) = consent(&w, &link2, pulse_sim::login::FEDERATION_ADMIN, &ALL, true).await;
    let (status, html) = chooser(&callback5, &binding5).await;
    assert_eq!(status, 200, "{html}");
    let state5 = hidden(&html, "state");
    let (status, html) = choose(&w, &state5, &binding5, &page1).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("is not") && html.contains("page in our records"), "{html}");
    // Still usable: the practice's own page connects.
    let (callback6, binding6) = consent(&w, &link2, pulse_sim::login::FEDERATION_ADMIN, &ALL, true).await;
    let (_, html) = chooser(&callback6, &binding6).await;
    let (status, html) = choose(&w, &hidden(&html, "state"), &binding6, &page2b).await;
    assert_eq!(status, 200, "{html}");

    // Two windows with one invitation, choosing at once: exactly one connects.
    let (p3, page3) = others[1].clone();
    let link3 = invite(&w, &admin, &a, &p3).await;
    let (cb_a, bind_a) = consent(&w, &link3, &pulse_sim::login::manager_of(&p3), &ALL, true).await;
    let (cb_b, bind_b) = consent(&w, &link3, &pulse_sim::login::manager_of(&p3), &ALL, true).await;
    let (_, html_a) = chooser(&cb_a, &bind_a).await;
    let (_, html_b) = chooser(&cb_b, &bind_b).await;
    let (state_a, state_b) = (hidden(&html_a, "state"), hidden(&html_b, "state"));
    let (ra, rb) = tokio::join!(choose(&w, &state_a, &bind_a, &page3), choose(&w, &state_b, &bind_b, &page3));
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, [200, 403], "{ra:?} {rb:?}");
    let used3 = pulse_app::onboarding::list(&store, &w.config.operator_access(), &a).await.unwrap();
    assert_eq!(used3.iter().filter(|i| i.practice == p3 && i.state == "used").count(), 1);
    // A page of the same organisation's other practice cannot be taken either.
    let link3b = invite(&w, &admin, &a, &p0_of(&w)).await;
    let (cb, bind) = consent(&w, &link3b, pulse_sim::login::FEDERATION_ADMIN, &ALL, true).await;
    let (_, html) = chooser(&cb, &bind).await;
    let (status, html) = choose(&w, &hidden(&html, "state"), &bind, &page3).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains(&format!("practice {p3}")), "{html}");

    // A page another organisation connected: a practice without a page in the config invites; its manager (the
    // federation's admin) picks a page tenant B connected.
    let (p0, _) = practice(&w, 0, false);
    let (pb, page_b) = practice(&w, 1, true);
    let vault = pulse_app::vault::Vault::from_config(&w.config).unwrap().unwrap();
    pulse_app::vault::put(
        &store,
        &w.config,
        &vault,
        &b,
        &pb,
        page_b.as_deref().unwrap(),
        &pulse_config::Secret::new("x"),
        "test",
        Utc::now(),
    )
    .await
    .unwrap();
    let link0 = invite(&w, &admin, &a, &p0).await;
    let (callback7, binding7) = consent(&w, &link0, pulse_sim::login::FEDERATION_ADMIN, &ALL, true).await;
    let (_, html) = chooser(&callback7, &binding7).await;
    let (status, html) = choose(&w, &hidden(&html, "state"), &binding7, page_b.as_deref().unwrap()).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("another organisation") && !html.contains(&b), "{html}");

    // The practice whose page the config does not list: its manager connects it and says it is a claimed page;
    // the ingester reads it for that practice, and the regional view counts the practice as having a claimed page.
    let (px, page_x) = w.unlisted.clone().unwrap();
    let region_before = region_claimed(&w, &admin).await;
    let linkx = invite(&w, &admin, &a, &px).await;
    let (cb, bind) = consent(&w, &linkx, &pulse_sim::login::manager_of(&px), &ALL, true).await;
    let (_, html) = chooser(&cb, &bind).await;
    assert!(html.contains("Is this the practice") && html.contains("name=\"kind\""), "{html}");
    let resp = client()
        .post(format!("{}/connect/choose", w.served.url))
        .header("cookie", format!("pulse_connect={bind}"))
        .form(&[("state", hidden(&html, "state").as_str()), ("page", page_x.as_str()), ("kind", "claimed")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let (targets, _) = pulse_app::ingest::targets(&store, &w.config, std::slice::from_ref(&a)).await.unwrap();
    assert!(targets.iter().any(|t| t.page.as_str() == page_x && t.practice.as_str() == px), "read for its practice");
    assert_eq!(region_claimed(&w, &admin).await, region_before + 1);

    // An expired invitation.
    let old = pulse_app::onboarding::invite(
        &store,
        &w.config,
        &w.config.operator_access(),
        &a,
        std::slice::from_ref(&p0),
        "test",
        Utc::now() - Duration::days(30),
    )
    .await
    .unwrap();
    let resp = client().get(&old[0].link).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("expired on"));
    // A link cut short, or with a wrong secret.
    let cut = &link0[..link0.len() - 4];
    let resp = client().get(cut).send().await.unwrap();
    assert_eq!(resp.status(), 403);

    // The token dies (the manager changed their password): the daily check finds it and makes a link.
    let killed =
        client().post(format!("{}/_sim/tokens/kill?page={page1}&subcode=460", w.sim.url())).send().await.unwrap();
    assert_eq!(killed.status(), 200);
    let checked = pulse_app::health::check(&store, &w.config, std::slice::from_ref(&a), Utc::now()).await.unwrap();
    let h = checked.pages.iter().find(|(_, h)| h.page == page1).map(|(_, h)| h.clone()).expect("page 1 checked");
    assert_eq!(h.state, "invalid", "{h:?}");
    assert!(h.problem.as_deref().unwrap().contains("changed their Facebook password"));
    let healthy = checked.pages.iter().find(|(_, h)| h.page == page2b).unwrap();
    assert_eq!(healthy.1.state, "ok", "{healthy:?}");
    let scope = w.config.operator_access().scope(&a).unwrap();
    let attention = pulse_app::health::attention(&store, &w.config, &scope).await.unwrap();
    assert_eq!(attention.len(), 1, "{attention:?}");
    let relink = attention[0].link.clone().expect("a re-authorisation link");
    // A second check keeps the same open invitation rather than making another.
    pulse_app::health::check(&store, &w.config, std::slice::from_ref(&a), Utc::now()).await.unwrap();
    assert_eq!(
        pulse_app::health::attention(&store, &w.config, &scope).await.unwrap()[0].link.as_deref(),
        Some(relink.as_str())
    );
    // Ingest meanwhile reports the page as needing re-authorisation.
    let run = ingest(&w, &a).await;
    assert!(run.report.reauth.iter().any(|r| r.page == page1), "{}", run.closing());
    // The data-quality page shows it with the link, to an analyst of the tenant.
    pulse_app::jobs::run(&w.config, &pulse_app::jobs::JobsRequest { tenants: vec![a.clone()], ..Default::default() })
        .await
        .expect("jobs run");
    let session = common::dashboard_session(&w.served.url, &reader).await;
    let quality = client().get(format!("{}/quality", w.served.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(quality.status(), 200);
    let html = quality.text().await.unwrap();
    assert!(
        html.contains("Found by the daily token check") && html.contains("changed their Facebook password"),
        "{html}"
    );
    assert!(
        html.contains(&relink.replace('&', "&amp;")) || html.contains(&relink),
        "the re-authorisation link is on the page"
    );
    // And the weekly digest, with the same link, first among what to look at.
    let week = pulse_digest::digest::last_whole_week(w.sim.sim.today());
    let digest = pulse_digest::digest::build(&store, &w.config, &a, week).await.expect("digest builds");
    let first = digest.alerts.first().expect("an alert");
    assert_eq!(first.kind, "token");
    assert!(first.detail.contains(&relink) && first.detail.contains("changed their Facebook password"), "{first:?}");
    let links = pulse_digest::render::Links { dashboard: w.served.url.clone(), unsubscribe: None };
    let rendered = pulse_digest::render::render(&digest, &links).unwrap();
    assert!(
        rendered.text.contains("Page's connection needs renewing") && rendered.text.contains(&relink),
        "{}",
        rendered.text
    );
    // Invitations on the dashboard are for admins: an analyst is refused, an admin invites and sees the link once.
    let refused =
        client().get(format!("{}/invitations", w.served.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let admin_session = common::dashboard_session(&w.served.url, &admin).await;
    let page =
        client().get(format!("{}/invitations", w.served.url)).header("cookie", &admin_session).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Make the invitation") && html.contains("token health check"), "{html}");
    let csrf = hidden(&html, "csrf");
    let made = client()
        .post(format!("{}/invitations", w.served.url))
        .header("cookie", &admin_session)
        .form(&[("csrf", csrf.as_str()), ("practice", p0.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    let html = made.text().await.unwrap();
    assert!(html.contains("/connect?invitation=inv1."), "{html}");
    let forged = client()
        .post(format!("{}/invitations", w.served.url))
        .header("cookie", &admin_session)
        .form(&[("csrf", "forged"), ("practice", p0.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // The re-authorisation link renews that page only: another page is refused, even one its holder administers.
    let (cb, bind) = consent(&w, &relink, pulse_sim::login::FEDERATION_ADMIN, &ALL, true).await;
    let (_, html) = chooser(&cb, &bind).await;
    let (status, html) = choose(&w, &hidden(&html, "state"), &bind, page_b.as_deref().unwrap()).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains(&format!("this link renews the connection of page {page1} only")), "{html}");

    // Re-authorising through the link replaces the token; ingest resumes from the checkpoint.
    let (callback8, binding8) = consent(&w, &relink, &manager, &ALL, true).await;
    let (_, html) = chooser(&callback8, &binding8).await;
    let (status, html) = choose(&w, &hidden(&html, "state"), &binding8, &page1).await;
    assert_eq!(status, 200, "{html}");
    let checked = pulse_app::health::check(&store, &w.config, std::slice::from_ref(&a), Utc::now()).await.unwrap();
    assert!(checked.pages.iter().all(|(_, h)| h.state == "ok"), "{checked:?}");
    assert!(pulse_app::health::attention(&store, &w.config, &scope).await.unwrap().is_empty());
    let run = ingest(&w, &a).await;
    assert!(clean(&run, &page1) && run.report.rows_written > 0, "{}", run.closing());
    assert!(rows_of(&w, &a, &page1).await >= before);

    // Eighty days on (simulated), data access ends within 14 days: the check says so for both pages.
    let today = w.sim.sim.today();
    w.sim.sim.set_today(today + Duration::days(80));
    let checked = pulse_app::health::check(&store, &w.config, std::slice::from_ref(&a), Utc::now()).await.unwrap();
    w.sim.sim.set_today(today);
    assert!(
        checked
            .pages
            .iter()
            .all(|(_, h)| h.state == "expiring" && h.problem.as_deref().unwrap().starts_with("data access ends on")),
        "{checked:?}"
    );
    assert_eq!(pulse_app::health::attention(&store, &w.config, &scope).await.unwrap().len(), 4);

    // The audit: who invited which practice, which page each invitation connected.
    let list = pulse_app::onboarding::list(&store, &w.config.operator_access(), &a).await.unwrap();
    let used: Vec<_> =
        list.iter().filter(|i| i.state == "used").map(|i| (i.practice.as_str(), i.page.as_deref())).collect();
    assert!(
        used.contains(&(p1.as_str(), Some(page1.as_str()))) && used.contains(&(p2.as_str(), Some(page2b.as_str()))),
        "{used:?}"
    );
    assert!(
        list.iter().any(|i| i.created_by.starts_with("key "))
            && list.iter().any(|i| i.created_by == "token health check")
    );
    let entries = pulse_app::vault::entries(&store, &scope).await.unwrap();
    assert!(entries[&page1].by.contains(&format!("{manager} (Facebook user ")), "{:?}", entries[&page1]);

    // No token anywhere: the vault's tokens, opened with its key, are in no file of the lake or the config's
    // directory and in no log line; nor is the app secret, nor any token the simulator issued.
    let tokens = pulse_app::vault::tokens(&store, &vault, &scope).await.unwrap();
    let mut secrets: Vec<String> = tokens.values().map(|t| t.as_ref().unwrap().expose().to_owned()).collect();
    assert_eq!(secrets.len(), 4);
    secrets.push(APP_SECRET.into());
    let logs = String::from_utf8(captured_logs().lock().unwrap().clone()).unwrap();
    for (path, bytes) in every_file(&w.dir) {
        if path.ends_with("app.secrets.toml") {
            continue;
        }
        for s in &secrets {
            assert!(!contains(&bytes, s.as_bytes()), "a token is in {}", path.display());
        }
        for prefix in ["SIMPAGE", "SIMUSER", "SIMCODE"] {
            assert!(!contains(&bytes, prefix.as_bytes()), "a simulator token is in {}", path.display());
        }
    }
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a token reached the log");
    }
    for prefix in ["SIMPAGE", "SIMUSER", "SIMCODE", "inv1."] {
        assert!(!logs.contains(prefix), "{prefix}... reached the log");
    }
    assert!(logs.contains("page connected"), "connections are logged (without tokens)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_chromium_an_invitation_leads_through_consent_to_a_connected_page() {
    let Some(browser) = chromium() else {
        if std::env::var("PULSE_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("PULSE_REQUIRE_BROWSER=1 but no Chromium runs here (apt-get install chromium)");
        }
        eprintln!("skipped: no Chromium (apt-get install chromium, or set PULSE_CHROMIUM)");
        return;
    };
    let w = setup().await;
    let a = tenant_of(&w, 0);
    let admin = common::key(&w.config, &[a.as_str()], &[KeyScope::Read, KeyScope::Admin]);
    let (p1, page1) = practice(&w, 0, true);
    let page1 = page1.unwrap();
    let link = invite(&w, &admin, &a, &p1).await;
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("connect-screenshots");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/connect_browser.py");
    let manager = pulse_sim::login::manager_of(&p1);
    let args: Vec<String> = vec![
        script.into(),
        "--chromium".into(),
        browser,
        "--link".into(),
        link.clone(),
        "--user".into(),
        manager,
        "--page".into(),
        page1.clone(),
        "--out".into(),
        out.display().to_string(),
    ];
    let status = tokio::task::spawn_blocking(move || std::process::Command::new("python3").args(&args).status())
        .await
        .unwrap()
        .expect("python3 runs");
    assert!(status.success(), "the connect flow in the browser failed (see above)");
    let store = pulse_app::open::store(&w.config).unwrap();
    let (targets, _) = pulse_app::ingest::targets(&store, &w.config, std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(targets.iter().map(|t| t.page.to_string()).collect::<Vec<_>>(), vec![page1]);
}

/// From a practices CSV to every page connected, without a secrets file: one request invites every practice
/// without a working token, each manager goes through their link, and the next ingest reads every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_goes_from_its_practices_csv_to_every_page_connected() {
    let w = setup_with(true).await;
    let a = tenant_of(&w, 0);
    let admin = common::key(&w.config, &[a.as_str()], &[KeyScope::Read, KeyScope::Admin]);
    let tenant = &w.config.tenants[0];
    let with_page: Vec<(String, String)> = tenant
        .practices
        .iter()
        .filter_map(|p| p.pages.first().map(|pg| (p.code.to_string(), pg.id.to_string())))
        .collect();
    assert!(with_page.len() >= 5, "the CSV lists the practices' pages");
    let invitations = invite_all(&w, &admin, &a).await;
    assert_eq!(invitations.len(), tenant.practices.len());
    for inv in &invitations {
        let practice = inv["practice"].as_str().unwrap();
        let Some((_, page)) = with_page.iter().find(|(p, _)| p == practice) else { continue };
        let (callback, binding) =
            consent(&w, inv["link"].as_str().unwrap(), &pulse_sim::login::manager_of(practice), &ALL, true).await;
        let (status, html) = chooser(&callback, &binding).await;
        assert_eq!(status, 200, "{html}");
        let (status, html) = choose(&w, &hidden(&html, "state"), &binding, page).await;
        assert_eq!(status, 200, "{practice}: {html}");
    }
    let store = pulse_app::open::store(&w.config).unwrap();
    let (targets, skipped) = pulse_app::ingest::targets(&store, &w.config, std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(targets.len(), with_page.len(), "every page has its token: {skipped:?}");
    assert!(skipped.is_empty(), "{skipped:?}");
    let left = pulse_app::onboarding::practices_without_token(&store, &w.config, &a).await.unwrap();
    assert_eq!(left.len(), tenant.practices.len() - with_page.len(), "only practices without a page are left");
    let run = ingest(&w, &a).await;
    assert!(run.report.reauth.is_empty() && run.report.failures.is_empty(), "{}", run.closing());
    for (_, page) in &with_page {
        assert!(rows_of(&w, &a, page).await > 0, "page {page} was read");
    }
}
