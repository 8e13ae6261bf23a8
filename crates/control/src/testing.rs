//! Test fixtures shared by the unit tests of this crate.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::resources::ResourceGroupInput;
use crate::store::SqliteStore;
use crate::{Clock, ControlPlane};

/// A control plane on an in-memory store with a settable clock and a resource group `g`.
pub(crate) struct Fixture {
    pub plane: ControlPlane,
    pub sub: String,
    time: Arc<AtomicI64>,
}

impl Fixture {
    pub fn new() -> Self {
        let time = Arc::new(AtomicI64::new(1_800_000_000));
        let t = time.clone();
        let plane = ControlPlane::open(
            Arc::new(SqliteStore::open_in_memory().unwrap()),
            Arc::new(crypto::RootKey::generate().unwrap()),
            None,
        )
        .unwrap()
        .0
        .with_clock(Clock::new(move || t.load(Ordering::SeqCst)));
        let sub = plane.subscription().to_string();
        let rg = ResourceGroupInput {
            location: "eastus".into(),
            tags: None,
            managed_by: None,
        };
        plane.put_resource_group(&sub, "g", rg).unwrap();
        Self { plane, sub, time }
    }

    /// A fixture whose control plane has in-memory volumes and an NBD endpoint.
    pub fn with_data_plane() -> Self {
        let mut f = Self::new();
        let volumes = crate::volumes::Volumes::in_memory(f.plane.root.clone());
        let data =
            crate::disks::DataPlane::new(volumes, Some("nbds://localhost:10809".into()), None);
        f.plane = f.plane.with_data_plane(data).unwrap();
        f
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.time.fetch_add(secs, Ordering::SeqCst);
    }
}
