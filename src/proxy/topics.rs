//! Topic id → name, learned from the Metadata responses the proxy relays,
//! so a Produce v13 retry keyed by topic id meets an original keyed by
//! name in the dedup cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::codec::metadata::MetadataResponse;
use crate::codec::produce::TopicRef;
use crate::dedup::cache::TopicKey;

#[derive(Debug, Default)]
pub struct TopicNames {
    by_id: RwLock<HashMap<[u8; 16], Arc<str>>>,
}

/// Upper bound on remembered ids: a cluster with more topics than this
/// keys the excess by id, which costs dedup hits only across versions.
const MAX_TOPICS: usize = 1_000_000;

impl TopicNames {
    pub fn learn(&self, r: &MetadataResponse) {
        let fresh: Vec<_> = {
            let known = self.by_id.read().unwrap_or_else(|e| e.into_inner());
            r.topics
                .iter()
                .filter(|t| t.topic_id != [0; 16])
                .filter_map(|t| t.name.as_ref().map(|n| (t.topic_id, n)))
                .filter(|(id, n)| known.get(id).is_none_or(|k| &**k != n.as_str()))
                .map(|(id, n)| (id, Arc::<str>::from(n.as_str())))
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        let mut map = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        for (id, n) in fresh {
            if map.len() < MAX_TOPICS || map.contains_key(&id) {
                map.insert(id, n);
            }
        }
    }

    pub fn key_for(&self, t: &TopicRef) -> TopicKey {
        match t {
            TopicRef::Name(n) => TopicKey::Name(Arc::from(n.as_str())),
            TopicRef::Id(id) => {
                match self.by_id.read().unwrap_or_else(|e| e.into_inner()).get(id) {
                    Some(n) => TopicKey::Name(Arc::clone(n)),
                    None => TopicKey::Id(*id),
                }
            }
        }
    }
}
