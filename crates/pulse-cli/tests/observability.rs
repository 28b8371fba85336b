//! A real Prometheus scrapes `pulse serve` and `pulse run` (the scheduler), and what it stored is asked through its
//! own HTTP API: the analyst service's requests by route and status, and the daemon's Graph calls, ingested rows and
//! scheduled runs. Needs Debian's `prometheus` (`bash .ci/run` installs it; or `apt-get install prometheus`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, pulse, small_scenario, start_sim, text};

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and reads its stderr until a line holds `marker`; returns the process and the text after the marker
/// up to the next space or `/` (an address). The rest of stderr goes to `log`.
fn start(mut cmd: Command, marker: &str, log: &Path) -> (Killed, String) {
    let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("pulse starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let child = Killed(child);
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split(marker).nth(1) {
            let addr = rest.split(['/', ' ']).next().unwrap().to_owned();
            let log = log.to_owned();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::File::create(log).unwrap();
                for l in lines.map_while(Result::ok) {
                    let _ = writeln!(f, "{l}");
                }
            });
            return (child, addr);
        }
    }
    panic!("no line with `{marker}`:\n{seen}");
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of a PromQL expression that answers one number (None while Prometheus has nothing for it).
fn promql(prometheus: &str, expr: &str) -> Option<f64> {
    let body =
        curl(&["-G", &format!("http://{prometheus}/api/v1/query"), "--data-urlencode", &format!("query={expr}")]);
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Every metric name the code records or describes (`"pulse_…"` string literals under `crates/*/src`).
fn recorded_metric_names() -> std::collections::BTreeSet<String> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut names = std::collections::BTreeSet::new();
    let mut dirs: Vec<std::path::PathBuf> =
        std::fs::read_dir(crates).unwrap().map(|e| e.unwrap().path().join("src")).collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for path in entries.map(|e| e.unwrap().path()) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices("!(\"pulse_") {
                    let name: String =
                        text[at + 3..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    names.insert(name);
                }
            }
        }
    }
    names
}

/// The provisioned Grafana dashboard (`config/grafana/dashboards/pulse.json`, docker-compose's `grafana`): every
/// panel's query is valid PromQL to this real Prometheus, names only metrics the code records, and the panels of
/// what this test did (requests by route, rows ingested, Graph calls) draw something.
fn grafana_dashboard_queries_run_on_what_prometheus_scraped(prom: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/grafana/dashboards/pulse.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let recorded = recorded_metric_names();
    assert!(recorded.contains("pulse_http_requests_total") && recorded.len() >= 10, "{recorded:?}");
    let targets: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_owned();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect();
    assert!(targets.len() >= 10, "{} queries", targets.len());
    for (title, expr) in &targets {
        for (at, _) in expr.match_indices("pulse_") {
            let name: String = expr[at..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(recorded.contains(base), "panel `{title}` reads `{name}`, which no code records");
        }
    }
    // rate() and increase() need two scrapes of a series: ask until the panels of what this test did draw.
    let must = ["requests per second", "99th percentile latency", "rows written", "Graph API calls", "Report jobs"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut drawn = Vec::new();
        for (title, expr) in &targets {
            let body =
                curl(&["-G", &format!("http://{prom}/api/v1/query"), "--data-urlencode", &format!("query={expr}")]);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{title}: {body}"));
            assert_eq!(v["status"], "success", "panel `{title}`: Prometheus refused `{expr}`: {body}");
            if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
                drawn.push(title.clone());
            }
        }
        let blank: Vec<&str> = must.iter().copied().filter(|m| !drawn.iter().any(|t| t.contains(m))).collect();
        if blank.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the panels {blank:?} drew nothing in a minute; drawn: {drawn:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn prometheus_binary() -> Option<String> {
    let found = Command::new("sh").args(["-c", "command -v prometheus"]).output().unwrap();
    if found.status.success() {
        return Some(String::from_utf8_lossy(&found.stdout).trim().to_owned());
    }
    assert!(
        std::env::var("PULSE_REQUIRE_PROMETHEUS").is_err(),
        "PULSE_REQUIRE_PROMETHEUS is set but prometheus is not installed"
    );
    eprintln!("skipped: needs Debian's prometheus on PATH (bash .ci/run installs it; or apt-get install prometheus)");
    None
}

/// Starts Prometheus on a free port and waits until it is ready; a port taken in between (the free port is only free
/// when asked) means another try on another port.
fn start_prometheus(binary: &str, config: &Path, dir: &Path) -> (Killed, String) {
    for attempt in 0..5 {
        let port = free_port();
        let mut child = Killed(
            Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join(format!("data-{attempt}")).display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
                .spawn()
                .expect("prometheus starts"),
        );
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && child.0.try_wait().unwrap().is_none() {
            if curl(&[&format!("http://{address}/-/ready")]).contains("Ready") {
                return (child, address);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    panic!("Prometheus did not start: {}", std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default());
}

#[test]
fn prometheus_scrapes_the_service_and_the_scheduler() {
    let Some(prometheus) = prometheus_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let sim = start_sim(&dir.path().join("run"), &scenario);
    let config = sim.config.to_str().unwrap().to_owned();
    // The scheduler ingests every minute (and no digests), so a run comes round within seconds on a fast clock.
    let text_config = std::fs::read_to_string(&sim.config).unwrap();
    assert!(!text_config.contains("[scheduler]"), "{text_config}");
    std::fs::write(&sim.config, format!("{text_config}\n[scheduler]\ningest = \"* * * * *\"\ndigest = \"\"\n"))
        .unwrap();
    // Reports to serve: a backfill and the pipelines, as an operator starts.
    for args in [
        vec!["ingest", "--config", &config, "--today", &sim.today, "--since", &sim.start],
        vec!["jobs", "run", "--config", &config],
    ] {
        let out = pulse().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {:?}", text(&out));
    }
    let out = pulse().args(["keys", "create", "--config", &config, "--tenant", "alpha", "--name", "metrics"]).output();
    let out = out.unwrap();
    let (stdout, _) = text(&out);
    let key = stdout.lines().find(|l| l.starts_with("pulse_")).expect("a key is printed").trim().to_owned();

    let mut serve = pulse();
    serve.args(["serve", "--config", &config, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
    let (_serve, serve_metrics) = start(serve, "metrics for Prometheus on http://", &dir.path().join("serve.log"));
    let mut run = pulse();
    let clock = format!("{}T12:00:00Z", sim.today);
    run.args(["run", "--config", &config, "--clock-start", &clock, "--clock-speed", "20"]);
    run.args(["--metrics-listen", "127.0.0.1:0"]);
    let (_run, run_metrics) = start(run, "metrics for Prometheus on http://", &dir.path().join("run.log"));

    // The service's own address is on the line after the metrics line, in `pulse serve`'s log.
    let deadline = Instant::now() + Duration::from_secs(30);
    let service = loop {
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        if let Some(rest) = log.split("analyst service on http://").nth(1) {
            break rest.split('/').next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "pulse serve never said where it listens: {log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let auth = format!("Authorization: Bearer {key}");
    for _ in 0..5 {
        let url = format!("http://{service}/api/v1/reports/reach");
        assert_eq!(curl(&["-o", "/dev/null", "-w", "%{http_code}", "-H", &auth, &url]), "200");
    }
    let missing = curl(&["-o", "/dev/null", "-w", "%{http_code}", "-H", &auth, &format!("http://{service}/api/v9/x")]);
    assert_eq!(missing, "404");

    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: serve\n    static_configs:\n      - targets: \
             ['{serve_metrics}']\n  - job_name: run\n    static_configs:\n      - targets: ['{run_metrics}']\n"
        ),
    )
    .unwrap();
    let (_prometheus, prom) = start_prometheus(&prometheus, &prom_config, &prom_dir);
    let checks = [
        // Five report requests answered 200 on their route template, and the 404 counted as unmatched.
        (r#"sum(pulse_http_requests_total{job="serve",route="/api/v1/reports/{kind}",status="200"})"#, 5.0),
        (r#"sum(pulse_http_requests_total{job="serve",route="unmatched",status="404"})"#, 1.0),
        (r#"sum(pulse_http_request_duration_seconds_count{job="serve"})"#, 6.0),
        // The scheduler's ingest: Graph calls that succeeded, rows written, a run that ended, report jobs.
        (r#"sum(pulse_graph_requests_total{job="run",outcome="ok"})"#, 1.0),
        (r#"sum(pulse_ingest_rows_total{job="run"})"#, 1.0),
        (r#"sum(pulse_scheduler_runs_total{job="run",kind="ingest"})"#, 1.0),
        (r#"sum(pulse_report_jobs_total{job="run",outcome="ok"})"#, 1.0),
        (r#"sum(pulse_page_tokens_checked{job="run"})"#, 1.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut missing = Vec::new();
    while Instant::now() < deadline {
        missing = checks
            .iter()
            .filter(|(q, want)| promql(&prom, q).is_none_or(|v| v < *want))
            .map(|(q, want)| format!("{q} >= {want} (now {:?})", promql(&prom, q)))
            .collect();
        if missing.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        missing.is_empty(),
        "Prometheus never had:\n{}\nrun.log:\n{}\nprometheus.log tail:\n{}",
        missing.join("\n"),
        logs("run.log"),
        logs("prometheus/prometheus.log").lines().rev().take(10).collect::<Vec<_>>().join("\n")
    );
    grafana_dashboard_queries_run_on_what_prometheus_scraped(&prom);
    // What is scraped names routes and tenants, never the key, its id, or a page's token (the tokens the simulator
    // issued are in its secrets file beside the config), although the service logged the key's id on its span.
    let key_id = key.split('_').nth(1).expect("pulse_<id>_<secret>");
    assert!(logs("serve.log").contains(key_id), "the request span names the key's id:\n{}", logs("serve.log"));
    let tokens = std::fs::read_to_string(sim.config.with_file_name("sim-tokens.secrets.toml")).unwrap();
    let tokens: Vec<&str> = tokens.lines().filter_map(|l| l.split('"').nth(3)).collect();
    assert!(tokens.len() >= 7, "{tokens:?}");
    for target in [&serve_metrics, &run_metrics] {
        let body = curl(&[&format!("http://{target}/metrics")]);
        assert!(body.contains("# HELP pulse_"), "{body}");
        assert!(!body.contains(&key) && !body.contains(key_id), "the key or its id in /metrics:\n{body}");
        assert!(!tokens.iter().any(|t| body.contains(t)), "a page token in /metrics");
    }
}

/// Each request a receiver took: its path and body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// An OTLP/HTTP receiver on a loopback port: every request's path and body, answered 200 with an empty
/// (protobuf) export response. Stands in for an OpenTelemetry collector.
fn otlp_receiver() -> (u16, Received) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                loop {
                    // One request: headers up to the blank line, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + length].to_vec();
                    buf.drain(..head_end + length);
                    seen.lock().unwrap().push((path, body));
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (port, got)
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, an ingest's spans go to that collector over OTLP/HTTP: the run, its pages,
/// their Graph calls and store writes, with the tenant as an attribute and never a page's token.
#[test]
fn ingest_spans_are_exported_to_an_otlp_collector_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let sim = start_sim(&dir.path().join("run"), &scenario);
    let config = sim.config.to_str().unwrap().to_owned();
    let (port, got) = otlp_receiver();
    let out = pulse()
        .args(["ingest", "--config", &config, "--today", &sim.today, "--since", &sim.start])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let got = got.lock().unwrap().clone();
    assert!(!got.is_empty(), "no OTLP request reached the collector: {:?}", text(&out).1);
    assert!(got.iter().all(|(path, _)| path == "/v1/traces"), "{:?}", got.iter().map(|g| &g.0).collect::<Vec<_>>());
    let body: Vec<u8> = got.iter().flat_map(|(_, b)| b.clone()).collect();
    let has = |needle: &str| body.windows(needle.len()).any(|w| w == needle.as_bytes());
    for span in ["ingest_run", "page", "graph_call", "store_write"] {
        assert!(has(span), "no `{span}` span was exported");
    }
    assert!(has("alpha") && has("pulse"), "the tenant and the service name travel with the spans");
    let tokens = std::fs::read_to_string(sim.config.with_file_name("sim-tokens.secrets.toml")).unwrap();
    let tokens: Vec<&str> = tokens.lines().filter_map(|l| l.split('"').nth(3)).collect();
    assert!(tokens.len() >= 7, "{tokens:?}");
    assert!(!tokens.iter().any(|t| has(t)), "a page token was exported");
}
