//! Leases in ZooKeeper (the loopback cluster's, `.ci/clickhouse-cluster.sh`), beyond what the conformance suite
//! asks of every store: each `Keeper` here is its own session, as separate processes would be.

#[path = "support/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use pulse_store::keeper::{Keeper, SESSION_TIMEOUT};
use pulse_store::{LeaseOutcome, StoreError};

fn zookeeper() -> Option<String> {
    cluster::LocalCluster::from_env().map(|c| c.zookeeper())
}

/// A database name no other test run uses, so the lease nodes are fresh.
fn fresh() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("keeper_{}_{nanos}", std::process::id())
}

/// Holders on another host: only their session, expiry or release frees them.
fn holder(i: u32) -> String {
    format!("elsewhere:{}:h{i}", 1000 + i)
}

#[tokio::test]
async fn of_sessions_racing_for_a_lease_exactly_one_wins_and_its_end_frees_it_at_once() {
    let Some(zk) = zookeeper() else { return };
    let db = fresh();
    for round in 0..5 {
        let keepers: Vec<Keeper> = (0..6).map(|_| Keeper::new(&zk, &db)).collect();
        let name = format!("digest:north/{round}");
        let tries = keepers.iter().enumerate().map(|(i, k)| {
            let name = name.clone();
            async move { k.try_lease("alpha", &name, &holder(i as u32), Duration::from_secs(600)).await.unwrap() }
        });
        let outcomes = futures_join_all(tries).await;
        let winners: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].acquired()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let winner = winners[0];
        for o in &outcomes {
            if let LeaseOutcome::HeldBy(l) = o {
                assert_eq!(l.holder, holder(winner as u32), "round {round}: the refused are told who holds it");
            }
        }
        // The winner renews; a rival is still refused; releasing by a non-holder does nothing.
        let other = (winner + 1) % keepers.len();
        assert!(
            keepers[winner]
                .try_lease("alpha", &name, &holder(winner as u32), Duration::from_secs(600))
                .await
                .unwrap()
                .acquired()
        );
        keepers[other].release_lease("alpha", &name, &holder(other as u32)).await.unwrap();
        assert!(
            !keepers[other]
                .try_lease("alpha", &name, &holder(other as u32), Duration::from_secs(600))
                .await
                .unwrap()
                .acquired()
        );
        // The winner's session ends (its process exits): the lease is free at once, not after its 600 s.
        let gone = keepers.into_iter().nth(winner).unwrap();
        drop(gone);
        let rival = Keeper::new(&zk, &db);
        let started = Instant::now();
        loop {
            if rival.try_lease("alpha", &name, &holder(99), Duration::from_secs(600)).await.unwrap().acquired() {
                break;
            }
            assert!(started.elapsed() < SESSION_TIMEOUT * 2, "round {round}: the ended session's lease is still held");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(started.elapsed() < SESSION_TIMEOUT, "round {round}: took {:?}", started.elapsed());
    }
}

/// The node existing is the lease being held: neither data that looks expired nor a holder whose process looks
/// gone lets another session take it while the session that made it lives; tenants and names are apart.
#[tokio::test]
async fn a_live_sessions_lease_is_never_taken_whatever_its_data_says() {
    let Some(zk) = zookeeper() else { return };
    let db = fresh();
    let (a, b) = (Keeper::new(&zk, &db), Keeper::new(&zk, &db));
    assert!(a.try_lease("alpha", "ingest", &holder(1), Duration::from_secs(1)).await.unwrap().acquired());
    // Another tenant's lease of the same name, and another name, are independent.
    assert!(b.try_lease("beta", "ingest", &holder(2), Duration::from_secs(600)).await.unwrap().acquired());
    assert!(b.try_lease("alpha", "ingest-2", &holder(2), Duration::from_secs(600)).await.unwrap().acquired());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Holder 1's data says it expired; its session lives: still held, reported with an expiry ahead (no spinning).
    match b.try_lease("alpha", "ingest", &holder(2), Duration::from_secs(600)).await.unwrap() {
        LeaseOutcome::HeldBy(l) => {
            assert_eq!(l.holder, holder(1));
            assert!(l.expires_at > chrono::Utc::now(), "{l:?}");
        }
        other => panic!("an expired-looking lease of a live session was taken: {other:?}"),
    }
    // A holder on this host whose process is gone (pid 4194400 is above Linux's pid_max), its session alive.
    let dead = format!("{}:4194400:gone", pulse_domain::this_host());
    assert!(a.try_lease("alpha", "digest", &dead, Duration::from_secs(600)).await.unwrap().acquired());
    assert!(!b.try_lease("alpha", "digest", &holder(5), Duration::from_secs(600)).await.unwrap().acquired());
    // A non-holder's release does nothing; the holder's own renewal works, and its release frees it.
    b.release_lease("alpha", "ingest", &holder(1)).await.unwrap();
    assert!(a.try_lease("alpha", "ingest", &holder(1), Duration::from_secs(1)).await.unwrap().acquired());
    a.release_lease("alpha", "ingest", &holder(1)).await.unwrap();
    assert_eq!(b.holder("alpha", "ingest").await.unwrap(), None);
    assert!(b.try_lease("alpha", "ingest", &holder(2), Duration::from_secs(600)).await.unwrap().acquired());
}

/// A renewal never re-creates a lease: when the node is gone (the server ended the holder's session) or another
/// has it, the holder is told it lost the lease, so its sender stops, instead of carrying on as if nothing happened.
#[tokio::test]
async fn a_renewal_after_the_node_vanished_is_a_lost_lease_not_a_new_one() {
    let Some(zk) = zookeeper() else { return };
    let db = fresh();
    let a = Keeper::new(&zk, &db);
    assert!(a.try_lease("alpha", "digest:north", &holder(1), Duration::from_secs(600)).await.unwrap().acquired());
    // The node disappears behind the holder's back (as when the server expires its session), and another takes it.
    let raw = zookeeper_client::Client::connect(&zk).await.unwrap();
    let path = format!("/practice-pulse/{db}/leases/alpha/digest:north");
    raw.delete(&path, None).await.unwrap();
    match a.try_lease("alpha", "digest:north", &holder(1), Duration::from_secs(600)).await.unwrap() {
        LeaseOutcome::HeldBy(l) => assert!(l.holder.starts_with("nobody"), "{l:?}"),
        other => panic!("a renewal re-created a vanished lease: {other:?}"),
    }
    // The same, with a rival holding it by then.
    assert!(a.try_lease("alpha", "digest:north", &holder(1), Duration::from_secs(600)).await.unwrap().acquired());
    raw.delete(&path, None).await.unwrap();
    let b = Keeper::new(&zk, &db);
    assert!(b.try_lease("alpha", "digest:north", &holder(2), Duration::from_secs(600)).await.unwrap().acquired());
    assert!(!a.try_lease("alpha", "digest:north", &holder(1), Duration::from_secs(600)).await.unwrap().acquired());
    // After its release the holder may take it afresh later, once free.
    a.release_lease("alpha", "digest:north", &holder(1)).await.unwrap();
    b.release_lease("alpha", "digest:north", &holder(2)).await.unwrap();
    assert!(a.try_lease("alpha", "digest:north", &holder(1), Duration::from_secs(600)).await.unwrap().acquired());
}

#[tokio::test]
async fn an_unreachable_service_is_a_clear_error_soon() {
    // Only meaningful where the cluster tests run (CI); the port is one nobody listens on.
    if zookeeper().is_none() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let k = Keeper::new(&format!("127.0.0.1:{port}"), "pulse");
    let started = Instant::now();
    let e = k.try_lease("alpha", "digest", &holder(1), Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(e, StoreError::Coordination { .. }), "{e:?}");
    assert!(e.is_transient());
    let text = e.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("zookeeper"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::new();
    // Started together: each future sends its first request when polled, so poll them all before awaiting any.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = handles.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.extend(results.into_iter().map(Option::unwrap));
    out
}
