//! What the CLI's integration tests share: the `pulse` binary, and a `pulse sim` world in another process with a
//! config that points at it.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn pulse() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pulse"));
    c.env_remove("RUST_LOG").env_remove("PULSE_CONFIG");
    c
}

/// A loopback port free a moment ago (the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A `pulse sim` process with a ready config in `dir`; killed when dropped.
pub struct SimProcess {
    pub child: Child,
    pub config: PathBuf,
    /// The first day after the world's data (pass as --today).
    pub today: String,
    pub start: String,
}

impl SimProcess {
    /// Points the config at a ClickHouse server instead of the lake, and migrates it.
    pub fn use_clickhouse(&self, url: &str) {
        let lake = "[store]\nbackend = \"lake\"\nlake_dir = \".\"";
        let config = std::fs::read_to_string(&self.config).unwrap();
        assert!(config.contains(lake), "{config}");
        let clickhouse =
            format!("[store]\nbackend = \"clickhouse\"\n\n[store.clickhouse]\nurl = \"{url}\"\ndatabase = \"pulse\"");
        std::fs::write(&self.config, config.replace(lake, &clickhouse)).unwrap();
        let out = pulse().args(["migrate", "--config", self.config.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "migrate: {:?}", text(&out));
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_sim(dir: &Path, scenario: &str) -> SimProcess {
    let mut child = pulse()
        .args(["sim", "--scenario", scenario, "--port", "0", "--config-out"])
        .arg(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("pulse sim starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut start, mut end) = (String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(data) = line.split("data ").nth(1) {
            let (a, b) = data.split_once("..").unwrap();
            (start, end) = (a.trim().to_owned(), b.trim().to_owned());
        }
        if line.starts_with("serving on http://") {
            break;
        }
    }
    // Keep draining stderr so the simulator never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let end: chrono::NaiveDate = end.parse().expect("the simulator says where its data ends");
    SimProcess { child, config: dir.join("pulse.toml"), today: (end + chrono::Duration::days(1)).to_string(), start }
}

/// A small world: two tenants, a few practices, a year.
pub fn small_scenario(dir: &Path) -> String {
    let path = dir.join("small.toml");
    std::fs::write(
        &path,
        r#"
[world]
name = "small"
seed = 7
api_version = "v2.12"
start = "2017-06-01"
end = "2018-03-31"

[[tenant]]
id = "alpha"
name = "Alpha"
code_prefix = "M83"
practices = 4
facebook_share = 1.0
list_size = [3000, 12000]

[[tenant]]
id = "beta"
name = "Beta"
code_prefix = "M84"
practices = 3
facebook_share = 1.0
list_size = [3000, 12000]
"#,
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}
