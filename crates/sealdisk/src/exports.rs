//! The glue between the NBD server and the control plane: disk access grants become NBD
//! exports, and an open block-store volume becomes an NBD block device.

use std::io;
use std::sync::Arc;

use control::ControlPlane;

/// A block-store volume as an NBD device.
struct Volume(Arc<blockstore::Disk>);

impl Volume {
    fn io<T>(result: Result<T, blockstore::StoreError>) -> io::Result<T> {
        result.map_err(io::Error::from)
    }
}

impl nbd::BlockDevice for Volume {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        Self::io(self.0.read(offset, buf))
    }

    fn write(&self, offset: u64, data: &mut [u8], fua: bool) -> io::Result<()> {
        Self::io(self.0.write_in_place(offset, data, fua))
    }

    fn flush(&self) -> io::Result<()> {
        Self::io(self.0.flush())
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        Self::io(self.0.trim(offset, len))
    }

    fn write_zeroes(&self, offset: u64, len: u64, no_hole: bool, fua: bool) -> io::Result<()> {
        Self::io(self.0.write_zeroes(offset, len, no_hole, fua))
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<nbd::Extent>> {
        Ok(Self::io(self.0.block_status(offset, len))?
            .into_iter()
            .map(|e| nbd::Extent {
                len: e.len,
                hole: e.hole,
                zero: e.zero,
            })
            .collect())
    }

    /// One `Disk` per volume is shared by every connection and a flush syncs the whole file.
    fn can_multi_conn(&self) -> bool {
        true
    }
}

/// Export names are disk access grants.
pub struct Grants(pub ControlPlane);

impl nbd::ExportCatalog for Grants {
    fn open(&self, name: &str) -> Option<nbd::Export> {
        match self.0.open_export(name) {
            Ok(Some(export)) => Some(nbd::Export {
                device: Arc::new(Volume(export.disk)),
                read_only: export.read_only,
                revoked: export.revoked,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "an NBD export could not be opened");
                None
            }
        }
    }
}
