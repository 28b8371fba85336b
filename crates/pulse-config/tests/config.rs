//! The config file: the example passes, broken files point at the exact line and field.

use std::path::{Path, PathBuf};

use pulse_config::{ConfigError, StoreBackend, load, parse};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/pulse.example.toml")
}

fn issues_of(text: &str) -> Vec<String> {
    match parse(text, Path::new("pulse.toml")) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.issues().iter().map(|i| i.to_string()).collect(),
    }
}

#[test]
fn the_example_config_loads_with_csv_practices() {
    let config = load(&example()).unwrap();
    assert_eq!(config.store.backend, StoreBackend::Lake);
    assert_eq!(config.tenants.len(), 2);
    let stoke = &config.tenants[1];
    assert_eq!(stoke.practices.len(), 4);
    assert_eq!(stoke.practices[2].pages.len(), 0, "a CSV row without page_id has no page");
    let summary = config.summary();
    assert_eq!(summary.tenants[0].pages, 2);
    assert_eq!(summary.tenants[0].claimed_pages, 1);
    assert_eq!(summary.tenants[0].practices_without_pages, 1);
    assert_eq!(summary.tenants[1].pages, 3);
    let access = config.operator_access();
    assert_eq!(access.scopes().len(), 2);
}

#[test]
fn a_misspelt_field_names_file_line_and_field() {
    let text = "[store]\nbackend = \"lake\"\nlake_dri = \"x\"\n";
    let issues = issues_of(text);
    assert_eq!(issues.len(), 1);
    assert!(issues[0].starts_with("pulse.toml:3:1: unknown field `lake_dri`"), "{}", issues[0]);
}

#[test]
fn a_misspelt_nested_field_is_caught_too() {
    let text = "[[tenant]]\nid = \"a\"\nname = \"A\"\n[[tenant.practice]]\ncode = \"M83001\"\nname = \"P\"\n[[tenant.practice.page]]\nid = \"1\"\ntokn = { env = \"X\" }\n";
    let issues = issues_of(text);
    assert!(issues[0].starts_with("pulse.toml:9:1: unknown field `tokn`"), "{}", issues[0]);
}

#[test]
fn semantic_errors_are_collected_with_their_lines() {
    let text = r#"
[[tenant]]
id = "North Staffs"
name = "bad id"

[[tenant]]
id = "ok"
name = "fine"

[[tenant.practice]]
code = "M8300"
name = "bad code"

[[tenant.practice]]
code = "M83001"
name = "good"

[[tenant.practice.page]]
id = "12ab"

[[tenant.practice.page]]
id = "123"
token = { env = "X", file = "f", key = "k" }
"#;
    let issues = issues_of(text);
    assert_eq!(issues.len(), 4, "{issues:#?}");
    assert!(issues[0].starts_with("pulse.toml:3:6: invalid tenant id `North Staffs`"), "{}", issues[0]);
    assert!(issues[1].starts_with("pulse.toml:11:8: invalid practice code `M8300`"), "{}", issues[1]);
    assert!(issues[2].starts_with("pulse.toml:19:6: invalid page id `12ab`"), "{}", issues[2]);
    assert!(issues[3].contains("pulse.toml:23:") && issues[3].contains("not both"), "{}", issues[3]);
}

#[test]
fn duplicates_across_tenants_are_refused() {
    let text = r#"
[[tenant]]
id = "a"
name = "A"
[[tenant.practice]]
code = "M83001"
name = "P"
[[tenant.practice.page]]
id = "1"

[[tenant]]
id = "b"
name = "B"
[[tenant.practice]]
code = "M83001"
name = "P again"
[[tenant.practice.page]]
id = "1"
"#;
    let issues = issues_of(text);
    assert!(issues.iter().any(|i| i.contains("practice M83001 is declared at pulse.toml:15")), "{issues:#?}");
    assert!(issues.iter().any(|i| i.contains("page 1 is declared")), "{issues:#?}");
}

#[test]
fn clickhouse_backend_needs_its_section_and_no_credentials_in_the_url() {
    let issues = issues_of("[store]\nbackend = \"clickhouse\"\n");
    assert!(issues[0].contains("no [store.clickhouse] section"), "{issues:?}");
    let issues = issues_of("[store.clickhouse]\nurl = \"http://u:p@h:8123\"\n");
    assert!(issues[0].contains("must not carry credentials"), "{issues:?}");
    let issues = issues_of("[graph]\nversion = \"25\"\n");
    assert!(issues[0].starts_with("pulse.toml:2:11: invalid API version"), "{issues:?}");
}

#[test]
fn a_broken_csv_points_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.csv"), "code,name,page_id\nM83001,Good,1\nX1,Bad,2\nM83003,Bad page,x\n")
        .unwrap();
    std::fs::write(dir.path().join("pulse.toml"), "[[tenant]]\nid = \"a\"\nname = \"A\"\npractices_csv = \"p.csv\"\n")
        .unwrap();
    let err = load(&dir.path().join("pulse.toml")).unwrap_err();
    let issues: Vec<String> = err.issues().iter().map(|i| i.to_string()).collect();
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert!(issues[0].ends_with("p.csv:3: invalid practice code `X1`: expected an ODS-style code of one letter and five digits, such as M83001"), "{}", issues[0]);
    assert!(issues[1].contains("p.csv:4: invalid page id `x`"), "{}", issues[1]);

    std::fs::write(dir.path().join("p.csv"), "code,name,page\nM83001,Good,1\n").unwrap();
    let err = load(&dir.path().join("pulse.toml")).unwrap_err().to_string();
    assert!(err.contains("p.csv:1: unknown column `page`"), "{err}");
}

#[test]
fn a_missing_file_says_what_to_do() {
    let err = load(Path::new("/nonexistent/pulse.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("pass --config"));
}

#[test]
fn pages_without_tokens_are_listed_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens.toml"), "M83002 = \"EAAB-super-secret\"\n").unwrap();
    let text = r#"
[[tenant]]
id = "a"
name = "A"
[[tenant.practice]]
code = "M83001"
name = "P"
[[tenant.practice.page]]
id = "1"
token = { env = "PULSE_TEST_TOKEN_THAT_IS_NOT_SET" }
[[tenant.practice]]
code = "M83002"
name = "Q"
[[tenant.practice.page]]
id = "2"
token = { file = "tokens.toml", key = "M83002" }
[[tenant.practice.page]]
id = "3"
"#;
    let config = parse(text, &dir.path().join("pulse.toml")).unwrap();
    let summary = config.summary();
    let missing = &summary.tenants[0].pages_without_tokens;
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing[0].2.contains("PULSE_TEST_TOKEN_THAT_IS_NOT_SET"));
    assert_eq!(missing[1].2, "no token reference");
    assert!(!format!("{summary:?}").contains("EAAB-super-secret"));
    let page = &config.tenants[0].practices[1].pages[0];
    assert_eq!(config.resolve(page.token.as_ref().unwrap()).unwrap().expose(), "EAAB-super-secret");
}

#[test]
fn the_docker_config_is_valid_too() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/pulse.docker.toml");
    let config = load(&path).unwrap();
    assert_eq!(config.store.backend, StoreBackend::Clickhouse);
    assert_eq!(config.tenants[0].practices.len(), 4);
}

#[test]
fn the_cluster_config_is_valid_and_replica_urls_are_checked() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/pulse.cluster.toml");
    let config = load(&path).unwrap();
    assert_eq!(config.store.clickhouse.as_ref().unwrap().cluster.as_deref(), Some("pulse"));
    let store = "[store]\nbackend = \"clickhouse\"\n[store.clickhouse]\nurl = \"http://a:8123\"\n";
    let issues = issues_of(&format!("{store}[store.clickhouse.replica_urls]\n\"a:9000\" = \"http://a:8123\"\n"));
    assert!(issues.iter().any(|i| i.contains("only used with `cluster`")), "{issues:?}");
    let issues = issues_of(&format!(
        "{store}cluster = \"pulse\"\n[store.clickhouse.replica_urls]\n\"a\" = \"http://a:8123\"\n\"b:9000\" = \"ftp://b\"\n"
    ));
    assert!(issues.iter().any(|i| i.contains("key `a` must be host:port")), "{issues:?}");
    assert!(issues.iter().any(|i| i.contains("`b:9000` = `ftp://b` must be an http(s) URL")), "{issues:?}");
    let issues = issues_of(&format!("{store}cluster = \"pulse; DROP\"\n"));
    assert!(issues.iter().any(|i| i.contains("must be a cluster name")), "{issues:?}");
    // Leases in the cluster's ZooKeeper: host:port lists only.
    assert_eq!(config.store.clickhouse.as_ref().unwrap().zookeeper.as_deref(), Some("zookeeper:2181"));
    for bad in ["zk-1", "zk-1:2181,zk-2", "zk-1:2181/pulse", "user@zk:2181", "", "zk:99999"] {
        let issues = issues_of(&format!("{store}zookeeper = \"{bad}\"\n"));
        assert!(issues.iter().any(|i| i.contains("zookeeper") && i.contains("must be host:port")), "{bad}: {issues:?}");
    }
    let ensemble = parse(&format!("{store}zookeeper = \"zk-1:2181, zk-2:2181\"\n"), Path::new("pulse.toml"));
    assert!(ensemble.is_ok(), "{:?}", ensemble.err().map(|e| e.to_string()));
}

#[test]
fn campaigns_need_exactly_one_matcher_and_known_tenants() {
    let config = load(&example()).unwrap();
    assert_eq!(config.campaigns.len(), 1);
    assert_eq!(config.campaigns[0].hashtag.as_deref(), Some("#ActFAST"));
    let text = "[[campaign]]\nname = \"x\"\nstart = \"2018-03-10\"\ndays = 2\nhashtag = \"#a\"\nlink = \"b\"\ntenants = [\"nowhere\"]\n";
    let issues = issues_of(text);
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert!(issues[0].contains("exactly one of hashtag, link, text or posts"));
    assert!(issues[1].contains("unknown tenant `nowhere`"));
}

#[test]
fn topics_are_checked_by_field_and_line_and_add_to_the_defaults() {
    let config = load(&example()).unwrap();
    assert_eq!(config.topics.len(), 1);
    let north = pulse_config::topics::for_tenant(&config.topics, "north-staffs");
    assert_eq!((north.len(), &north[0]), (pulse_config::topics::defaults().len(), &config.topics[0]));
    assert_eq!(pulse_config::topics::for_tenant(&config.topics, "elsewhere"), pulse_config::topics::defaults());
    let text = "[[tenant]]\nid = \"a\"\nname = \"A\"\n\n\
                [[topic]]\nname = \"Flu\"\nkeywords = [\"fl\"]\nhashtags = [\"flu\"]\ntenants = [\"nowhere\"]\n\n\
                [[topic]]\nname = \"Empty\"\n\n\
                [[topic]]\nname = \"Open\"\nkeywords = [\"opening hours\"]\n\n\
                [[topic]]\nname = \"open\"\nkeywords = [\"we are open\"]\ntenants = [\"a\"]\n";
    let issues = issues_of(text);
    assert_eq!(issues.len(), 5, "{issues:?}");
    assert!(issues[0].contains(":5:") && issues[0].contains("topic `Flu`: keywords: keyword `fl`"), "{issues:?}");
    assert!(issues[1].contains("topic `Flu`: hashtags: hashtag `flu`"), "{issues:?}");
    assert!(issues[2].contains("unknown tenant `nowhere`"), "{issues:?}");
    assert!(issues[3].contains(":11:") && issues[3].contains("at least one keyword or hashtag"), "{issues:?}");
    assert!(issues[4].contains("topic `open` is declared twice"), "{issues:?}");
}

#[test]
fn the_server_section_has_defaults_resolves_the_keys_file_and_refuses_a_zero_rate_limit() {
    let config = parse("", Path::new("/srv/pulse/pulse.toml")).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    assert_eq!(config.server.keys_file, Path::new("/srv/pulse/pulse-keys.json"));
    assert_eq!(config.server.rate_limit_per_minute, 600);
    let config =
        parse("[server]\nkeys_file = \"/var/lib/pulse/keys.json\"\n", Path::new("/srv/pulse/pulse.toml")).unwrap();
    assert_eq!(config.server.keys_file, Path::new("/var/lib/pulse/keys.json"));
    let issues = issues_of("[server]\nrate_limit_per_minute = 0\n");
    assert!(issues[0].contains("rate_limit_per_minute must be at least 1"), "{issues:?}");
    let issues = issues_of("[server]\nlisten_on = \"x\"\n");
    assert!(issues[0].contains("unknown field `listen_on`"), "{issues:?}");
}

#[test]
fn schedules_mail_and_digest_lists_are_checked_with_the_field_named() {
    let tenant = "[[tenant]]\nid = \"stoke\"\nname = \"S\"\n";
    let issues = issues_of(&format!(
        "[scheduler]\ntimezone = \"Europe/Londn\"\ndigest = \"0 8 * *\"\ningest = \"61 5 * * *\"\n\n\
         [smtp]\nhost = \"mail.example.org\"\nsecurity = \"none\"\nfrom = \"nobody\"\nuser = \"u\"\n\n\
         [[subscription]]\nname = \"weekly\"\ntenant = \"nope\"\nrecipients = [\"a@b.nhs.uk\", \"not-an-address\"]\n\n{tenant}"
    ));
    let all = issues.join("\n");
    for expected in [
        "scheduler.timezone `Europe/Londn` is not an IANA time zone",
        "scheduler.digest = \"0 8 * *\": a schedule has five fields",
        "scheduler.ingest = \"61 5 * * *\": not a cron expression",
        "smtp.security = \"none\" sends mail unencrypted",
        "smtp: give `user` and `password` together",
        "smtp.from `nobody` is not an address",
        "subscription `weekly`: unknown tenant `nope`",
        "subscription `weekly`: `not-an-address` is not an email address",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    // The same, well formed, loads; unencrypted mail to this machine is allowed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    std::fs::write(
        &path,
        format!(
            "[scheduler]\ndigest = \"0 8 * * MON\"\n\n[smtp]\nhost = \"127.0.0.1\"\nport = 2525\nsecurity = \"none\"\nfrom = \"Pulse <p@example.nhs.uk>\"\n\n\
             [[subscription]]\nname = \"weekly\"\ntenant = \"stoke\"\nrecipients = [\"a@b.nhs.uk\"]\n\n{tenant}"
        ),
    )
    .unwrap();
    let config = pulse_config::load(&path).unwrap();
    assert_eq!(config.scheduler.tz(), chrono_tz::Europe::London);
    assert_eq!(config.smtp.unwrap().port(), 2525);
    assert_eq!(config.subscriptions[0].recipients, vec!["a@b.nhs.uk"]);
}

#[test]
fn export_projects_with_a_short_key_or_an_unknown_tenant_are_refused_and_keys_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let long = "k".repeat(32);
    std::fs::write(dir.path().join("keys.toml"), format!("short = \"tiny-secret-key\"\nlong = \"{long}\"\n")).unwrap();
    let text = r#"
[[tenant]]
id = "a"
name = "A"
[[export_project]]
name = "short"
key = { file = "keys.toml", key = "short" }
[[export_project]]
name = "stranger"
key = { file = "keys.toml", key = "long" }
tenants = ["a", "zz"]
[[export_project]]
name = "open"
key = { file = "keys.toml", key = "long" }
[[export_project]]
name = "bound"
key = { file = "keys.toml", key = "long" }
tenants = ["a"]
"#;
    let config = parse(text, &dir.path().join("pulse.toml")).unwrap();
    let projects = config.summary().export_projects;
    let by = |n: &str| projects.iter().find(|p| p.0 == n).unwrap().clone();
    assert!(by("short").2 && by("short").1.contains("15 bytes, need at least 32"), "{projects:?}");
    assert!(by("stranger").2 && by("stranger").1.contains("unknown tenant(s) zz"), "{projects:?}");
    assert!(!by("open").2 && by("open").1.contains("names no tenants"), "{projects:?}");
    assert_eq!(by("bound"), ("bound".into(), "key ok; tenants a".into(), false));
    assert!(!format!("{projects:?}").contains("tiny-secret-key"));
}

#[test]
fn oidc_sign_in_needs_https_a_real_callback_and_grants_to_configured_tenants() {
    let tenant = "[[tenant]]\nid = \"stoke\"\nname = \"Stoke\"\n[[tenant.practice]]\ncode = \"M87001\"\nname = \"P\"\n";
    let good = format!(
        "{tenant}[server]\nsecure_cookies = true\n[server.oidc]\nissuer = \"https://login.microsoftonline.com/0000/v2.0\"\nclient_id = \"abc\"\n\
         client_secret = {{ env = \"PULSE_OIDC_SECRET\" }}\nredirect_url = \"https://pulse.example.nhs.uk/auth/oidc/callback\"\n\
         label = \"NHSmail\"\n[[server.oidc.grant]]\nclaim = \"email_domain\"\nvalue = \"nhs.net\"\ntenants = [\"stoke\"]\n"
    );
    let config = parse(&good, Path::new("pulse.toml")).unwrap();
    let summary = config.summary();
    assert!(
        summary
            .digests
            .iter()
            .any(|l| l.starts_with("dashboard sign-in: https://login.microsoftonline.com/0000/v2.0 as client abc")),
        "{:?}",
        summary.digests
    );
    assert!(
        summary.warnings.iter().any(|w| w.contains("grant[0] lets in anyone at @nhs.net (a national domain")),
        "a national email domain is warned about: {:?}",
        summary.warnings
    );
    let oidc = config.server.oidc.unwrap();
    assert_eq!(oidc.scopes, ["openid", "email", "profile"], "default scopes");
    assert_eq!(oidc.grants[0].scopes, ["read"], "a grant reads by default");
    // A provider run locally may be http on loopback; nothing else may.
    assert!(pulse_config::oidc_url_allowed("http://127.0.0.1:4000"));
    assert!(pulse_config::oidc_url_allowed("http://localhost:4000/x"));
    assert!(!pulse_config::oidc_url_allowed("http://login.example.org"));
    assert!(!pulse_config::oidc_url_allowed("http://127.0.0.1.evil.example:80/"));

    let bad = format!(
        "{tenant}[server.oidc]\nissuer = \"http://login.example.org\"\nclient_id = \"\"\n\
         redirect_url = \"https://pulse.example.nhs.uk/callback\"\nscopes = [\"email\"]\n\
         [[server.oidc.grant]]\nclaim = \"groups\"\nvalue = \"g\"\ntenants = [\"north\", \"stoke\"]\nscopes = [\"export\", \"write\"]\n"
    );
    let issues = issues_of(&bad).join("\n");
    for expected in [
        "server.oidc.issuer `http://login.example.org` must be an https URL",
        "server.oidc.redirect_url `https://pulse.example.nhs.uk/callback` must end with /auth/oidc/callback",
        "server.oidc.client_id is empty",
        "server.oidc.scopes must include `openid`",
        "server.oidc.grant[0] names tenant `north`, which is not configured",
        "server.oidc.grant[0] scope `write` is not one of read, export, admin",
        "server.oidc.grant[0] needs the `read` scope",
        "server.oidc.grant[0] opens several tenants: add the `admin` scope",
        "server.oidc.redirect_url is https, so the dashboard is served over https: set server.secure_cookies = true",
    ] {
        assert!(issues.contains(expected), "{expected} missing from:\n{issues}");
    }
    let no_grant = format!(
        "{tenant}[server]\nsecure_cookies = true\n[server.oidc]\nissuer = \"https://id.example.org\"\nclient_id = \"a\"\n\
         redirect_url = \"https://p.example.org/auth/oidc/callback\"\n"
    );
    assert!(issues_of(&no_grant).join("\n").contains("nobody could sign in"));
}
