//! Everything a handler, actor or worker needs, built once by `lib::build`.

use std::sync::Arc;

use crate::{
    auth::{jwt::Keys, session::SessionCache},
    config::Config,
    crypto::DataKey,
    db::Pool,
    media::MediaStore,
    ops::metrics::Metrics,
};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Pool,
    pub data_key: Arc<DataKey>,
    pub keys: Arc<Keys>,
    pub media: MediaStore,
    pub sessions: SessionCache,
    pub metrics: Metrics,
}
