use std::sync::Arc;

use berth_registry::Registry;
use berth_store::Store;
use berth_vault::Keyring;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keyring>,
    pub registry: Arc<Registry>,
    pub deployer: Arc<crate::deploy::Deployer>,
}
