//! The scheduler's promises, in-process over a lake: a job held by another process is skipped (and journalled), and
//! runs missed while the daemon was down are caught up once, with the next run computed from now across DST.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pulse_app::scheduler::{self, Clock, Daemon, RunStep};
use pulse_domain::{Access, StateEvent};
use pulse_store::Store;
use pulse_store::lake::LakeStore;

fn setup() -> (tempfile::TempDir, Arc<pulse_config::Config>, LakeStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pulse.toml"),
        "[store]\nlake_dir = \"lake\"\n\n[scheduler]\ningest = \"\"\ndigest = \"0 8 * * MON\"\n\n\
         [[subscription]]\nname = \"weekly\"\ntenant = \"stoke\"\nrecipients = [\"a@example.nhs.uk\"]\n\n\
         [[tenant]]\nid = \"stoke\"\nname = \"Stoke\"\n",
    )
    .unwrap();
    let config = Arc::new(pulse_config::load(&dir.path().join("pulse.toml")).unwrap());
    let store = LakeStore::open(dir.path().join("lake")).unwrap();
    (dir, config, store)
}

fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

async fn journal(store: &LakeStore) -> Vec<RunStep> {
    let scope = Access::operator([pulse_domain::TenantId::new("stoke").unwrap()]).scope("stoke").unwrap();
    store
        .read_state(&scope, scheduler::STREAM)
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::from_str(&e.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_job_another_process_holds_is_skipped_and_journalled() {
    let (_dir, config, store) = setup();
    let scope = config.operator_access().write_scope("stoke").unwrap();
    // Another machine's daemon holds the job.
    let other = "elsewhere:4242:abc";
    assert!(store.try_lease(&scope, "digest:weekly", other, Duration::from_secs(600)).await.unwrap().acquired());
    let daemon = Daemon::new(store.clone(), config.clone(), Clock::driven(utc(2018, 3, 12, 8), 1.0), None);
    let job = scheduler::jobs(&config).unwrap().into_iter().find(|j| j.name == "digest:weekly").unwrap();
    let (_tx, mut rx) = tokio::sync::watch::channel(false);
    let lines = Mutex::new(Vec::<String>::new());
    let observer = |l: &str| lines.lock().unwrap().push(l.to_owned());
    let (interrupted, retry) = daemon.run_job(&job, utc(2018, 3, 12, 8), &mut rx, &observer).await.unwrap();
    assert!(!interrupted && retry.is_none());
    let steps = journal(&store).await;
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].state, "skipped");
    assert!(steps[0].detail.contains(other), "{}", steps[0].detail);
    // Released elsewhere: now it runs (and fails for want of [smtp], saying so), and the lease is given back.
    store.release_lease(&scope, "digest:weekly", other).await.unwrap();
    daemon.run_job(&job, utc(2018, 3, 12, 8), &mut rx, &observer).await.unwrap();
    let states: Vec<String> = journal(&store).await.into_iter().map(|s| s.state).collect();
    assert_eq!(states, vec!["skipped", "started", "failed"]);
    assert!(journal(&store).await[2].detail.contains("no [smtp] section"));
    assert!(store.try_lease(&scope, "digest:weekly", other, Duration::from_secs(1)).await.unwrap().acquired());
}

#[tokio::test]
async fn missed_runs_are_caught_up_once_and_the_next_is_from_now_in_british_summer_time() {
    let (_dir, config, store) = setup();
    let scope = config.operator_access().write_scope("stoke").unwrap();
    // The daemon last ran the digest on Monday 5 March 2018, then was down for two Mondays (12th, 19th).
    let done = RunStep {
        state: "succeeded".into(),
        tick: utc(2018, 3, 5, 8),
        run_id: "r0".into(),
        holder: "old".into(),
        detail: String::new(),
        at: utc(2018, 3, 5, 8),
    };
    let event = StateEvent {
        id: "e0".into(),
        stream: scheduler::STREAM.into(),
        key: "digest:weekly".into(),
        at: utc(2018, 3, 5, 8),
        body: serde_json::to_string(&done).unwrap(),
    };
    store.append_state(&scope, &[event]).await.unwrap();
    // Started on Wednesday 21 March.
    let daemon = Daemon::new(store.clone(), config.clone(), Clock::driven(utc(2018, 3, 21, 12), 1.0), None);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let stopper = tokio::spawn(async move {
        for _ in 0..200 {
            if seen.lock().unwrap().iter().any(|l| l.contains("next run Mon 2018-03-26")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = tx.send(true);
    });
    let observer = |l: &str| lines.lock().unwrap().push(l.to_owned());
    daemon.run(rx, &observer).await.unwrap();
    stopper.await.unwrap();
    let log = lines.lock().unwrap().join("\n");
    let steps = journal(&store).await;
    let ticks: Vec<DateTime<Utc>> = steps.iter().filter(|s| s.state == "started").map(|s| s.tick).collect();
    // Once, for the latest missed Monday (19 March, 08:00 GMT), not once per missed Monday.
    assert_eq!(ticks, vec![utc(2018, 3, 19, 8)], "{log}");
    assert!(log.contains("was missed; running it now (once)"), "{log}");
    // The clocks go forward on Sunday 25 March: the next run is 08:00 BST, 07:00 UTC.
    assert!(log.contains("digest:weekly: next run Mon 2018-03-26 08:00 BST"), "{log}");
    let next = scheduler::status(&store, &config, &config.operator_access(), utc(2018, 3, 21, 12)).await.unwrap();
    assert_eq!(next[0].next, Some(utc(2018, 3, 26, 7)));
    assert_eq!(next[0].last.as_ref().map(|s| s.state.as_str()), Some("failed"));
}

/// `pulse digest send` takes the list's lease: while a daemon holds it nothing is sent and the error names the holder;
/// once released, the manual send takes it (and gives it back).
#[tokio::test]
async fn a_manual_send_waits_for_the_lists_lease() {
    let (dir, _, store) = setup();
    let mut toml = std::fs::read_to_string(dir.path().join("pulse.toml")).unwrap();
    toml.push_str(
        "\n[smtp]\nhost = \"127.0.0.1\"\nport = 9\nsecurity = \"none\"\nfrom = \"Pulse <d@example.nhs.uk>\"\n",
    );
    std::fs::write(dir.path().join("pulse.toml"), toml).unwrap();
    let config = pulse_config::load(&dir.path().join("pulse.toml")).unwrap();
    let scope = config.operator_access().write_scope("stoke").unwrap();
    let daemon = format!("{}:{}:daemon", pulse_domain::this_host(), std::process::id());
    assert!(store.try_lease(&scope, "digest:weekly", &daemon, Duration::from_secs(600)).await.unwrap().acquired());
    let mailer = pulse_app::mail::Mailer::from_config(&config).unwrap();
    let request = pulse_app::delivery::SendRequest {
        list: "weekly".into(),
        week_end: chrono::NaiveDate::from_ymd_opt(2018, 3, 11).unwrap(),
        now: utc(2018, 3, 12, 9),
        resend_interrupted: false,
        allow_incomplete: true,
    };
    let manual = pulse_app::delivery::manual_holder();
    let e = pulse_app::delivery::send_list_leased(&store, &config, &mailer, &request, &manual).await.unwrap_err();
    assert!(e.message.contains(&daemon) && e.message.contains("nothing was sent"), "{e}");
    // The daemon still holds it.
    assert!(!store.try_lease(&scope, "digest:weekly", "third:1:x", Duration::from_secs(1)).await.unwrap().acquired());
    store.release_lease(&scope, "digest:weekly", &daemon).await.unwrap();
    // Now it runs (and stops for want of reports in this empty world, saying so)...
    let e = pulse_app::delivery::send_list_leased(&store, &config, &mailer, &request, &manual).await.unwrap_err();
    assert!(e.message.contains("has not been computed"), "{e}");
    // ...and gives the lease back even so: the daemon can take it again.
    assert!(store.try_lease(&scope, "digest:weekly", &daemon, Duration::from_secs(1)).await.unwrap().acquired());
}
