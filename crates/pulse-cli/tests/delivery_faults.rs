//! Digest delivery under faults, property style: a real SMTP server (aiosmtpd, `digest_check.py fault-sink`) that
//! refuses, defers, stalls before and after storing a message, and dies (its supervisor starts it again); daemons
//! (`pulse run`, clock driven) SIGKILLed or SIGTERMed at random points and restarted, sometimes with a second daemon
//! racing for the same tick from the start and a manual `pulse digest send` alongside. For every recipient:
//!
//! - never two copies (no operator resends here);
//! - everyone not refused and not interrupted gets exactly one, with no operator action;
//! - the interrupted are those whose message went and whose reply was lost (a stalled or dying server, or a SIGKILL
//!   between the message and its reply: at most one per kill), and `pulse status --week` names every one of them;
//! - the refused get nothing and are named as given up.
//!
//! On the lake and on ClickHouse (`PULSE_TEST_CLICKHOUSE_URL`), seeds 1..=10 each in CI, and on ClickHouse with
//! leases in ZooKeeper, seeds 1..=6; every run prints its
//! seed and what it did. `PULSE_FAULT_SEEDS=1-200` runs more (benches/results/delivery-faults.md records such runs).
//! Needs python3 with aiosmtpd; skipped without it unless `PULSE_REQUIRE_PYTHON_TOOLS=1` (CI sets it).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::free_port;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/digest_check.py");
const LIST_TENANT: &str = "alpha";
/// The run being tested: Monday 26 March 2018, 08:00 BST (07:00 UTC), for the week ending Sunday 25 March.
const TICK_SOON: &str = "2018-03-26T06:59:58Z";
const RESTART_AT: &str = "2018-03-26T07:30:00Z";
const WEEK: &str = "2018-W12";
const SPEED: &str = "30";

fn pulse() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pulse"));
    c.env_remove("RUST_LOG").env_remove("PULSE_CONFIG");
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn python_tools() -> bool {
    let ok = Command::new("python3").args(["-c", "import aiosmtpd"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("PULSE_REQUIRE_PYTHON_TOOLS").is_none(),
            "PULSE_REQUIRE_PYTHON_TOOLS is set but python3 cannot import aiosmtpd (pip install aiosmtpd)"
        );
        eprintln!("skipped: the delivery fault test needs python3 with aiosmtpd (pip install aiosmtpd)");
    }
    ok
}

/// SplitMix64: the test's own small generator, so a seed means the same run everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// A small simulated world ingested into the store and its reports computed: the config's path.
struct World {
    _sim: Child,
    config: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self._sim.kill();
        let _ = self._sim.wait();
    }
}

fn world(dir: &Path, clickhouse: Option<&str>, zookeeper: Option<&str>) -> World {
    let scenario = dir.join("small.toml");
    std::fs::write(
        &scenario,
        "[world]\nname = \"faults\"\nseed = 11\napi_version = \"v2.12\"\nstart = \"2018-02-01\"\nend = \"2018-03-31\"\n\n\
         [[tenant]]\nid = \"alpha\"\nname = \"Alpha\"\ncode_prefix = \"M83\"\npractices = 4\nfacebook_share = 1.0\n\
         list_size = [3000, 12000]\n",
    )
    .unwrap();
    let mut sim = pulse()
        .args(["sim", "--scenario", scenario.to_str().unwrap(), "--port", "0", "--config-out"])
        .arg(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("pulse sim starts");
    let mut lines = BufReader::new(sim.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("serving on http://") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let config = dir.join("pulse.toml");
    if let Some(url) = clickhouse {
        let lake = "[store]\nbackend = \"lake\"\nlake_dir = \".\"";
        let body = std::fs::read_to_string(&config).unwrap();
        assert!(body.contains(lake), "{body}");
        // Its own database per variant: the ClickHouse variants run at once in this process.
        let db = format!("pulse_faults_{}{}", std::process::id(), if zookeeper.is_some() { "_zk" } else { "" });
        let mut ch =
            format!("[store]\nbackend = \"clickhouse\"\n\n[store.clickhouse]\nurl = \"{url}\"\ndatabase = \"{db}\"");
        if let Some(zk) = zookeeper {
            ch.push_str(&format!("\nzookeeper = \"{zk}\""));
        }
        std::fs::write(&config, body.replace(lake, &ch)).unwrap();
        let out = pulse().args(["migrate", "--config", config.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "migrate: {}", text(&out));
    }
    let c = config.to_str().unwrap();
    let out =
        pulse().args(["ingest", "--config", c, "--today", "2018-04-01", "--since", "2018-02-01"]).output().unwrap();
    assert!(out.status.success(), "ingest: {}", text(&out));
    let out = pulse().args(["jobs", "run", "--config", c]).output().unwrap();
    assert!(out.status.success(), "jobs: {}", text(&out));
    World { _sim: sim, config }
}

/// The SMTP server that misbehaves on cue (and its supervisor); killed when dropped.
struct Sink {
    child: Child,
    maildir: PathBuf,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn sink(dir: &Path, port: u16, plan: &BTreeMap<String, Vec<&str>>) -> Sink {
    let plan_file = dir.join("plan.json");
    let json: Vec<String> = plan
        .iter()
        .map(|(r, steps)| {
            format!("\"{r}\": [{}]", steps.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "))
        })
        .collect();
    std::fs::write(&plan_file, format!("{{{}}}", json.join(", "))).unwrap();
    let maildir = dir.join("maildir");
    let child = Command::new("python3")
        .args([SCRIPT, "fault-sink", "--port", &port.to_string(), "--stall", "4.5"])
        .arg("--maildir")
        .arg(&maildir)
        .arg("--plan")
        .arg(&plan_file)
        .arg("--state")
        .arg(dir.join("sink-state.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the fault sink did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Sink { child, maildir }
}

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

/// A `pulse run` process, killed if the test ends (or fails) with it still running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(config: &Path, log: &Path, clock_start: &str) -> Daemon {
    Daemon(
        pulse()
            .args(["run", "--config", config.to_str().unwrap(), "--clock-start", clock_start, "--clock-speed", SPEED])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("pulse run starts"),
    )
}

/// Each recipient's state in `pulse status --week`, which names every recipient (`sent`, `gave_up`, `interrupted`,
/// `failed`, `pending`).
fn status(config: &Path) -> (BTreeMap<String, String>, String) {
    let out = pulse().args(["status", "--config", config.to_str().unwrap(), "--week", WEEK]).output().unwrap();
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let mut states = BTreeMap::new();
    for line in shown.lines() {
        if let Some((r, rest)) = line.trim().split_once(": ")
            && r.contains('@')
            && !r.contains(' ')
        {
            states.insert(r.to_owned(), rest.split([' ', '(']).next().unwrap_or("").to_owned());
        }
    }
    (states, shown)
}

fn alive(d: &mut Daemon) -> bool {
    d.0.try_wait().unwrap().is_none()
}

fn stop(d: &mut Daemon, signal: &str) {
    let _ = Command::new("kill").args([signal, &d.0.id().to_string()]).status();
    let _ = d.0.wait();
}

/// How many times the sink saw each recipient (its state file survives its restarts).
fn attempts(dir: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(dir.join("sink-state.json")).unwrap_or_else(|_| "{}".into());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v.as_object().map(|o| o.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect()).unwrap_or_default()
}

/// One randomized run on `world`; panics with the seed and the story on any broken promise.
fn one_run(world: &World, root: &Path, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let dir = root.join(format!("seed-{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut story = vec![format!("seed {seed}")];
    // Six recipients with random server behaviour, and one the server refuses for good.
    let faults = [
        vec![],
        vec!["defer"],
        vec!["defer", "defer"],
        vec!["stall-rcpt"],
        vec!["stall-after-store"],
        vec!["stall-before-store"],
        vec!["die-after-store"],
        vec!["die-before-store"],
    ];
    let mut plan: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut ambiguous = Vec::new();
    for i in 1..=6 {
        let r = format!("r{i}.s{seed}@alpha.example.nhs.uk");
        let f = faults[rng.below(faults.len() as u64) as usize].clone();
        if f.iter().any(|s| s.contains("store")) {
            ambiguous.push(r.clone());
        }
        plan.insert(r, f);
    }
    let refused = format!("gone.s{seed}@alpha.example.nhs.uk");
    plan.insert(refused.clone(), vec!["refuse"]);
    story.push(format!("plan {plan:?}"));
    let port = free_port();
    let sink = sink(&dir, port, &plan);

    let list = format!("faults-{seed}");
    let recipients: Vec<String> = plan.keys().map(|r| format!("\"{r}\"")).collect();
    let mut toml = std::fs::read_to_string(&world.config).unwrap();
    let top = format!(
        "[scheduler]\ningest = \"\"\ndigest = \"0 8 * * MON\"\nlease_minutes = 1\n\n[smtp]\nhost = \"127.0.0.1\"\n\
         port = {port}\nsecurity = \"none\"\nfrom = \"Practice Pulse <digests@pulse.example.nhs.uk>\"\ntimeout_secs = 3\n\n\
         [digest]\ndashboard_url = \"https://pulse.example.nhs.uk\"\nlink_secret = {{ file = \"digest.secrets.toml\", key = \"link\" }}\n\
         max_attempts = 6\nretry_after_minutes = 1\n\n[[subscription]]\nname = \"{list}\"\ntenant = \"{LIST_TENANT}\"\n\
         recipients = [{}]\n\n",
        recipients.join(", ")
    );
    let at = toml.find("[[tenant]]").unwrap_or(toml.len());
    toml.insert_str(at, &top);
    let config = world.config.with_file_name(format!("pulse-faults-{seed}.toml"));
    std::fs::write(&config, &toml).unwrap();

    // The first daemon, and sometimes a second racing it for the same tick.
    let logs: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("daemon{i}.log"))).collect();
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let mut daemons: Vec<Daemon> = vec![daemon(&config, &logs[0], TICK_SOON)];
    if rng.chance(0.5) {
        daemons.push(daemon(&config, &logs[1], TICK_SOON));
        story.push("a second daemon races the first for the tick".into());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let sender = loop {
        if let Some(i) = (0..daemons.len()).find(|i| read(&logs[*i]).contains("started run")) {
            break i;
        }
        assert!(Instant::now() < deadline, "no daemon started the run: {}", read(&logs[0]));
        std::thread::sleep(Duration::from_millis(20));
    };
    // Killed at a random point of its sending.
    let wait_ms = rng.below(3000);
    std::thread::sleep(Duration::from_millis(wait_ms));
    let kill = rng.chance(0.6);
    let mut kills = 0;
    if alive(&mut daemons[sender]) {
        stop(&mut daemons[sender], if kill { "-KILL" } else { "-TERM" });
        kills += usize::from(kill);
        story.push(format!("daemon {sender} {} after {wait_ms} ms", if kill { "SIGKILLed" } else { "SIGTERMed" }));
    }
    // Sometimes the operator sends by hand meanwhile (it sends, or is refused by the lease naming its holder), on
    // the daemons' clock so that the retry times it sets are theirs.
    if rng.chance(0.4) {
        let out = pulse()
            .args(["digest", "send", "--config", config.to_str().unwrap(), "--list", &list, "--week", "2018-03-25"])
            .args(["--at", "2018-03-26T07:05:00Z"])
            .output()
            .unwrap();
        let said = text(&out);
        let refused = said.contains("is being sent by");
        let sent = out.status.code() == Some(0) || (out.status.code() == Some(1) && said.contains(" sent, "));
        assert!(sent || refused, "seed {seed}: manual send: {said}");
        let line = said.lines().find(|l| l.contains(" sent, ") || l.contains("is being sent by")).unwrap_or("");
        story.push(format!("manual send: {}", line.trim().chars().take(120).collect::<String>()));
    }
    // Restarted half an hour later (on its clock).
    daemons.push(daemon(&config, &logs[2], RESTART_AT));
    story.push("a daemon restarted at 07:30 UTC".into());

    // Until every recipient is settled and stays so (a stalled send is over in ~2.5 s).
    let deadline = Instant::now() + Duration::from_secs(240);
    // `pending` is a send in flight or one cut off by a kill: settled once it stays so longer than any send takes.
    let settled = |states: &BTreeMap<String, String>| {
        plan.keys()
            .all(|r| states.get(r).is_some_and(|s| ["sent", "gave_up", "interrupted", "pending"].contains(&s.as_str())))
    };
    let mut stable = 0;
    let mut last = BTreeMap::new();
    while stable < 3 {
        let (states, shown) = status(&config);
        if settled(&states) && states == last {
            stable += 1;
        } else {
            stable = 0;
        }
        last = states;
        assert!(
            Instant::now() < deadline,
            "seed {seed}: not settled: {shown}\n{}\nlogs:\n{}",
            story.join("\n"),
            logs.iter().map(read).collect::<Vec<_>>().join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(2000));
    }
    for d in daemons.iter_mut() {
        if alive(d) {
            stop(d, "-TERM");
        }
    }
    let (states, shown) = status(&config);
    let got = received(&sink.maildir);
    let why = || {
        format!(
            "{}\nstatus:\n{shown}\nreceived: {got:?}\nlogs:\n{}",
            story.join("\n"),
            logs.iter().map(read).collect::<Vec<_>>().join("\n---\n")
        )
    };
    let tried = attempts(&dir);
    let mut interrupted = Vec::new();
    for (r, faults) in &plan {
        let n = got.get(r).copied().unwrap_or(0);
        // With every daemon stopped, a `pending` is a send cut off between its record and its outcome.
        let state = match states.get(r).map(String::as_str).unwrap_or("") {
            "pending" => "interrupted",
            s => s,
        };
        assert!(n <= 1, "seed {seed}: {r} got {n} copies\n{}", why());
        if *r == refused {
            assert_eq!((n, state), (0, "gave_up"), "seed {seed}: the refused recipient\n{}", why());
            continue;
        }
        // What the server did to its first attempt decides what the recipient has, exactly.
        let first = faults.first().copied().unwrap_or("ok");
        if tried.get(r).copied().unwrap_or(0) > 0 {
            match first {
                "stall-after-store" | "stall-before-store" | "die-after-store" => {
                    assert_eq!((n, state), (1, "interrupted"), "seed {seed}: {r} ({first})\n{}", why())
                }
                "die-before-store" => {
                    assert_eq!((n, state), (0, "interrupted"), "seed {seed}: {r} ({first})\n{}", why())
                }
                _ => {}
            }
        }
        if state == "interrupted" {
            interrupted.push(r.clone());
        } else {
            assert_eq!((n, state), (1, "sent"), "seed {seed}: {r} is owed exactly one\n{}", why());
        }
    }
    // Interrupted only where the reply could truly be lost: the server stalled or died after the message, or a
    // SIGKILL landed between a message and its reply (one per kill at most).
    let unexplained: Vec<&String> = interrupted.iter().filter(|r| !ambiguous.contains(r)).collect();
    assert!(unexplained.len() <= kills, "seed {seed}: interrupted without cause: {unexplained:?}\n{}", why());
    assert!(shown.contains(&format!("--list {list} --week 2018-03-25 --resend-interrupted")) || interrupted.is_empty());
    eprintln!("seed {seed}: ok; {} interrupted, {} copies; {}", interrupted.len(), got.len(), story[2..].join("; "));
    drop(sink);
}

fn seeds(default: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    match std::env::var("PULSE_FAULT_SEEDS") {
        Ok(s) => match s.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect(),
            None => s.split(',').map(|x| x.trim().parse().unwrap()).collect(),
        },
        Err(_) => default.collect(),
    }
}

fn run_all(clickhouse: Option<&str>, zookeeper: Option<&str>, default_seeds: std::ops::RangeInclusive<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let world = world(dir.path(), clickhouse, zookeeper);
    std::fs::write(dir.path().join("digest.secrets.toml"), "link = \"a-long-random-link-secret-for-tests\"\n").unwrap();
    for seed in seeds(default_seeds) {
        one_run(&world, dir.path(), seed);
    }
}

#[test]
fn delivery_keeps_its_promises_under_random_faults_on_the_lake() {
    if !python_tools() {
        return;
    }
    run_all(None, None, 1..=10);
}

#[test]
fn delivery_keeps_its_promises_under_random_faults_on_clickhouse() {
    if !python_tools() {
        return;
    }
    let Ok(url) = std::env::var("PULSE_TEST_CLICKHOUSE_URL") else {
        assert!(
            std::env::var("PULSE_REQUIRE_CLICKHOUSE").as_deref() != Ok("1"),
            "PULSE_REQUIRE_CLICKHOUSE=1 but PULSE_TEST_CLICKHOUSE_URL is not set"
        );
        eprintln!(
            "skipped: export PULSE_TEST_CLICKHOUSE_URL=$(bash .ci/clickhouse.sh) to run the fault test on ClickHouse"
        );
        return;
    };
    run_all(Some(&url), None, 1..=10);
}

/// The same on ClickHouse with leases in ZooKeeper (the cluster's, `PULSE_TEST_CLICKHOUSE_CLUSTER_DIR`): a killed
/// holder's lease ends with its session instead of at its expiry. Seeds 1..=6 in CI.
#[test]
fn delivery_keeps_its_promises_under_random_faults_with_leases_in_zookeeper() {
    if !python_tools() {
        return;
    }
    let url = std::env::var("PULSE_TEST_CLICKHOUSE_URL").ok();
    let zk = std::env::var("PULSE_TEST_CLICKHOUSE_CLUSTER_DIR").ok().filter(|d| !d.is_empty()).map(|dir| {
        let cfg = std::fs::read_to_string(Path::new(&dir).join("zk/conf/zoo.cfg")).expect("the cluster's zoo.cfg");
        let port = cfg.lines().find_map(|l| l.strip_prefix("clientPort=")).expect("clientPort in zoo.cfg").trim();
        format!("127.0.0.1:{port}")
    });
    let (Some(url), Some(zk)) = (url, zk) else {
        assert!(
            std::env::var("PULSE_REQUIRE_CLICKHOUSE_CLUSTER").as_deref() != Ok("1"),
            "PULSE_REQUIRE_CLICKHOUSE_CLUSTER=1 but PULSE_TEST_CLICKHOUSE_URL or PULSE_TEST_CLICKHOUSE_CLUSTER_DIR is not set"
        );
        eprintln!(
            "skipped: export PULSE_TEST_CLICKHOUSE_URL=$(bash .ci/clickhouse.sh) and \
             PULSE_TEST_CLICKHOUSE_CLUSTER_DIR=$(bash .ci/clickhouse-cluster.sh) to run the fault test with ZooKeeper"
        );
        return;
    };
    run_all(Some(&url), Some(&zk), 1..=6);
}
