//! The live channels of each provider, cached for the webhook routes (`providers::webhooks`):
//! a delivery is verified without waiting on the database first. The channel routes
//! (`messaging::admin`) invalidate the cache on every change. One per server, registered as app
//! data by `lib::build`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::model::ChannelRow;
use crate::core::{error::ApiResult, state::AppState};

/// How long a node trusts its copy of a provider's channels (see `providers::webhooks`).
pub const CHANNELS_TTL: Duration = Duration::from_secs(2);

/// All live channels of each provider, in every company (webhooks arrive before we know whose
/// they are), cached for [`CHANNELS_TTL`].
#[derive(Clone)]
pub struct WebhookChannels {
    lists: moka::sync::Cache<&'static str, Arc<Vec<ChannelRow>>>,
    /// Bumped by every invalidation: a list read before a change is not cached after it.
    generation: Arc<AtomicU64>,
}

impl Default for WebhookChannels {
    fn default() -> Self {
        Self { lists: moka::sync::Cache::builder().time_to_live(CHANNELS_TTL).build(), generation: Default::default() }
    }
}

impl WebhookChannels {
    pub async fn of(&self, st: &AppState, provider: &'static str) -> ApiResult<Arc<Vec<ChannelRow>>> {
        if let Some(cached) = self.lists.get(provider) {
            return Ok(cached);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let fresh = Arc::new(st.db.run(move |c| super::store::live_channels_of(c, provider)).await?);
        if self.generation.load(Ordering::SeqCst) == generation {
            self.lists.insert(provider, fresh.clone());
        }
        Ok(fresh)
    }

    /// Forgets every cached list: called after any change to a channel.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.lists.invalidate_all();
    }
}
