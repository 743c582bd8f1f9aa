use std::sync::Arc;

use berth_registry::Registry;
use berth_store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<crate::vault::SealedVault>,
    pub registry: Arc<Registry>,
    pub deployer: Arc<crate::deploy::Deployer>,
    /// The followed log streams open on this replica (capped per user and in all).
    pub followers: Arc<crate::deploy::log::Followers>,
}
