//! Artifact queries: filters and pagination answer what the in-memory reference store answers.

use std::time::Duration;

use flock_models::{Artifact, ArtifactDraft, Tags, TenantId, TypeName};
use flock_orchestrator::{ArtifactQuery, ArtifactStore as _, MemoryStore};
use flock_store::Storage;
use serde_json::{Map, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::on_every_backend;

/// Artifacts of three types, two producers, two workflows of two tenants (the first
/// workflow's split between them, as no real workflow is, so filters combine), a few tags and
/// times 1 ms apart.
fn artifacts() -> Vec<Artifact> {
    let workflows = [Uuid::now_v7(), Uuid::now_v7()];
    let start = flock_models::timestamp::now_micros();
    (0..40)
        .map(|i: usize| {
            let payload: Map<String, serde_json::Value> =
                serde_json::from_value(json!({"n": i, "b": "x"})).unwrap();
            let mut draft = ArtifactDraft::new(
                TypeName::new(["Idea", "Shout", "Note"][i % 3]).unwrap(),
                payload,
            );
            draft.tags = match i % 4 {
                0 => Tags::empty(),
                1 => Tags::new(["red"]).unwrap(),
                2 => Tags::new(["red", "blue"]).unwrap(),
                _ => Tags::new(["blue"]).unwrap(),
            };
            let producer = if i.is_multiple_of(5) {
                "external"
            } else {
                "shouter"
            };
            let tenant = TenantId::new(if i % 4 == 1 { "other" } else { "acme" }).unwrap();
            let mut artifact = Artifact::new(draft, producer, workflows[i % 2]).owned_by(tenant);
            artifact.created_at = start + time::Duration::milliseconds(i64::try_from(i).unwrap());
            artifact
        })
        .collect()
}

fn queries(all: &[Artifact]) -> Vec<ArtifactQuery> {
    let at = |i: usize| all[i].created_at;
    let base = ArtifactQuery::default();
    let name = |n: &str| TypeName::new(n).unwrap();
    vec![
        base.clone(),
        ArtifactQuery {
            limit: 7,
            ..base.clone()
        },
        ArtifactQuery {
            limit: 7,
            offset: 35,
            ..base.clone()
        },
        ArtifactQuery {
            offset: 100,
            ..base.clone()
        },
        ArtifactQuery {
            limit: 0,
            ..base.clone()
        },
        ArtifactQuery {
            type_names: vec![name("Shout")],
            ..base.clone()
        },
        ArtifactQuery {
            type_names: vec![name("Note"), name("Idea")],
            limit: 5,
            offset: 3,
            ..base.clone()
        },
        ArtifactQuery {
            type_names: vec![name("Missing")],
            ..base.clone()
        },
        ArtifactQuery {
            produced_by: Some("external".into()),
            ..base.clone()
        },
        ArtifactQuery {
            correlation_id: Some(all[1].correlation_id),
            ..base.clone()
        },
        ArtifactQuery::correlation(all[0].correlation_id),
        ArtifactQuery {
            tenant: Some(TenantId::new("other").unwrap()),
            ..base.clone()
        },
        ArtifactQuery {
            tenant: Some(TenantId::new("acme").unwrap()),
            correlation_id: Some(all[1].correlation_id),
            limit: 4,
            offset: 2,
            ..base.clone()
        },
        ArtifactQuery {
            tenant: Some(TenantId::new("nobody").unwrap()),
            ..base.clone()
        },
        ArtifactQuery {
            after: Some(10),
            limit: 5,
            ..base.clone()
        },
        ArtifactQuery {
            after: Some(38),
            limit: 5,
            ..base.clone()
        },
        ArtifactQuery {
            after: Some(12),
            type_names: vec![name("Shout")],
            limit: 3,
            offset: 2,
            ..base.clone()
        },
        ArtifactQuery {
            count_limit: Some(7),
            limit: 3,
            ..base.clone()
        },
        ArtifactQuery {
            count_limit: Some(7),
            offset: 20,
            limit: 30,
            ..base.clone()
        },
        ArtifactQuery {
            tag: Some("red".into()),
            ..base.clone()
        },
        ArtifactQuery {
            tag: Some("blue".into()),
            type_names: vec![name("Idea")],
            ..base.clone()
        },
        ArtifactQuery {
            tag: Some("re".into()),
            ..base.clone()
        },
        ArtifactQuery {
            from: Some(at(10)),
            to: Some(at(20)),
            ..base.clone()
        },
        ArtifactQuery {
            // Between two artifacts' microseconds: neither bound includes its neighbour.
            from: Some(at(10) + time::Duration::nanoseconds(1)),
            to: Some(at(20) - time::Duration::nanoseconds(1)),
            ..base.clone()
        },
        ArtifactQuery {
            from: Some(at(39) + time::Duration::seconds(1)),
            ..base.clone()
        },
        ArtifactQuery {
            to: Some(OffsetDateTime::UNIX_EPOCH),
            ..base.clone()
        },
        ArtifactQuery {
            produced_by: Some("shouter".into()),
            tag: Some("red".into()),
            correlation_id: Some(all[2].correlation_id),
            from: Some(at(3)),
            limit: 3,
            offset: 1,
            ..base
        },
    ]
}

async fn filters_and_pages_match_the_memory_store(store: &Storage) {
    let all = artifacts();
    let reference = MemoryStore::new();
    let artifacts = store.artifacts();
    for a in &all {
        reference.insert(a).unwrap();
        artifacts.publish(a, Vec::new()).await.unwrap();
    }
    for query in queries(&all) {
        let expected = reference.query(&query).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), artifacts.query(&query))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, expected, "{query:?}");
    }
    // Following `next` walks every match once, in order, whatever the page size.
    for limit in [1, 3, 40] {
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let query = ArtifactQuery {
                tag: Some("blue".into()),
                after,
                limit,
                ..ArtifactQuery::default()
            };
            let page = artifacts.query(&query).await.unwrap();
            walked.extend(page.items.into_iter().map(|a| a.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let blue: Vec<Uuid> = (all.iter())
            .filter(|a| a.tags.contains("blue"))
            .map(|a| a.id)
            .collect();
        assert_eq!(walked, blue, "pages of {limit}");
    }
    // Tenants are kept, and a tenant's query sees its own artifacts alone.
    let other = TenantId::new("other").unwrap();
    let page = artifacts
        .query(&ArtifactQuery {
            tenant: Some(other.clone()),
            ..ArtifactQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 10);
    assert!(page.items.iter().all(|a| a.tenant == other));
    for a in &all {
        let stored = artifacts.get(a.id).await.unwrap().unwrap();
        assert_eq!(stored.tenant, a.tenant, "{}", a.id);
    }
}
on_every_backend!(filters_and_pages_match_the_memory_store);
