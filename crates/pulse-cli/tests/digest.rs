//! Weekly digests and the scheduler, end to end with the `pulse` binary over the case-study demo world:
//!
//! - `pulse digest preview` writes an email whose shape a standard-library parser checks (both parts, every chart
//!   as an inline PNG, List-Unsubscribe), whose figures are the reports' (rounded to 5), and which headless
//!   Chromium draws (screenshot under `<target>/tmp/digest-screenshots/`);
//! - `pulse run` with its clock driven to the Monday after the clocks went forward (08:00 BST = 07:00 UTC) sends the
//!   list's digest through a real SMTP server (aiosmtpd); killed mid-send and restarted, it catches the run up once
//!   and no recipient ever gets two; a recipient the server refuses does not hold up the others and is given up;
//!   `pulse status` shows the run.
//!
//! Needs python3 with aiosmtpd (and chromium for the picture). Without them the tests are skipped with a message,
//! unless `PULSE_REQUIRE_PYTHON_TOOLS=1` / `PULSE_REQUIRE_BROWSER=1` (CI sets both).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/digest_check.py");

fn pulse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulse")).args(args).env_remove("RUST_LOG").output().expect("pulse runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The case-study demo, made once for this test binary.
fn demo() -> PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo");
        let out = pulse(&["demo", "--dir", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        (dir, path)
    })
    .1
    .clone()
}

fn python_tools() -> bool {
    let ok =
        Command::new("python3").args(["-c", "import aiosmtpd, highspy"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("PULSE_REQUIRE_PYTHON_TOOLS").is_none(),
            "PULSE_REQUIRE_PYTHON_TOOLS is set but python3 cannot import aiosmtpd and highspy (pip install aiosmtpd highspy)"
        );
        eprintln!("skipped: the digest tests need python3 with aiosmtpd and highspy (pip install aiosmtpd highspy)");
    }
    ok
}

/// A report as CSV rows keyed by column name.
fn report(config: &Path, args: &[&str]) -> Vec<BTreeMap<String, String>> {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.extend(["--config", config.to_str().unwrap(), "--format", "csv"]);
    let out = pulse(&all);
    assert!(out.status.success(), "{}", text(&out));
    let mut rdr = csv::Reader::from_reader(out.stdout.as_slice());
    let header = rdr.headers().unwrap().clone();
    rdr.records()
        .map(|r| header.iter().map(str::to_owned).zip(r.unwrap().iter().map(str::to_owned)).collect())
        .collect()
}

/// As the digest shows a count: rounded to 5, with thousands separators.
fn thousands_round5(v: f64) -> String {
    pulse_app::text::thousands(pulse_export::round5(v) as f64)
}

#[test]
fn a_preview_is_a_well_formed_email_with_the_reports_figures_and_draws_in_a_browser() {
    let dir = demo();
    let config = dir.join("pulse.toml");
    let out_dir = tempfile::tempdir().unwrap();
    let base = out_dir.path().join("stoke-2018-W10");
    let out = pulse(&[
        "digest",
        "preview",
        "--config",
        config.to_str().unwrap(),
        "--tenant",
        "stoke",
        "--week",
        "2018-W10",
        "--out",
        base.to_str().unwrap(),
    ]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    // The headline is the tenant roll-up's week ending Sunday 11 March 2018, rounded to 5.
    let weeks = report(&config, &["reach-tenant", "--tenant", "stoke"]);
    let week = weeks.iter().find(|r| r["week_ending"] == "2018-03-11").expect("the week is in the report");
    let reach: f64 = week["gross_reach"].parse().unwrap();
    let engaged: f64 = week["gross_engaged_users"].parse().unwrap();
    let before: f64 = weeks.iter().find(|r| r["week_ending"] == "2018-03-04").expect("the week before")["gross_reach"]
        .parse()
        .unwrap();
    let line = shown.lines().find(|l| l.trim_start().starts_with("People reached")).expect(&shown);
    assert!(line.contains(&thousands_round5(reach)), "{line} vs {reach}");
    // The change is between the published (rounded) counts: from the exact ones it would narrow them.
    let (r5, b5) = ((reach / 5.0).round() * 5.0, (before / 5.0).round() * 5.0);
    let change = format!("{:+.0}% ({})", (r5 - b5) / b5 * 100.0, thousands_round5(before));
    assert!(line.contains(&format!("vs week before: {change}")), "{line} vs {change}");
    let line = shown.lines().find(|l| l.trim_start().starts_with("Engaged users")).expect(&shown);
    assert!(line.contains(&thousands_round5(engaged)), "{line} vs {engaged}");
    // The stroke video weekend (10-11 March) is live that week, with the campaigns report's effect on views.
    let camps = report(&config, &["campaigns", "--tenant", "stoke"]);
    let views = camps
        .iter()
        .find(|r| r["campaign"] == "UHNM stroke video" && r["practice_code"] == "ALL" && r["metric"] == "views")
        .expect("the campaign's total");
    // As an export publishes it: the observed rounded to 5 less the counterfactual rounded to 5.
    let r5 = |c: &str| (views[c].parse::<f64>().unwrap() / 5.0).round() * 5.0;
    let effect = r5("observed") - r5("counterfactual");
    // In words, with the lift over the published counterfactual.
    let lift = format!("a lift of {:+.0}%", effect / r5("counterfactual") * 100.0);
    let effect_text = format!(
        "views: about {} views more than the {} expected without the campaign, {lift}",
        thousands_round5(effect),
        thousands_round5(r5("counterfactual"))
    );
    let campaign_line = shown.lines().find(|l| l.trim_start().starts_with("views: ")).expect(&shown);
    assert!(campaign_line.contains(&effect_text), "{campaign_line} vs {effect_text}");
    assert!(campaign_line.contains("confidence)"), "{campaign_line}");
    // The practices' unusual weeks that week are the campaign itself: said once, not listed one by one.
    assert!(
        shown.contains("Explained by a campaign: ") && shown.contains("`UHNM stroke video`, live this week"),
        "{shown}"
    );
    assert!(!shown.contains("Unusual week:"), "{shown}");
    // The footer says when, not an internal run id.
    assert!(shown.contains("Figures computed on ") && !shown.contains("pipelines run"), "{shown}");
    assert!(shown.contains("UHNM stroke video (live,"), "{shown}");
    // The practices' league names practices, with their rate per 1,000.
    assert!(shown.contains("per 1,000"), "{shown}");
    // Its published figures, for the disclosure auditor: every count, rate and change as the email shows it.
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.with_extension("figures.json")).unwrap()).unwrap();
    let counts = figures["counts"].as_array().unwrap();
    assert!(counts.len() > 20, "{figures}");
    for c in counts.iter().filter(|c| !c["id"].as_str().unwrap().starts_with("chart:")) {
        assert!(shown.contains(c["shown"].as_str().unwrap()), "{c} is not in the email:\n{shown}");
    }
    for r in figures["rates"].as_array().unwrap().iter().chain(figures["changes"].as_array().unwrap()) {
        assert!(shown.contains(r["shown"].as_str().unwrap()), "{r} is not in the email");
    }
    if !python_tools() {
        return;
    }
    let audited = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../pulse-export/audit/disclosure_audit.py"))
        .arg(base.with_extension("figures.json"))
        .output()
        .unwrap();
    assert!(audited.status.success(), "the digest's disclosure audit: {}", text(&audited));
    let checked = Command::new("python3").args([SCRIPT, "check-eml"]).arg(base.with_extension("eml")).output().unwrap();
    assert!(checked.status.success(), "{}", text(&checked));
    // Chromium draws the HTML page, every chart decoded.
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("PULSE_REQUIRE_BROWSER").is_none(),
            "PULSE_REQUIRE_BROWSER is set but there is no chromium"
        );
        eprintln!("skipped the digest's browser check: no chromium (apt-get install chromium)");
        return;
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("digest-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("stoke-2018-W10.png");
    let drawn = Command::new("python3")
        .args([SCRIPT, "screenshot", "--chromium", chromium, "--html"])
        .arg(base.with_extension("html"))
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    assert!(drawn.status.success(), "{}", text(&drawn));
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "a real screenshot");
}

struct Sink {
    child: Child,
    port: u16,
    maildir: PathBuf,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sink(dir: &Path, reject: &[&str], defer: &[&str], slow_rcpt: f64) -> Sink {
    let port_file = dir.join("smtp.port");
    let maildir = dir.join("maildir");
    let mut cmd = Command::new("python3");
    cmd.args([SCRIPT, "sink", "--port-file", port_file.to_str().unwrap(), "--maildir", maildir.to_str().unwrap()]);
    cmd.args(["--slow-rcpt", &slow_rcpt.to_string()]);
    for r in reject {
        cmd.args(["--reject", r]);
    }
    for r in defer {
        cmd.args(["--defer", r]);
    }
    let child = cmd.stdout(Stdio::null()).spawn().expect("python3 runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            break p.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the SMTP sink did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    Sink { child, port, maildir }
}

/// Messages received, per recipient.
fn received(maildir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(maildir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_suffix(".eml").filter(|_| !name.starts_with('.'))
            && let Some((_, rcpt)) = rest.split_once('-')
        {
            *out.entry(rcpt.to_owned()).or_default() += 1;
        }
    }
    out
}

fn daemon(config: &Path, log: &Path, clock_start: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pulse"))
        .args(["run", "--config", config.to_str().unwrap(), "--clock-start", clock_start, "--clock-speed", "20"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("pulse run starts")
}

fn wait_for(what: &str, log: &Path, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the daemon said:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_daemon_sends_each_recipient_one_digest_for_the_week_across_a_kill_and_a_dst_change() {
    if !python_tools() {
        return;
    }
    let demo = demo();
    // A copy of the demo's config with a list, the sink and a schedule; the same lake.
    let dir = tempfile::tempdir().unwrap();
    let good: Vec<String> = (1..=6).map(|i| format!("analyst{i}@stoke.example.nhs.uk")).collect();
    let refused = "left.the.nhs@stoke.example.nhs.uk";
    // The last recipient's server is busy the first time: retried a (virtual) minute later.
    let deferred = good.last().unwrap().clone();
    let sink = sink(dir.path(), &[refused], &[&deferred], 0.4);
    // Beside the demo's own config, so its relative paths (lake, practices, registered patients) hold.
    std::fs::write(demo.join("digest.secrets.toml"), "link = \"a-long-random-link-secret-for-tests\"\n").unwrap();
    let mut toml = std::fs::read_to_string(demo.join("pulse.toml")).unwrap();
    let mut recipients: Vec<String> = good.clone();
    recipients.insert(3, refused.to_owned());
    let recipients = recipients.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
    let top = format!(
        "[scheduler]\ningest = \"\"\ndigest = \"0 8 * * MON\"\n\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"Practice Pulse <digests@pulse.example.nhs.uk>\"\ntimeout_secs = 10\n\n[digest]\ndashboard_url = \"http://127.0.0.1:8080\"\nlink_secret = {{ file = \"digest.secrets.toml\", key = \"link\" }}\nmax_attempts = 3\nretry_after_minutes = 1\n\n[[subscription]]\nname = \"stoke-weekly\"\ntenant = \"stoke\"\nrecipients = [{recipients}]\n\n",
        sink.port
    );
    // Tables must follow the top-level keys: put ours after them, before the first tenant.
    let at = toml.find("[[tenant]]").unwrap_or(toml.len());
    toml.insert_str(at, &top);
    let config = demo.join("pulse-digest.toml");
    std::fs::write(&config, &toml).unwrap();
    let check = pulse(&["config", "check", "--config", config.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check));

    // First daemon: its clock reaches Monday 26 March 2018 08:00 BST (07:00 UTC) within seconds; killed once two
    // recipients have their digest.
    let log1 = dir.path().join("run1.log");
    let mut first = daemon(&config, &log1, "2018-03-26T06:59:57Z");
    wait_for("two digests", &log1, Duration::from_secs(90), || received(&sink.maildir).values().sum::<usize>() >= 2);
    first.kill().unwrap();
    first.wait().unwrap();
    let log = std::fs::read_to_string(&log1).unwrap();
    assert!(log.contains("digest:stoke-weekly: next run Mon 2018-03-26 08:00 BST"), "{log}");
    let after_kill = received(&sink.maildir);
    assert!(after_kill.values().all(|n| *n == 1), "{after_kill:?}");

    // Restarted half an hour later: the run the first daemon did not finish is caught up at once, under the dead
    // process's lease.
    let log2 = dir.path().join("run2.log");
    let mut second = daemon(&config, &log2, "2018-03-26T07:30:00Z");
    // Two runs: the caught-up one, and the retry of the recipient whose server said "later".
    wait_for("the caught-up run and its retry to finish", &log2, Duration::from_secs(90), || {
        std::fs::read_to_string(&log2).is_ok_and(|l| {
            l.matches("digest:stoke-weekly: failed").count() + l.matches("digest:stoke-weekly: succeeded").count() >= 2
        })
    });
    // SIGTERM: a graceful stop.
    Command::new("kill").args(["-TERM", &second.id().to_string()]).status().unwrap();
    let status = second.wait().unwrap();
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("was cut off mid-run; running it now (once)"), "{log}");
    assert!(log.contains(&format!("{refused} given up")), "{log}");
    // The busy server's recipient was told "later", waited its backoff, and got it on the retry.
    assert!(log.contains(&format!("{deferred} failed (")), "{log}");
    assert!(log.contains("1 sent, "), "the retry sent one: {log}");
    let after_restart = received(&sink.maildir);
    assert!(after_restart.values().all(|n| *n == 1), "never two: {after_restart:?}");
    assert!(!after_restart.contains_key(refused));

    // A send cut off by the kill (between its `pending` record and its outcome) is reported, not re-sent: the
    // server may or may not have taken it (here it depends on where the kill landed). At most one such recipient;
    // everyone the sink has not heard from is among them, so nobody is silently dropped.
    let interrupted: Vec<&String> =
        good.iter().filter(|g| log.contains(&format!("{g} was interrupted mid-send"))).collect();
    assert!(interrupted.len() <= 1, "only an in-flight send can be interrupted: {interrupted:?}\n{log}");
    for g in good.iter().filter(|g| !after_restart.contains_key(*g)) {
        assert!(interrupted.contains(&g), "{g} got nothing and was not reported: {log}");
    }
    // The operator decides to send those now (accepting that one may arrive twice).
    let send = |extra: &[&str]| {
        let mut args = vec!["digest", "send", "--config", config.to_str().unwrap(), "--list", "stoke-weekly"];
        args.extend(["--week", "2018-03-25"]);
        args.extend_from_slice(extra);
        text(&pulse(&args))
    };
    let resend_text = send(&["--resend-interrupted"]);
    assert!(resend_text.contains(&format!("{} sent,", interrupted.len())), "{resend_text}");
    let last = received(&sink.maildir);
    for g in &good {
        let n = last.get(g).copied().unwrap_or(0);
        let allowed = if interrupted.contains(&g) { 1..=2 } else { 1..=1 };
        assert!(allowed.contains(&n), "{g}: {n} in {last:?}");
    }
    // Once more: nothing is sent twice.
    let again = send(&[]);
    assert!(again.contains(&format!("0 sent, {} sent before", good.len())), "{again}");
    assert_eq!(received(&sink.maildir), last);

    // Each message is a well-formed digest of the DST week.
    let one = std::fs::read_dir(&sink.maildir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .unwrap();
    let checked = Command::new("python3").args([SCRIPT, "check-eml"]).arg(one.path()).output().unwrap();
    let body = text(&checked);
    assert!(checked.status.success(), "{body}");
    assert!(body.contains("week of 19 March to 25 March 2018"), "{body}");

    // `pulse status` shows the run (for 08:00 BST on the Monday) and the deliveries.
    let status = pulse(&["status", "--config", config.to_str().unwrap()]);
    let shown = text(&status);
    assert!(status.status.success(), "{shown}");
    assert!(shown.contains("digest:stoke-weekly") && shown.contains("Mon 2018-03-26 08:00 BST"), "{shown}");
    // For that week, by name: who was given up (the refused one), without sending anything.
    let week = pulse(&["status", "--config", config.to_str().unwrap(), "--week", "2018-W12"]);
    let shown = text(&week);
    assert!(shown.contains("list stoke-weekly (week ending 2018-03-25)"), "{shown}");
    assert!(shown.contains(&format!("{refused}: gave_up")), "{shown}");
    assert_eq!(received(&sink.maildir), last, "status sends nothing");
}

/// `pulse export log --format json` gives each record whole: the spec, its hash, each file's SHA-256 (equal to the
/// package's SHA256SUMS); a refused export is there too, with why.
#[test]
fn the_export_log_as_json_has_the_spec_the_hashes_and_the_refusals() {
    let dir = demo();
    std::fs::write(dir.join("export.secrets.toml"), "\"k\" = \"key-of-project-logged-0123456789abcdef\"\n").unwrap();
    let mut toml = std::fs::read_to_string(dir.join("pulse.toml")).unwrap();
    toml.push_str("\n[[export_project]]\nname = \"logged\"\nkey = { file = \"export.secrets.toml\", key = \"k\" }\ntenants = [\"stoke\"]\n");
    let config = dir.join("pulse-export.toml");
    std::fs::write(&config, toml).unwrap();
    let c = config.to_str().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let package = out_dir.path().join("p");
    let export = |tenant: &str, out: &Path| {
        pulse(&[
            "export",
            "--config",
            c,
            "--project",
            "logged",
            "--purpose",
            "DSA-9",
            "--tenant",
            tenant,
            "--from",
            "2018-03-01",
            "--to",
            "2018-03-31",
            "--table",
            "reach_weekly",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let made = export("stoke", &package);
    assert!(made.status.success(), "{}", text(&made));
    let refused = export("north-staffs", &out_dir.path().join("q"));
    assert!(
        !refused.status.success() && text(&refused).contains("not agreed for tenant `north-staffs`"),
        "{}",
        text(&refused)
    );
    let log = pulse(&["export", "log", "--config", c, "--format", "json"]);
    assert!(log.status.success(), "{}", text(&log));
    let records: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    let records = records.as_array().unwrap();
    let exported = records.iter().find(|r| r["project"] == "logged" && r["outcome"] == "exported").expect("the export");
    assert_eq!(exported["spec"]["tables"], serde_json::json!(["reach_weekly"]));
    assert_eq!(exported["spec_hash"].as_str().unwrap().len(), 64);
    let sums = std::fs::read_to_string(package.join("SHA256SUMS")).unwrap();
    for line in sums.lines() {
        let (hash, name) = line.split_once("  ").unwrap();
        assert_eq!(exported["files_sha256"][name], hash, "{name} in {exported}");
    }
    let no = records.iter().find(|r| r["project"] == "logged" && r["outcome"] == "refused").expect("the refusal");
    assert!(no["refused_because"].as_str().unwrap().contains("not agreed"), "{no}");
    assert_eq!(no["rows"], 0);
    let table = text(&pulse(&["export", "log", "--config", c]));
    assert!(table.contains("REFUSED: export project `logged` is not agreed"), "{table}");

    // The digest of a week in that package shows each named practice's engagements exactly as the package does
    // (one rounding of one figure: two different ones would narrow it).
    let base = out_dir.path().join("digest");
    let preview = pulse(&[
        "digest",
        "preview",
        "--config",
        c,
        "--tenant",
        "stoke",
        "--week",
        "2018-W10",
        "--out",
        base.to_str().unwrap(),
    ]);
    assert!(preview.status.success(), "{}", text(&preview));
    let weekly = std::fs::read_to_string(package.join("reach_weekly.csv")).unwrap();
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.with_extension("figures.json")).unwrap()).unwrap();
    let mut compared = 0;
    for c in figures["counts"].as_array().unwrap() {
        let Some(code) = c["id"].as_str().unwrap().strip_prefix("engagements of ") else { continue };
        let row = weekly.lines().find(|l| l.contains(&format!(",{code},2018-03-11,"))).expect(code);
        let in_package = row.rsplit(',').next().unwrap();
        assert_eq!(c["shown"].as_str().unwrap().replace(',', ""), in_package, "{code}: digest {c} vs package {row}");
        compared += 1;
    }
    assert!(compared >= 4, "{figures}");
}
