//! The simulator's Facebook Login: consent, code and long-lived exchanges, permissions, `/me/accounts` paging, page
//! tokens that the rest of the simulator accepts, `debug_token` of them, and tokens that die or lapse.

use chrono::Duration;
use pulse_graph::wire::{AccountsResponse, DebugTokenResponse, GraphErrorBody, OAuthToken, PermissionsResponse};
use pulse_sim::login::{FEDERATION_ADMIN, PERMISSIONS, manager_of};
use pulse_sim::{Request, Response, Sim, World, scenario};

const SECRET: &str = "app-secret";

fn sim() -> Sim {
    Sim::new(World::new(scenario::resolve("case-study").unwrap(), None), Some(SECRET.into()))
}

fn post(sim: &Sim, path: &str, form: &[(&str, &str)]) -> Response {
    let req = Request {
        method: "POST".into(),
        path: path.into(),
        form: form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Request::default()
    };
    sim.handle(&req)
}

/// A GET with `token`; calls to `/me` carry `appsecret_proof` (the app requires it).
fn get_as(sim: &Sim, path: &str, token: &str, query: &[(&str, &str)]) -> Response {
    let mut req = Request::get(path, query);
    req.bearer = Some(token.into());
    if path.contains("/me") {
        req.query.push(("appsecret_proof".into(), pulse_sim::api::appsecret_proof(SECRET, token)));
    }
    sim.handle(&req)
}

/// `debug_token` of `token`, asked with the app's token.
fn debug(sim: &Sim, token: &str) -> Response {
    let app = format!("{}|{SECRET}", app_id(sim));
    sim.handle(&Request::get("/v2.12/debug_token", &[("input_token", token), ("access_token", &app)]))
}

fn ok<T: serde::de::DeserializeOwned>(resp: &Response) -> T {
    assert_eq!(resp.status, 200, "{}", resp.body);
    serde_json::from_str(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.body))
}

fn err(resp: &Response) -> pulse_graph::GraphError {
    assert_ne!(resp.status, 200, "{}", resp.body);
    serde_json::from_str::<GraphErrorBody>(&resp.body).unwrap().error
}

fn app_id(sim: &Sim) -> String {
    sim.world.scenario.world.app_id.clone()
}

/// Consent as `user` granting `grant`; the code from the redirect.
fn code(sim: &Sim, user: &str, grant: &[&str]) -> String {
    let id = app_id(sim);
    let dialog = sim.handle(&Request::get(
        "/v2.12/dialog/oauth",
        &[
            ("client_id", &id),
            ("redirect_uri", "http://127.0.0.1:1/cb"),
            ("state", "s1"),
            ("response_type", "code"),
            ("scope", &PERMISSIONS.join(",")),
        ],
    ));
    assert_eq!(dialog.status, 200, "{}", dialog.body);
    assert!(dialog.body.contains(user) && PERMISSIONS.iter().all(|p| dialog.body.contains(p)));
    let mut form = vec![
        ("user", user),
        ("redirect_uri", "http://127.0.0.1:1/cb"),
        ("state", "s1"),
        ("scope", "pages_show_list,pages_read_engagement,read_insights"),
        ("decision", "allow"),
    ];
    form.extend(grant.iter().map(|g| ("grant", *g)));
    let resp = post(sim, "/dialog/oauth/confirm", &form);
    assert_eq!(resp.status, 302);
    let location = &resp.headers.iter().find(|(k, _)| k == "location").unwrap().1;
    assert!(location.starts_with("http://127.0.0.1:1/cb?code=") && location.ends_with("&state=s1"), "{location}");
    location.split("code=").nth(1).unwrap().split('&').next().unwrap().to_owned()
}

fn exchange(sim: &Sim, code: &str) -> Response {
    let id = app_id(sim);
    post(
        sim,
        "/v2.12/oauth/access_token",
        &[("client_id", &id), ("client_secret", SECRET), ("redirect_uri", "http://127.0.0.1:1/cb"), ("code", code)],
    )
}

fn long_lived(sim: &Sim, short: &str) -> String {
    let id = app_id(sim);
    let t: OAuthToken = ok(&post(
        sim,
        "/v2.12/oauth/access_token",
        &[
            ("grant_type", "fb_exchange_token"),
            ("client_id", &id),
            ("client_secret", SECRET),
            ("fb_exchange_token", short),
        ],
    ));
    assert_eq!(t.expires_in, Some(5_184_000));
    t.access_token
}

#[test]
fn a_manager_logs_in_and_gets_a_page_token_the_simulator_accepts() {
    let sim = sim();
    let page = &sim.world.pages[0];
    let practice = sim.world.practices[page.practice].code.to_string();
    let user = manager_of(&practice);
    let c = code(&sim, &user, &PERMISSIONS);
    // A wrong secret, a wrong redirect: refused; a code works once.
    let id = app_id(&sim);
    let bad = err(&post(
        &sim,
        "/v2.12/oauth/access_token",
        &[("client_id", &id), ("client_secret", "nope"), ("redirect_uri", "http://127.0.0.1:1/cb"), ("code", &c)],
    ));
    assert_eq!(bad.code, 1);
    let short: OAuthToken = ok(&exchange(&sim, &c));
    assert_eq!(err(&exchange(&sim, &c)).error_subcode, Some(36009), "a code is single use");
    assert!(format!("{short:?}").contains("***") && !format!("{short:?}").contains(&short.access_token));
    let user_token = long_lived(&sim, &short.access_token);
    let perms: PermissionsResponse = ok(&get_as(&sim, "/v2.12/me/permissions", &user_token, &[]));
    assert!(perms.data.iter().all(|p| p.status == "granted") && perms.data.len() == 3);
    let me: serde_json::Value = ok(&get_as(&sim, "/v2.12/me", &user_token, &[("fields", "id,name")]));
    assert_eq!(me["name"], user.as_str());
    // Without appsecret_proof (the app requires it), refused; debug_token without the app's token too.
    let mut bare = Request::get("/v2.12/me/accounts", &[]);
    bare.bearer = Some(user_token.clone());
    assert_eq!(err(&sim.handle(&bare)).code, 100);
    assert_eq!(err(&sim.handle(&Request::get("/v2.12/debug_token", &[("input_token", &user_token)]))).code, 190);
    let accounts: AccountsResponse = ok(&get_as(&sim, "/v2.12/me/accounts", &user_token, &[]));
    assert!(accounts.data.iter().any(|a| a.id == page.id), "the manager administers their practice's page");
    assert!(accounts.data.iter().all(|a| sim.world.page_by_id(&a.id).map(|p| p.practice) == Some(page.practice)));
    let token = accounts.data.iter().find(|a| a.id == page.id).unwrap().access_token.clone();
    assert!(format!("{:?}", accounts.data[0]).contains("***"));

    // The issued page token reads the page's insights (with appsecret_proof, as the app requires).
    let path = format!("/v2.12/{}/insights", page.id);
    let proof = pulse_sim::api::appsecret_proof(SECRET, &token);
    let read = get_as(&sim, &path, &token, &[("metric", "page_fans"), ("appsecret_proof", &proof)]);
    assert_eq!(read.status, 200, "{}", read.body);
    // Not another page's.
    let other = sim.world.pages.iter().find(|p| p.practice != page.practice).unwrap();
    let read = get_as(
        &sim,
        &format!("/v2.12/{}/insights", other.id),
        &token,
        &[("metric", "page_fans"), ("appsecret_proof", &proof)],
    );
    assert_eq!(err(&read).code, 190);

    // debug_token: valid, the scopes, data access for 90 days from the grant.
    let dbg: DebugTokenResponse = ok(&debug(&sim, &token));
    assert!(dbg.data.is_valid && dbg.data.kind == "PAGE" && dbg.data.scopes.len() == 3);
    // On the real clock: 90 days from now.
    let expected = (chrono::Utc::now() + Duration::days(90)).timestamp();
    assert!(
        (dbg.data.data_access_expires_at - expected).abs() < 60,
        "{} vs {expected}",
        dbg.data.data_access_expires_at
    );
    // Eighty days on, ten are left.
    let today = sim.today();
    sim.set_today(today + Duration::days(80));
    let dbg: DebugTokenResponse = ok(&debug(&sim, &token));
    let expected = (chrono::Utc::now() + Duration::days(10)).timestamp();
    assert!((dbg.data.data_access_expires_at - expected).abs() < 60);
    sim.set_today(today);

    // The manager changes their password: 190/460 everywhere, and debug_token says so.
    assert_eq!(sim.kill_page_tokens(&page.id, 460), 1);
    let read = get_as(&sim, &path, &token, &[("metric", "page_fans"), ("appsecret_proof", &proof)]);
    assert_eq!((err(&read).code, err(&read).error_subcode), (190, Some(460)));
    let dbg: DebugTokenResponse = ok(&debug(&sim, &token));
    assert!(!dbg.data.is_valid && dbg.data.error.unwrap().error_subcode == Some(460));
}

#[test]
fn declined_permissions_lapsed_access_a_removed_app_and_paging() {
    let sim = sim();
    let page = &sim.world.pages[1];
    let user = manager_of(sim.world.practices[page.practice].code.as_str());
    // read_insights declined: the permissions say so, and the page token cannot read insights.
    let c = code(&sim, &user, &["pages_show_list", "pages_read_engagement"]);
    let t: OAuthToken = ok(&exchange(&sim, &c));
    let perms: PermissionsResponse = ok(&get_as(&sim, "/v2.12/me/permissions", &t.access_token, &[]));
    assert!(perms.data.iter().any(|p| p.permission == "read_insights" && p.status == "declined"));
    let accounts: AccountsResponse = ok(&get_as(&sim, "/v2.12/me/accounts", &t.access_token, &[]));
    let token = &accounts.data[0].access_token;
    let proof = pulse_sim::api::appsecret_proof(SECRET, token);
    let read = get_as(
        &sim,
        &format!("/v2.12/{}/insights", accounts.data[0].id),
        token,
        &[("metric", "page_fans"), ("appsecret_proof", &proof)],
    );
    assert_eq!(err(&read).code, 200);
    // Without pages_show_list there is no page list.
    let c = code(&sim, &user, &["read_insights"]);
    let t: OAuthToken = ok(&exchange(&sim, &c));
    assert_eq!(err(&get_as(&sim, "/v2.12/me/accounts", &t.access_token, &[])).code, 200);

    // Data access lapses 90 days after the grant.
    let c = code(&sim, &user, &PERMISSIONS);
    let t: OAuthToken = ok(&exchange(&sim, &c));
    let accounts: AccountsResponse = ok(&get_as(&sim, "/v2.12/me/accounts", &t.access_token, &[]));
    let token = accounts.data[0].access_token.clone();
    let proof = pulse_sim::api::appsecret_proof(SECRET, &token);
    let path = format!("/v2.12/{}/insights", accounts.data[0].id);
    assert_eq!(get_as(&sim, &path, &token, &[("metric", "page_fans"), ("appsecret_proof", &proof)]).status, 200);
    let today = sim.today();
    sim.set_today(today + Duration::days(91));
    assert_eq!(err(&get_as(&sim, &path, &token, &[("metric", "page_fans"), ("appsecret_proof", &proof)])).code, 190);
    let dbg: DebugTokenResponse = ok(&debug(&sim, &token));
    assert!(!dbg.data.is_valid);
    sim.set_today(today);

    // The manager removes the app: 190/458.
    assert!(sim.remove_app(&user) >= 1);
    let e = err(&get_as(&sim, &path, &token, &[("metric", "page_fans"), ("appsecret_proof", &proof)]));
    assert_eq!((e.code, e.error_subcode), (190, Some(458)));

    // The federation's admin pages through every page, 2 at a time.
    let c = code(&sim, FEDERATION_ADMIN, &PERMISSIONS);
    let t: OAuthToken = ok(&exchange(&sim, &c));
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let mut q = vec![("limit", "2")];
        if !after.is_empty() {
            q.push(("after", after.as_str()));
        }
        let r: AccountsResponse = ok(&get_as(&sim, "/v2.12/me/accounts", &t.access_token, &q));
        seen.extend(r.data.iter().map(|a| a.id.clone()));
        let paging = r.paging.unwrap();
        if paging.next.is_none() {
            break;
        }
        after = paging.cursors.unwrap().after.unwrap();
    }
    assert_eq!(seen.len(), sim.world.pages.len(), "every page, once");
    // A cancelled consent comes back with access_denied and the state.
    let resp = post(
        &sim,
        "/dialog/oauth/confirm",
        &[("user", &user), ("redirect_uri", "http://127.0.0.1:1/cb"), ("state", "s9"), ("decision", "cancel")],
    );
    let location = &resp.headers.iter().find(|(k, _)| k == "location").unwrap().1;
    assert!(location.contains("error=access_denied") && location.contains("state=s9"), "{location}");
    // A wrong app id is refused on the dialog.
    let resp = sim.handle(&Request::get(
        "/v2.12/dialog/oauth",
        &[("client_id", "123"), ("redirect_uri", "x"), ("response_type", "code")],
    ));
    assert_eq!(resp.status, 400);
}
