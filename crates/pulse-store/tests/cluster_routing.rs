//! Cluster routing on the real loopback cluster (`.ci/clickhouse-cluster.sh`: ZooKeeper + 2 shards x 2 replicas):
//! replicas that resolve to one URL, or whose URL answers as another node, are refused before anything is written;
//! a replica found to be another shard's node when it is first used gets nothing; and rows placed on a wrong shard
//! are found and moved home, with nothing lost or doubled, also when the move is stopped after any step and run
//! again.
//!
//! Runs when `PULSE_TEST_CLICKHOUSE_CLUSTER_DIR` is set (CI: required); otherwise skipped with a message.

#[path = "support/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use cluster::{CLUSTER, LocalCluster, Node};
use pulse_config::WriteScope;
use pulse_domain::{ApiVersion, CanonicalMetric, Checkpoint, PageInsightFact, Period, Post, Stream, TenantId};
use pulse_store::clickhouse::{ClickHouseSettings, ClickHouseStore};
use pulse_store::{FactFilter, PostFilter, Store, StoreError, TenantBatch};

/// One test at a time: one of them stops nodes, which the others query directly.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn settings(cluster: &LocalCluster, database: &str, replica_urls: BTreeMap<String, String>) -> ClickHouseStore {
    ClickHouseStore::new(ClickHouseSettings {
        url: cluster.entry().url.clone(),
        database: database.to_owned(),
        user: "default".into(),
        password: None,
        cluster: Some(CLUSTER.into()),
        replica_urls,
        zookeeper: None,
    })
}

fn address(node: &Node) -> String {
    format!("127.0.0.1:{}", node.tcp_port)
}

/// Every node by its own URL (as the support store does), with some entries replaced.
fn urls_with(cluster: &LocalCluster, replaced: &[(&Node, String)]) -> BTreeMap<String, String> {
    let mut urls: BTreeMap<String, String> = cluster.nodes.iter().map(|n| (address(n), n.url.clone())).collect();
    for (node, url) in replaced {
        urls.insert(address(node), url.clone());
    }
    urls
}

/// The same node by another name: `localhost` instead of `127.0.0.1`.
fn alias(node: &Node) -> String {
    node.url.replace("127.0.0.1", "localhost")
}

/// Tenants, the first of each on shard 1 and on shard 2 (as the correctly mapped store places them).
async fn tenants_by_shard(store: &ClickHouseStore) -> (String, String) {
    let (mut on1, mut on2) = (None, None);
    for i in 0..64 {
        let tenant = format!("t{i}");
        match store.shard_of(&tenant).await.unwrap().unwrap().num {
            1 => on1 = on1.or(Some(tenant)),
            _ => on2 = on2.or(Some(tenant)),
        }
    }
    (on1.unwrap(), on2.unwrap())
}

fn scope(tenant: &str) -> WriteScope {
    pulse_config::testing::operator([TenantId::new(tenant).unwrap()]).write_scope(tenant).unwrap()
}

fn day(d: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2018, 1, 1).unwrap() + Duration::days(d)
}

fn fact(page: &str, d: i64, breakdown: &str, value: f64, fetched_secs: i64) -> PageInsightFact {
    PageInsightFact {
        practice: format!("M8{page}").parse().unwrap(),
        page: page.parse().unwrap(),
        metric: if breakdown.is_empty() { CanonicalMetric::PageReach } else { CanonicalMetric::PageEngagedByAgeGender },
        graph_metric: "page_impressions_unique",
        period: Period::Day,
        day: day(d),
        breakdown: breakdown.into(),
        value,
        api_version: ApiVersion::new(2, 12),
        fetched_at: Utc.with_ymd_and_hms(2018, 6, 1, 0, 0, 0).unwrap() + Duration::seconds(fetched_secs),
    }
}

/// 70 days (three months) of two pages' reach and one breakdown cell.
fn facts() -> Vec<PageInsightFact> {
    let mut out = Vec::new();
    for d in 0..70 {
        for page in ["3001", "3002"] {
            out.push(fact(page, d, "", 100.0 + d as f64, 0));
            out.push(fact(page, d, "F.35-44", 20.0, 0));
        }
    }
    out
}

fn posts() -> Vec<Post> {
    (0..4)
        .map(|i| Post {
            practice: "M83001".parse().unwrap(),
            page: "3001".parse().unwrap(),
            post: format!("3001_{i}").parse().unwrap(),
            created_time: Utc.with_ymd_and_hms(2018, 1, 10 + i, 18, 30, 0).unwrap(),
            post_type: "photo".into(),
            message: format!("Post {i}: tabs\tand 'quotes' \\ back"),
            permalink: format!("https://www.facebook.com/3001/posts/{i}"),
            fetched_at: Utc.with_ymd_and_hms(2018, 6, 1, 0, 0, 0).unwrap(),
        })
        .collect()
}

fn checkpoints() -> Vec<Checkpoint> {
    vec![Checkpoint {
        practice: "M83001".parse().unwrap(),
        page: "3001".parse().unwrap(),
        stream: Stream::PageInsights(Period::Day),
        through_day: day(69),
        updated_at: Utc.with_ymd_and_hms(2018, 6, 1, 0, 0, 0).unwrap(),
    }]
}

async fn write_tenant(store: &ClickHouseStore, tenant: &str) {
    let scope = scope(tenant);
    let (facts, posts, checkpoints) = (facts(), posts(), checkpoints());
    let batch =
        [TenantBatch { scope: &scope, facts: &facts, posts: &posts, snapshots: &[], checkpoints: &checkpoints }];
    store.write_batch(&batch).await.unwrap();
}

/// What the store reads back of a tenant: facts (sorted), posts, checkpoints.
async fn read_tenant(store: &ClickHouseStore, tenant: &str) -> (Vec<PageInsightFact>, Vec<Post>, Vec<Checkpoint>) {
    let access = pulse_config::testing::operator([TenantId::new(tenant).unwrap()]);
    let scope = access.scope(tenant).unwrap();
    let mut facts = store.read_page_insights(&scope, &FactFilter::default()).await.unwrap();
    facts.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut posts = store.read_posts(&scope, &PostFilter::default()).await.unwrap();
    posts.sort_by(|a, b| a.post.cmp(&b.post));
    (facts, posts, store.load_checkpoints(&scope).await.unwrap())
}

#[tokio::test]
async fn a_cluster_whose_replicas_share_one_url_is_refused_before_anything_is_written() {
    let Some(cluster) = LocalCluster::from_env() else { return };
    let _serial = SERIAL.lock().await;
    let (good, name) = cluster.fresh("pulse_route").await;
    let (_, on2) = tenants_by_shard(&good).await;
    // No replica_urls: every host is 127.0.0.1, so every replica's URL is the entry node's.
    let store = settings(&cluster, &name, BTreeMap::new());
    let facts = facts();
    let err = store.write_page_insights(&scope(&on2), &facts).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::ClusterLayout { .. }), "{err:?}");
    let entry = &cluster.entry().url;
    for node in &cluster.nodes {
        assert!(
            message.contains(&format!("shard {} replica {} ({})", node.shard, node.replica, address(node))),
            "{message}"
        );
        assert!(message.contains(&format!("\"{}\" = \"http://HOST:HTTP_PORT\"", address(node))), "{message}");
    }
    assert!(message.contains(&format!("all resolve to {entry}")), "{message}");
    assert!(message.contains("[store.clickhouse.replica_urls]"), "{message}");
    // Reads are refused too, and no shard got a row.
    assert!(store.shard_of(&on2).await.is_err());
    for node in &cluster.nodes {
        assert!(cluster.raw_counts(node, &name, &on2).values().all(|&n| n == 0), "{:?}", node.url);
    }
    cluster.drop_database(&name);
}

#[tokio::test]
async fn a_replica_url_that_answers_as_another_node_is_refused() {
    let Some(cluster) = LocalCluster::from_env() else { return };
    let _serial = SERIAL.lock().await;
    let (good, name) = cluster.fresh("pulse_route").await;
    let (_, on2) = tenants_by_shard(&good).await;
    let facts = facts();

    // Shard 2 replica 1's entry points at shard 1's second node (by another name, so no URL is shared).
    let wrong_shard =
        settings(&cluster, &name, urls_with(&cluster, &[(cluster.node(2, 1), alias(cluster.node(1, 2)))]));
    let err = wrong_shard.write_page_insights(&scope(&on2), &facts).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::WrongNode { .. }), "{err:?}");
    assert!(message.contains(&format!("shard 2 replica 1 ({})", address(cluster.node(2, 1)))), "{message}");
    assert!(message.contains("it answers as a node of shard 1"), "{message}");
    assert!(message.contains("[store.clickhouse.replica_urls]"), "{message}");

    // Shard 1 replica 2's entry reaches replica 1's node: two replicas, one node.
    let same_node = settings(&cluster, &name, urls_with(&cluster, &[(cluster.node(1, 2), alias(cluster.node(1, 1)))]));
    let err = same_node.write_page_insights(&scope(&on2), &facts).await.unwrap_err();
    // 18.16 marks a node's whole shard local, so the two URLs are told apart by host and macros; current versions
    // mark the node's own entry, so the second replica's URL already answers as replica 1.
    let text = err.to_string();
    assert!(text.contains("reach the same node") || text.contains("it answers as shard 1 replica 1"), "{text}");

    for node in &cluster.nodes {
        assert!(cluster.raw_counts(node, &name, &on2).values().all(|&n| n == 0), "{:?}", node.url);
    }
    cluster.drop_database(&name);
}

/// A replica that did not answer when the store connected cannot be checked then; it is checked when it is used,
/// and a node of another shard gets nothing.
#[tokio::test]
async fn a_replica_found_to_be_another_shard_when_first_used_gets_nothing() {
    let Some(cluster) = LocalCluster::from_env() else { return };
    let _serial = SERIAL.lock().await;
    let _healing = cluster.healing();
    let (good, name) = cluster.fresh("pulse_route").await;
    let (_, on2) = tenants_by_shard(&good).await;
    let facts = facts();
    // Shard 2 replica 2's entry names shard 1 replica 2's node, which is down when the store connects.
    let (impostor, victim) = (cluster.node(1, 2), cluster.node(2, 1));
    impostor.kill();
    let store = settings(&cluster, &name, urls_with(&cluster, &[(cluster.node(2, 2), alias(impostor))]));
    store.write_page_insights(&scope(&on2), &facts[..10]).await.unwrap();
    impostor.start();
    victim.kill();
    let err = store.write_page_insights(&scope(&on2), &facts).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongNode { .. }), "{err:?}");
    assert!(err.to_string().contains("it answers as a node of shard 1"), "{err}");
    let reads = store
        .read_page_insights(
            &pulse_config::testing::operator([TenantId::new(&on2).unwrap()]).scope(&on2).unwrap(),
            &FactFilter::default(),
        )
        .await;
    assert!(matches!(reads, Err(StoreError::WrongNode { .. })), "{reads:?}");
    victim.start();
    cluster.settle(&name);
    for node in [cluster.node(1, 1), impostor] {
        assert!(cluster.raw_counts(node, &name, &on2).values().all(|&n| n == 0), "{:?}", node.url);
    }
    cluster.drop_database(&name);
}

#[tokio::test]
async fn rows_on_the_wrong_shard_are_moved_home_whole_even_when_stopped_after_any_step() {
    let Some(cluster) = LocalCluster::from_env() else { return };
    let _serial = SERIAL.lock().await;
    let (store, name) = cluster.fresh("pulse_route").await;
    let (on1, on2) = tenants_by_shard(&store).await;
    write_tenant(&store, &on1).await;
    write_tenant(&store, &on2).await;
    cluster.settle(&name);
    let before = read_tenant(&store, &on2).await;
    let (raw2, raw1_of_on1) =
        (cluster.raw_counts(cluster.node(2, 1), &name, &on2), cluster.raw_counts(cluster.node(1, 1), &name, &on1));
    assert!(raw2.values().filter(|&&n| n > 0).count() >= 3, "{raw2:?}");
    assert!(store.placement().await.unwrap().iter().all(|p| !p.misplaced()));

    // As a deployment without replica_urls did: every row of the shard-2 tenant on shard 1. Its own shard reads
    // nothing now.
    cluster.misplace(&name, &on2, 2, 1);
    assert!(read_tenant(&store, &on2).await.0.is_empty());
    // Ingest goes on meanwhile, now correctly routed: a revised value of day 10, newer than the misplaced one.
    let revised = fact("3001", 10, "", 999.0, 3600);
    store.write_page_insights(&scope(&on2), std::slice::from_ref(&revised)).await.unwrap();

    let misplaced: Vec<_> = store.placement().await.unwrap().into_iter().filter(|p| p.misplaced()).collect();
    let expected: Vec<(String, u64)> = raw2.iter().filter(|(_, n)| **n > 0).map(|(t, n)| (t.clone(), *n)).collect();
    let found: Vec<(String, u64)> = misplaced.iter().map(|p| (p.table.clone(), p.rows)).collect();
    assert_eq!(found, expected);
    assert!(misplaced.iter().all(|p| p.tenant == on2 && p.shard == 1 && p.home == 2));

    // Stop after 1 step, then 2, then 3, ... (each run plans again from the shards), until a run finishes.
    let mut kinds = std::collections::HashSet::new();
    for stop_after in 1.. {
        let mut steps = 0;
        let done = store
            .rebalance(|step| {
                steps += 1;
                kinds.insert(std::mem::discriminant(step));
                if steps == stop_after { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            })
            .await
            .unwrap();
        if !done.stopped {
            break;
        }
        assert!(stop_after < 100, "the rebalance never finished");
    }
    assert_eq!(kinds.len(), 4, "a stop after every kind of step");
    cluster.settle(&name);

    // Home, whole, and not doubled: the raw rows on shard 2 are the original ones plus the revision, on both
    // replicas; shard 1 holds none of them and keeps its own tenant's rows untouched.
    assert!(store.placement().await.unwrap().iter().all(|p| !p.misplaced()));
    let mut want = raw2.clone();
    *want.get_mut("page_insights_local").unwrap() += 1;
    for replica in [1, 2] {
        let mut got = cluster.raw_counts(cluster.node(2, replica), &name, &on2);
        // A background merge may already have folded the superseded day-10 row into the revision.
        if got["page_insights_local"] + 1 == want["page_insights_local"] {
            *got.get_mut("page_insights_local").unwrap() += 1;
        }
        assert_eq!(got, want, "shard 2 replica {replica}: every row home once, none doubled");
        assert!(cluster.raw_counts(cluster.node(1, replica), &name, &on2).values().all(|&n| n == 0));
    }
    assert_eq!(cluster.raw_counts(cluster.node(1, 1), &name, &on1), raw1_of_on1);
    let after = read_tenant(&store, &on2).await;
    let mut want_facts = before.0.clone();
    let i = want_facts.iter().position(|f| f.key() == revised.key()).unwrap();
    want_facts[i] = revised;
    assert_eq!(after.0, want_facts, "the newer revision wins over the moved row");
    assert_eq!((after.1, after.2), (before.1, before.2));
    // A run with nothing misplaced does nothing.
    let again = store.rebalance(|_| ControlFlow::Continue(())).await.unwrap();
    assert_eq!((again.copied, again.deleted, again.stopped), (0, 0, false));
    cluster.drop_database(&name);
}
