//! The scheduler's promises, in-process over a lake: a job held by another process is skipped (and journalled), and
//! runs missed while the daemon was down are caught up once, with the next run computed from now across DST.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pulse_app::scheduler::{self, Clock, RunStep};
use pulse_digest::daemon::Daemon;
use pulse_domain::StateEvent;
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
    let scope =
        pulse_config::testing::operator([pulse_domain::TenantId::new("stoke").unwrap()]).scope("stoke").unwrap();
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
    // Still owed: tried again within a minute (on the daemon's clock) in case the holder's process goes away.
    assert!(!interrupted);
    let retry = retry.expect("a skipped run is tried again");
    assert!(retry > utc(2018, 3, 12, 8) && retry <= utc(2018, 3, 12, 8) + chrono::Duration::seconds(61), "{retry}");
    // Tried again while still held: not journalled twice.
    daemon.run_job(&job, utc(2018, 3, 12, 8), &mut rx, &observer).await.unwrap();
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
        owed: false,
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

fn step(state: &str, tick: DateTime<Utc>, run: &str, holder: &str, owed: bool) -> RunStep {
    RunStep {
        state: state.into(),
        tick,
        run_id: run.into(),
        holder: holder.into(),
        detail: format!("{state} by {holder}"),
        at: tick,
        owed,
    }
}

/// After any restart the latest tick is run again while anything is owed for it; only a success, or a failure with
/// nothing left to do, settles it. (Before, `failed`, `interrupted` and `skipped` counted as done.)
#[test]
fn a_tick_is_owed_until_a_run_settles_it() {
    let due = utc(2018, 3, 26, 7);
    let before = step("succeeded", utc(2018, 3, 19, 8), "r0", "a:1:x", false);
    let owing = |steps: &[RunStep]| scheduler::owing(steps, Some(due));
    // The job has never run: nothing to catch up (a first start does not send last week's digest).
    assert_eq!(owing(&[]), None);
    assert_eq!(owing(std::slice::from_ref(&before)), Some("was missed"));
    let cases: [(&[RunStep], Option<&str>); 8] = [
        (&[step("started", due, "r1", "a:1:x", true)], Some("was cut off mid-run")),
        // SIGTERM mid-send.
        (
            &[step("started", due, "r1", "a:1:x", true), step("interrupted", due, "r1", "a:1:x", true)],
            Some("was interrupted"),
        ),
        // A 451 retry or an hourly wait for the week's data, due while the daemon was down.
        (
            &[step("started", due, "r1", "a:1:x", true), step("failed", due, "r1", "a:1:x", true)],
            Some("still owes recipients or is waiting for data"),
        ),
        // The holder was killed mid-send; the other daemon had journalled `skipped` after its `started`.
        (
            &[step("started", due, "r1", "a:1:x", true), step("skipped", due, "r2", "b:1:x", true)],
            Some("was cut off mid-run"),
        ),
        (&[step("skipped", due, "r2", "b:1:x", true)], Some("was skipped while another process held it")),
        // Settled: nothing left to do (a refusal, no [smtp]) or a success by anyone.
        (&[step("started", due, "r1", "a:1:x", true), step("failed", due, "r1", "a:1:x", false)], None),
        (
            &[
                step("skipped", due, "r2", "b:1:x", true),
                step("started", due, "r1", "a:1:x", true),
                step("succeeded", due, "r1", "a:1:x", false),
            ],
            None,
        ),
        // A run cut off, then a later run that ended with nothing left it could do: settled.
        (
            &[
                step("started", due, "r1", "a:1:x", true),
                step("started", due, "r2", "b:1:x", true),
                step("failed", due, "r2", "b:1:x", false),
            ],
            None,
        ),
    ];
    for (steps, want) in cases {
        let mut all = vec![before.clone()];
        all.extend_from_slice(steps);
        assert_eq!(owing(&all), want, "{steps:?}");
    }
}

/// `pulse status` tells what the latest tick's runs add up to, whichever row sorts last: a run whose process died is
/// `cut off` (not `started` for ever, nor another process's `skipped`), and a success by anyone settles it.
#[test]
fn status_tells_the_truth_about_a_killed_holder() {
    let due = utc(2018, 3, 26, 7);
    let dead = format!("{}:4000000000:x", pulse_domain::this_host());
    let alive = format!("{}:{}:x", pulse_domain::this_host(), std::process::id());
    for order in [[0, 1], [1, 0]] {
        let rows = [step("started", due, "r1", &dead, true), step("skipped", due, "r2", "b:1:x", true)];
        let steps: Vec<RunStep> = order.iter().map(|i| rows[*i].clone()).collect();
        let t = scheduler::truth(&steps).unwrap();
        assert_eq!(t.state, "cut off", "{steps:?}");
        assert!(t.detail.contains(&dead), "{}", t.detail);
    }
    let t = scheduler::truth(&[step("started", due, "r1", &alive, true)]).unwrap();
    assert_eq!(t.state, "running");
    let t = scheduler::truth(&[step("skipped", due, "r2", "b:1:x", true)]).unwrap();
    assert_eq!(t.state, "owed");
    let settled = [step("started", due, "r1", &dead, true), step("succeeded", due, "r3", "c:1:x", false)];
    assert_eq!(scheduler::truth(&settled).unwrap().state, "succeeded");
}

/// A run started on another host: from the journal alone it is only `started` (running, or dead with a lease that
/// has yet to lapse); with leases in a coordination service, it is running while its holder has the lease and cut
/// off once it has not.
#[test]
fn status_asks_the_coordination_service_about_a_run_on_another_host() {
    use pulse_store::LeaseView;
    let due = utc(2018, 3, 26, 7);
    let remote = "other-host:4242:x";
    let steps = [step("started", due, "r1", remote, true)];
    assert_eq!(scheduler::truth(&steps).unwrap().state, "started");
    assert_eq!(scheduler::truth_with(&steps, &LeaseView::Unknown).unwrap().state, "started");
    let held = |holder: &str| {
        LeaseView::Held(pulse_domain::Lease {
            name: "digest:weekly".into(),
            holder: holder.into(),
            acquired_at: due,
            expires_at: due + chrono::Duration::minutes(10),
        })
    };
    assert_eq!(scheduler::truth_with(&steps, &held(remote)).unwrap().state, "running");
    let cut = scheduler::truth_with(&steps, &LeaseView::Free).unwrap();
    assert_eq!(cut.state, "cut off");
    assert!(cut.detail.contains(remote), "{}", cut.detail);
    // Another holder has it now (a later run): this run is over, cut off.
    assert_eq!(scheduler::truth_with(&steps, &held("third-host:1:y")).unwrap().state, "cut off");
}

/// A daemon started after another was killed mid-run catches the run up at once, taking over the dead process's
/// lease (it does not wait for the lease to lapse, and does not go on to next week).
#[tokio::test]
async fn a_run_cut_off_by_a_kill_is_resumed_by_the_next_daemon() {
    let (_dir, config, store) = setup();
    let scope = config.operator_access().write_scope("stoke").unwrap();
    let due = utc(2018, 3, 26, 7);
    let dead = format!("{}:4000000000:x", pulse_domain::this_host());
    // The killed daemon's lease is still unexpired, and its run has no end.
    assert!(store.try_lease(&scope, "digest:weekly", &dead, Duration::from_secs(600)).await.unwrap().acquired());
    let rows = [step("succeeded", utc(2018, 3, 19, 8), "r0", &dead, false), step("started", due, "r1", &dead, true)];
    let events: Vec<StateEvent> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| StateEvent {
            id: format!("e{i}"),
            stream: scheduler::STREAM.into(),
            key: "digest:weekly".into(),
            at: r.at,
            body: serde_json::to_string(r).unwrap(),
        })
        .collect();
    store.append_state(&scope, &events).await.unwrap();
    // Restarted 40 minutes later.
    let daemon =
        Daemon::new(store.clone(), config.clone(), Clock::driven(due + chrono::Duration::minutes(40), 1.0), None);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let stopper = tokio::spawn(async move {
        for _ in 0..200 {
            if seen.lock().unwrap().iter().any(|l| l.contains("next run Mon 2018-04-02")) {
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
    assert!(log.contains("the run due Mon 2018-03-26 08:00 BST was cut off mid-run; running it now (once)"), "{log}");
    let steps = journal(&store).await;
    let mine: Vec<&RunStep> = steps.iter().filter(|s| s.tick == due && s.holder == daemon.holder).collect();
    // It ran (the lease was taken over at once) and, for want of [smtp] here, failed with nothing it could do.
    assert_eq!(mine.iter().map(|s| s.state.as_str()).collect::<Vec<_>>(), vec!["started", "failed"], "{log}");
    assert!(!mine[1].owed);
    assert!(scheduler::owing(&steps, Some(due)).is_none());
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
    let mailer = pulse_digest::mail::Mailer::from_config(&config).unwrap();
    let request = pulse_digest::delivery::SendRequest {
        list: "weekly".into(),
        week_end: chrono::NaiveDate::from_ymd_opt(2018, 3, 11).unwrap(),
        now: utc(2018, 3, 12, 9),
        resend_interrupted: false,
        allow_incomplete: true,
        superseded: None,
    };
    let manual = pulse_digest::delivery::manual_holder();
    let e = pulse_digest::delivery::send_list_leased(&store, &config, &mailer, &request, &manual).await.unwrap_err();
    assert!(e.message.contains(&daemon) && e.message.contains("nothing was sent"), "{e}");
    // The daemon still holds it.
    assert!(!store.try_lease(&scope, "digest:weekly", "third:1:x", Duration::from_secs(1)).await.unwrap().acquired());
    store.release_lease(&scope, "digest:weekly", &daemon).await.unwrap();
    // Now it runs (and stops for want of reports in this empty world, saying so)...
    let e = pulse_digest::delivery::send_list_leased(&store, &config, &mailer, &request, &manual).await.unwrap_err();
    assert!(e.message.contains("has not been computed"), "{e}");
    // ...and gives the lease back even so: the daemon can take it again.
    assert!(store.try_lease(&scope, "digest:weekly", &daemon, Duration::from_secs(1)).await.unwrap().acquired());
}
