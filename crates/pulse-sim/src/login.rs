//! Facebook Login, simulated: the OAuth dialog (a consent page where a practice manager picks who they are and which
//! permissions to grant), the code exchange, the long-lived token exchange, `/me/accounts` (paged), `/me/permissions`
//! and `debug_token` for the tokens it issues, with tokens that die (a password change: 190/460; the app removed:
//! 190/458) and data access that lapses 90 days after the person last used the app.
//!
//! People: each practice with a page has a manager, `manager-<practice code>` (lower case), who administers that
//! practice's pages; `federation-admin` administers every page (a federation's digital lead), so `/me/accounts` pages
//! through many. Page tokens issued here are accepted by the rest of the simulator for their page.

// Graph errors are the answer, not an exceptional path (as in `api`): returned by value.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use chrono::{Duration, NaiveDate};
use pulse_graph::wire::{
    Account, AccountsResponse, Cursors, DebugTokenData, GraphError, OAuthToken, Paging, Permission, PermissionsResponse,
};

use crate::rng::text;
use crate::world::World;

/// The permissions the ingester needs, and the only ones the dialog offers.
pub const PERMISSIONS: [&str; 3] = ["pages_show_list", "pages_read_engagement", "read_insights"];

/// The person who administers every page.
pub const FEDERATION_ADMIN: &str = "federation-admin";

/// Days after a grant that the app may read a person's data (Meta's data access expiration).
pub const DATA_ACCESS_DAYS: i64 = 90;

#[derive(Debug, Clone)]
struct Grant {
    user: String,
    granted: Vec<String>,
    declined: Vec<String>,
    redirect_uri: String,
    /// The simulated day of the grant.
    day: NaiveDate,
    long_lived: bool,
}

#[derive(Debug, Clone)]
struct PageToken {
    page: usize,
    user: String,
    scopes: Vec<String>,
    data_access_until: NaiveDate,
    /// Why it no longer works: a 190 subcode.
    dead: Option<i64>,
}

/// What Facebook Login has issued: codes (single use), user tokens, page tokens.
#[derive(Debug, Default)]
pub struct Logins {
    codes: HashMap<String, Grant>,
    users: HashMap<String, Grant>,
    pages: HashMap<String, PageToken>,
    issued: u64,
}

pub(crate) fn error(code: i64, subcode: Option<i64>, message: &str) -> GraphError {
    GraphError {
        kind: "OAuthException".into(),
        message: message.into(),
        code,
        error_subcode: subcode,
        is_transient: None,
        error_user_title: None,
        error_user_msg: None,
        fbtrace_id: String::new(),
    }
}

/// The manager of a practice's pages.
pub fn manager_of(practice_code: &str) -> String {
    format!("manager-{}", practice_code.to_ascii_lowercase())
}

/// The pages `user` administers, in order.
pub fn pages_of(world: &World, user: &str) -> Vec<usize> {
    world
        .pages
        .iter()
        .filter(|p| user == FEDERATION_ADMIN || manager_of(world.practices[p.practice].code.as_str()) == user)
        .map(|p| p.index)
        .collect()
}

/// Everyone who can log in: each practice's manager, then the federation admin.
pub fn people(world: &World) -> Vec<String> {
    let mut out: Vec<String> =
        world.pages.iter().map(|p| manager_of(world.practices[p.practice].code.as_str())).collect();
    out.dedup();
    out.push(FEDERATION_ADMIN.into());
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Logins {
    fn mint(&mut self, seed: u64, kind: &str) -> String {
        self.issued += 1;
        format!("SIM{kind}{:016x}{:08x}", text(&format!("{seed}:{kind}:{}", self.issued)), self.issued)
    }

    /// The consent page for `GET /dialog/oauth`: who is logging in, the permissions asked (each can be unticked),
    /// Allow and Cancel. Errors (a wrong app, no redirect) are shown on the page, as Meta does.
    pub fn dialog(world: &World, app_id: &str, params: &HashMap<String, String>) -> Result<String, String> {
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != app_id {
            return Err(format!("Invalid App ID: {}", escape(get("client_id"))));
        }
        if get("redirect_uri").is_empty() {
            return Err("URL blocked: no redirect_uri".into());
        }
        if get("response_type") != "code" {
            return Err("response_type must be code".into());
        }
        let asked: Vec<&str> = get("scope").split([',', ' ']).filter(|s| !s.is_empty()).collect();
        let mut html = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Log in with Facebook (simulated)</title></head><body>\
             <h1>Practice Pulse (simulated) is requesting access</h1><form method=\"post\" action=\"/dialog/oauth/confirm\">",
        );
        html.push_str("<label>Log in as <select name=\"user\" id=\"user\">");
        for p in people(world) {
            html.push_str(&format!("<option value=\"{0}\">{0}</option>", escape(&p)));
        }
        html.push_str("</select></label><fieldset><legend>Permissions</legend>");
        for s in &asked {
            html.push_str(&format!(
                "<label><input type=\"checkbox\" name=\"grant\" value=\"{0}\" id=\"perm-{0}\" checked> {0}</label><br>",
                escape(s)
            ));
        }
        html.push_str("</fieldset>");
        for k in ["redirect_uri", "state", "scope", "client_id"] {
            html.push_str(&format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", escape(get(k))));
        }
        html.push_str(
            "<button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow</button> \
             <button type=\"submit\" name=\"decision\" value=\"cancel\" id=\"cancel\">Cancel</button></form></body></html>",
        );
        Ok(html)
    }

    /// `POST /dialog/oauth/confirm`: where the browser goes next (the app's redirect URI with a code, or with
    /// `error=access_denied`).
    pub fn confirm(&mut self, world: &World, today: NaiveDate, form: &[(String, String)]) -> Result<String, String> {
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
        let redirect = get("redirect_uri").to_owned();
        if redirect.is_empty() {
            return Err("no redirect_uri".into());
        }
        let sep = if redirect.contains('?') { '&' } else { '?' };
        let enc = |pairs: &[(&str, &str)]| form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        if get("decision") != "allow" {
            return Ok(format!(
                "{redirect}{sep}{}",
                enc(&[
                    ("error", "access_denied"),
                    ("error_code", "200"),
                    ("error_description", "Permissions error"),
                    ("error_reason", "user_denied"),
                    ("state", get("state")),
                ])
            ));
        }
        let user = get("user").to_owned();
        if !people(world).contains(&user) {
            return Err(format!("unknown person {}", escape(&user)));
        }
        let asked: Vec<String> = get("scope").split([',', ' ']).filter(|s| !s.is_empty()).map(String::from).collect();
        let granted: Vec<String> =
            form.iter().filter(|(k, v)| k == "grant" && asked.contains(v)).map(|(_, v)| v.clone()).collect();
        let declined = asked.iter().filter(|s| !granted.contains(s)).cloned().collect();
        let code = self.mint(world.seed, "CODE");
        self.codes.insert(
            code.clone(),
            Grant { user, granted, declined, redirect_uri: redirect.clone(), day: today, long_lived: false },
        );
        Ok(format!("{redirect}{sep}{}", enc(&[("code", &code), ("state", get("state"))])))
    }

    /// `GET /oauth/access_token`: a code for a short-lived user token, or (`grant_type=fb_exchange_token`) a
    /// short-lived user token for a long-lived one. Both need the app's id and secret.
    pub fn access_token(
        &mut self,
        seed: u64,
        app_id: &str,
        app_secret: Option<&str>,
        params: &HashMap<String, String>,
    ) -> Result<OAuthToken, GraphError> {
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != app_id {
            return Err(error(101, None, "Error validating application. Invalid application ID."));
        }
        if app_secret.is_some_and(|s| s != get("client_secret")) || get("client_secret").is_empty() {
            return Err(error(1, None, "Error validating client secret."));
        }
        if get("grant_type") == "fb_exchange_token" {
            let short = get("fb_exchange_token");
            let Some(grant) = self.users.get(short).cloned() else {
                return Err(error(190, None, "Invalid OAuth access token - Cannot parse access token"));
            };
            let token = self.mint(seed, "USERLL");
            self.users.insert(token.clone(), Grant { long_lived: true, ..grant });
            return Ok(OAuthToken { access_token: token, token_type: "bearer".into(), expires_in: Some(5_184_000) });
        }
        let code = get("code");
        // Single use: a code is gone once exchanged, whatever happens next.
        let Some(grant) = self.codes.remove(code) else {
            return Err(error(100, Some(36009), "This authorization code has been used."));
        };
        if grant.redirect_uri != get("redirect_uri") {
            return Err(error(
                100,
                Some(36008),
                "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request",
            ));
        }
        let token = self.mint(seed, "USER");
        self.users.insert(token.clone(), grant);
        Ok(OAuthToken { access_token: token, token_type: "bearer".into(), expires_in: Some(5_183_944) })
    }

    fn user(&self, token: Option<&str>) -> Result<&Grant, GraphError> {
        let token = token.ok_or_else(|| error(104, None, "An access token is required to request this resource."))?;
        self.users.get(token).ok_or_else(|| error(190, None, "Invalid OAuth access token - Cannot parse access token"))
    }

    /// `GET /me`: who the user token is (an app-scoped id, and the name).
    pub fn me(&self, seed: u64, token: Option<&str>) -> Result<serde_json::Value, GraphError> {
        let g = self.user(token)?;
        let id = format!("{}", 10_000_000_000_000u64 + text(&format!("{seed}:user:{}", g.user)) % 1_000_000_000_000);
        Ok(serde_json::json!({"id": id, "name": g.user}))
    }

    /// `GET /me/permissions`.
    pub fn permissions(&self, token: Option<&str>) -> Result<PermissionsResponse, GraphError> {
        let g = self.user(token)?;
        let mut data: Vec<Permission> =
            g.granted.iter().map(|p| Permission { permission: p.clone(), status: "granted".into() }).collect();
        data.extend(g.declined.iter().map(|p| Permission { permission: p.clone(), status: "declined".into() }));
        Ok(PermissionsResponse { data })
    }

    /// `GET /me/accounts`: the person's pages, `limit` at a time (default 25), each with a page token that lasts
    /// as long as the user token it came from (no expiry, from a long-lived one).
    pub fn accounts(
        &mut self,
        world: &World,
        base_url: &str,
        path: &str,
        token: Option<&str>,
        params: &HashMap<String, String>,
    ) -> Result<AccountsResponse, GraphError> {
        let g = self.user(token)?.clone();
        if !g.granted.iter().any(|p| p == "pages_show_list") {
            return Err(error(200, None, "(#200) Requires pages_show_list permission to manage the object"));
        }
        let pages = pages_of(world, &g.user);
        let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(25).clamp(1, 100);
        let offset = params.get("after").and_then(|a| a.strip_prefix("sim-")).and_then(|a| a.parse().ok()).unwrap_or(0);
        let mut data = Vec::new();
        for &page in pages.iter().skip(offset).take(limit) {
            let p = &world.pages[page];
            let access_token = self.mint(world.seed, "PAGE");
            self.pages.insert(
                access_token.clone(),
                PageToken {
                    page,
                    user: g.user.clone(),
                    scopes: g.granted.clone(),
                    data_access_until: g.day + Duration::days(DATA_ACCESS_DAYS),
                    dead: None,
                },
            );
            data.push(Account {
                id: p.id.clone(),
                name: p.name.clone(),
                access_token,
                category: "Medical & health".into(),
                tasks: vec![
                    "ANALYZE".into(),
                    "ADVERTISE".into(),
                    "CREATE_CONTENT".into(),
                    "MODERATE".into(),
                    "MANAGE".into(),
                ],
            });
        }
        let next_offset = offset + data.len();
        let paging = Paging {
            cursors: Some(Cursors { before: Some(format!("sim-{offset}")), after: Some(format!("sim-{next_offset}")) }),
            previous: None,
            next: (next_offset < pages.len()).then(|| {
                let token = token.unwrap_or_default();
                let query = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([
                        ("access_token", token),
                        ("limit", &limit.to_string()),
                        ("after", &format!("sim-{next_offset}")),
                    ])
                    .finish();
                format!("{base_url}{path}?{query}")
            }),
        };
        Ok(AccountsResponse { data, paging: Some(paging) })
    }

    /// Whether `token` is a page token issued here for `page`: `None` when it is not one; `Some(Err)` when it no
    /// longer works.
    pub fn page_token(&self, token: &str, page: usize, today: NaiveDate) -> Option<Result<(), GraphError>> {
        let t = self.pages.get(token).filter(|t| t.page == page)?;
        Some(match t.dead {
            Some(460) => Err(error(
                190,
                Some(460),
                "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
            )),
            Some(sub) => {
                Err(error(190, Some(sub), "Error validating access token: The user has not authorized application."))
            }
            None if today > t.data_access_until => {
                Err(error(190, None, "Error validating access token: Data access for this user has expired."))
            }
            None if !t.scopes.iter().any(|s| s == "read_insights") => {
                Err(error(200, None, "(#200) Requires read_insights permission to manage the object"))
            }
            None => Ok(()),
        })
    }

    /// `debug_token` for a token issued here: `None` when it is not one. Expiry times are on the real clock, as
    /// far from now as they are from the simulated `today`.
    pub fn debug(&self, token: &str, app_id: &str, world: &World, today: NaiveDate) -> Option<DebugTokenData> {
        // Meta reports times on the real clock: a day `d` of the simulated calendar is as far from now as it is
        // from the simulated today, so a client judging "expires within 14 days" by its own clock is right.
        let midnight = |d: NaiveDate| (chrono::Utc::now() + (d - today)).timestamp();
        if let Some(t) = self.pages.get(token) {
            let lapsed = today > t.data_access_until;
            return Some(DebugTokenData {
                app_id: app_id.into(),
                kind: "PAGE".into(),
                application: "Practice Pulse (simulated)".into(),
                expires_at: 0,
                is_valid: t.dead.is_none() && !lapsed,
                scopes: t.scopes.clone(),
                profile_id: Some(world.pages[t.page].id.clone()),
                error: match (t.dead, lapsed) {
                    (Some(sub), _) => Some(error(190, Some(sub), "Error validating access token")),
                    (None, true) => Some(error(190, None, "Data access for this user has expired.")),
                    _ => None,
                },
                data_access_expires_at: midnight(t.data_access_until),
            });
        }
        self.users.get(token).map(|g| DebugTokenData {
            app_id: app_id.into(),
            kind: "USER".into(),
            application: "Practice Pulse (simulated)".into(),
            expires_at: midnight(g.day + Duration::days(if g.long_lived { 60 } else { 1 })),
            is_valid: true,
            scopes: g.granted.clone(),
            profile_id: None,
            error: None,
            data_access_expires_at: midnight(g.day + Duration::days(DATA_ACCESS_DAYS)),
        })
    }

    /// Kills every token issued for `page` (subcode 460: the manager changed their password; 458: they removed the
    /// app). Returns how many.
    pub fn kill_page(&mut self, page: usize, subcode: i64) -> usize {
        let mut n = 0;
        for t in self.pages.values_mut().filter(|t| t.page == page) {
            t.dead = Some(subcode);
            n += 1;
        }
        n
    }

    /// Kills every page token `user` was issued (they removed the app: 458).
    pub fn remove_app(&mut self, user: &str) -> usize {
        let mut n = 0;
        for t in self.pages.values_mut().filter(|t| t.user == user) {
            t.dead = Some(458);
            n += 1;
        }
        n
    }
}
