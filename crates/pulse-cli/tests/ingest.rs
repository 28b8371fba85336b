//! `pulse ingest` as an operator runs it, against `pulse sim` in another process: what a run that stores nothing
//! says, one line for an unreachable Graph API, a ClickHouse server killed mid-ingest and a connection cut mid-insert
//! (exit 3 with a message and a run record), and output pipes whose reader went away (the run finishes and records
//! itself instead of dying of SIGPIPE with exit 141).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{pulse, small_scenario, start_sim, text};

#[test]
fn a_run_that_stores_nothing_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let sim = start_sim(&dir.path().join("run"), &scenario);
    let config = sim.config.to_str().unwrap();
    // The default --today is today; the simulated world's data ended in 2018, so nothing comes back.
    let out = pulse().args(["ingest", "--config", config]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("nothing was stored: the Graph API answered"), "{stdout}");
    assert!(stdout.contains("pass --today"), "{stdout}");
    // A real backfill, then the same day again: nothing is due.
    let out =
        pulse().args(["ingest", "--config", config, "--today", &sim.today, "--since", &sim.start]).output().unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(!text(&out).0.contains("nothing was stored"), "{:?}", text(&out));
    let out =
        pulse().args(["ingest", "--config", config, "--today", &sim.today, "--lookback-days", "1"]).output().unwrap();
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    // With a lookback of one day the last day is read again (Meta revises recent days); rows are written, not doubled.
    assert!(stdout.contains("rows written"), "{stdout}");
}

#[test]
fn an_unreachable_graph_api_is_one_line_not_one_per_page() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let sim = start_sim(&dir.path().join("run"), &scenario);
    let text_config = std::fs::read_to_string(&sim.config).unwrap();
    let base = text_config.lines().find(|l| l.starts_with("base_url")).unwrap().to_owned();
    // Port 9 (discard) on loopback: nothing listens there.
    std::fs::write(&sim.config, text_config.replace(&base, "base_url = \"http://127.0.0.1:9\"")).unwrap();
    let out =
        pulse().args(["ingest", "--config", sim.config.to_str().unwrap(), "--today", &sim.today]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let unreachable: Vec<&str> = stdout.lines().filter(|l| l.starts_with("GRAPH API UNREACHABLE")).collect();
    assert_eq!(unreachable.len(), 1, "{stdout}");
    assert!(unreachable[0].contains("http://127.0.0.1:9") && unreachable[0].contains("none of 7 pages"), "{stdout}");
    assert!(!stdout.contains("FAILED:"), "no line per page: {stdout}");
    assert!(stderr.matches("cannot reach the Graph API").count() <= 1, "one log line: {stderr}");
}

/// A ClickHouse server of this test's own (it is killed), or None outside CI when there is no clickhouse-server.
fn own_clickhouse(dir: &Path) -> Option<(String, u32)> {
    let have = Command::new("sh").args(["-c", "command -v clickhouse-server"]).output().unwrap().status.success();
    if !have {
        assert!(
            std::env::var("PULSE_REQUIRE_CLICKHOUSE").is_err(),
            "PULSE_REQUIRE_CLICKHOUSE is set but clickhouse-server is not installed"
        );
        eprintln!(
            "skipped: needs clickhouse-server on PATH (bash .ci/run installs it; or apt-get install clickhouse-server)"
        );
        return None;
    }
    let dir_file = dir.join("clickhouse-dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/clickhouse.sh");
    // The server takes PORT (HTTP) and PORT+1 (TCP): both must be free. Another process can take one between the
    // check and the start, so a start refused with "Address already in use" is tried again on other ports.
    let free_pair = || loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    };
    let mut out = None;
    for _ in 0..3 {
        let started = Command::new("bash")
            .arg(&script)
            .arg(free_pair().to_string())
            .env("PULSE_CLICKHOUSE_DIR_FILE", &dir_file)
            .output()
            .unwrap();
        let retry = !started.status.success() && format!("{:?}", text(&started)).contains("Address already in use");
        out = Some(started);
        if !retry {
            break;
        }
    }
    let out = out.unwrap();
    assert!(out.status.success(), "starting ClickHouse: {:?}", text(&out));
    let url = text(&out).0.trim().to_owned();
    let server_dir = std::fs::read_to_string(&dir_file).unwrap();
    let pid: u32 = std::fs::read_to_string(Path::new(server_dir.trim()).join("pid")).unwrap().trim().parse().unwrap();
    Some((url, pid))
}

fn count_rows(url: &str) -> u64 {
    let out = Command::new("curl")
        .args(["-fsS", &format!("{url}/?query=SELECT%20count()%20FROM%20pulse.page_insights")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn clickhouse_killed_mid_ingest_gives_exit_3_a_message_and_a_run_record() {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, pid)) = own_clickhouse(dir.path()) else { return };
    let sim = start_sim(&dir.path().join("run"), "case-study");
    sim.use_clickhouse(&url);
    let config = sim.config.to_str().unwrap();
    let ingest = pulse()
        .args(["ingest", "--config", config, "--today", &sim.today, "--since", &sim.start, "--store-retry-secs", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once the first batch has landed, while the rest of the backfill is still being fetched.
    let mut ingest = ingest;
    let started = Instant::now();
    while count_rows(&url) == 0 {
        if let Some(status) = ingest.try_wait().unwrap() {
            panic!("pulse ingest ended before writing anything: {status:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no rows reached ClickHouse in two minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let out = ingest.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "exit {:?} (141 is SIGPIPE)\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("STORE UNAVAILABLE") && stdout.contains("cannot reach ClickHouse"), "{stdout}");
    assert!(
        stdout.contains("were not written (or not all of them) and no checkpoint was advanced past data"),
        "{stdout}"
    );
    let records: Vec<PathBuf> = std::fs::read_dir(dir.path().join("run/pulse-runs"))
        .expect("the run record went to pulse-runs/ beside the config")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = std::fs::read_to_string(&records[0]).unwrap();
    assert!(record.contains("\"status\": \"partial\""), "{record}");
    assert!(stdout.contains(&records[0].display().to_string()), "the closing lines name the file: {stdout}");
}

/// A TCP proxy to ClickHouse that cuts a connection in the middle of a large request body (an insert being
/// streamed), then refuses every connection after it: the server "dies" while pulse is writing to the socket,
/// which is what used to kill pulse with SIGPIPE (exit 141, no message).
fn cutting_proxy(upstream: String) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dead = Arc::new(AtomicBool::new(false));
    let flag = dead.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            if flag.load(Ordering::SeqCst) {
                drop(client); // the server is gone
                continue;
            }
            let Ok(mut server) = TcpStream::connect(&upstream) else { continue };
            let (mut client_r, mut server_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let flag = flag.clone();
            let sent = Arc::new(AtomicU64::new(0));
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match client_r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // Only an insert's body is this large: cut it half-way, with data still unread, so the
                    // client's next write meets a reset connection.
                    if sent.fetch_add(n as u64, Ordering::SeqCst) > 512 * 1024 {
                        flag.store(true, Ordering::SeqCst);
                        let _ = server_w.shutdown(std::net::Shutdown::Both);
                        drop(client_r);
                        return;
                    }
                    if server_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server_w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    (url, dead)
}

#[test]
fn a_connection_cut_mid_insert_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, _pid)) = own_clickhouse(dir.path()) else { return };
    let sim = start_sim(&dir.path().join("run"), "case-study");
    let original = std::fs::read_to_string(&sim.config).unwrap();
    sim.use_clickhouse(&url);
    let (proxy, dead) = cutting_proxy(url.trim_start_matches("http://").to_owned());
    std::fs::write(&sim.config, original).unwrap();
    sim.use_clickhouse(&proxy);
    let config = sim.config.to_str().unwrap();
    let out = pulse()
        .args(["ingest", "--config", config, "--today", &sim.today, "--since", &sim.start, "--store-retry-secs", "3"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(dead.load(Ordering::SeqCst), "the proxy never cut an insert: {stdout}");
    assert_eq!(out.status.code(), Some(3), "exit {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("STORE UNAVAILABLE") && stdout.contains("pulse-runs"), "{stdout}");
}

#[test]
fn closed_output_pipes_do_not_kill_a_run_whose_store_went_away() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let Some((url, pid)) = own_clickhouse(dir.path()) else { return };
    let sim = start_sim(&dir.path().join("run"), "case-study");
    sim.use_clickhouse(&url);
    let config = sim.config.to_str().unwrap();
    // The operator's terminal (or the log shipper reading pulse's output) goes away: both pipes lose their reader.
    let mut ingest = pulse()
        .args(["ingest", "--config", config, "--today", &sim.today, "--since", &sim.start, "--store-retry-secs", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(ingest.stdout.take());
    drop(ingest.stderr.take());
    let started = Instant::now();
    while count_rows(&url) == 0 {
        if let Some(status) = ingest.try_wait().unwrap() {
            panic!(
                "pulse ingest ended before writing anything: {status:?} (signal {:?}; 13 is SIGPIPE)",
                status.signal()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no rows reached ClickHouse in two minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let status = ingest.wait().unwrap();
    assert_eq!(status.signal(), None, "killed by signal {:?} (13 is SIGPIPE)", status.signal());
    assert_eq!(status.code(), Some(3));
    let records = std::fs::read_dir(dir.path().join("run/pulse-runs")).expect("the run was recorded").count();
    assert_eq!(records, 1);
}
