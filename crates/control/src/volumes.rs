//! Volumes: the encrypted block-store files behind disks, and the wrapping of their data
//! encryption keys (DEKs).
//!
//! Each disk has one volume, named by the disk's `uniqueId`. A volume has one or two XTS
//! layers, each with its own random DEK; a DEK is stored only wrapped. The platform layer wraps
//! its DEK with AES-256-GCM under an HKDF subkey of the platform root key
//! ([`keyvault::seal`]), bound to the volume id and layer index, so a wrapped DEK cannot be
//! moved to another volume or layer.
//!
//! An open volume is shared: one [`Disk`] per volume id while anyone holds it, so that every
//! NBD connection to a disk sees the same per-unit locks and a flush on one covers all. When
//! the last holder drops it, its DEKs are zeroized.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use blockstore::{Backend, DiskId, FileBackend, MemoryBackend, WrapLayer};
use blockstore::{Disk, xts::XtsKey};
use uuid::Uuid;

use crate::ControlError;

/// The key id recorded in a platform-key wrap layer (the root key has one version).
pub const PLATFORM_KEY_ID: &str = "sealdisk:platform-root-key/1";
/// The algorithm recorded in a platform-key wrap layer.
pub const PLATFORM_WRAP_ALGORITHM: &str = "A256GCM-HKDF-SHA256";

/// Where volumes live.
#[derive(Debug)]
enum Storage {
    /// One sparse file per volume, `DIR/{id}.disk`.
    Dir(PathBuf),
    /// In memory, for tests.
    Memory(Mutex<HashMap<Uuid, Arc<MemoryBackend>>>),
}

/// The volumes of a deployment.
#[derive(Debug)]
pub struct Volumes {
    storage: Storage,
    root: Arc<crypto::RootKey>,
    open: Mutex<HashMap<Uuid, Weak<Disk>>>,
    /// Closed volumes whose header is being rewritten: `open` waits for them.
    rewrapping: Mutex<std::collections::HashSet<Uuid>>,
    rewrapped: std::sync::Condvar,
}

fn wrap_context(id: Uuid, layer: usize) -> Vec<u8> {
    format!("sealdisk/volume-dek/v1/{id}/{layer}").into_bytes()
}

impl Volumes {
    /// Volumes as files under `dir` (created if missing).
    pub fn in_dir(dir: PathBuf, root: Arc<crypto::RootKey>) -> Result<Self, ControlError> {
        std::fs::create_dir_all(&dir).map_err(ControlError::VolumeFile)?;
        Ok(Self {
            storage: Storage::Dir(dir),
            root,
            open: Mutex::default(),
            rewrapping: Mutex::default(),
            rewrapped: std::sync::Condvar::new(),
        })
    }

    /// Volumes in memory (tests).
    pub fn in_memory(root: Arc<crypto::RootKey>) -> Self {
        Self {
            storage: Storage::Memory(Mutex::default()),
            root,
            open: Mutex::default(),
            rewrapping: Mutex::default(),
            rewrapped: std::sync::Condvar::new(),
        }
    }

    fn path(dir: &std::path::Path, id: Uuid) -> PathBuf {
        dir.join(format!("{id}.disk"))
    }

    fn new_backend(&self, id: Uuid) -> Result<Arc<dyn Backend>, ControlError> {
        Ok(match &self.storage {
            Storage::Dir(dir) => Arc::new(
                FileBackend::create(Self::path(dir, id)).map_err(ControlError::VolumeFile)?,
            ),
            Storage::Memory(map) => {
                let backend = Arc::new(MemoryBackend::new());
                map.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, backend.clone());
                backend
            }
        })
    }

    fn existing_backend(&self, id: Uuid) -> Result<Arc<dyn Backend>, ControlError> {
        Ok(match &self.storage {
            Storage::Dir(dir) => {
                Arc::new(FileBackend::open(Self::path(dir, id)).map_err(ControlError::VolumeFile)?)
            }
            Storage::Memory(map) => map
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .cloned()
                .ok_or_else(|| {
                    ControlError::VolumeFile(std::io::Error::from(std::io::ErrorKind::NotFound))
                })?,
        })
    }

    /// Wraps a DEK under the platform root key for layer `layer` of volume `id`.
    pub fn platform_wrap(
        &self,
        id: Uuid,
        layer: usize,
        dek: &XtsKey,
    ) -> Result<WrapLayer, ControlError> {
        Ok(WrapLayer {
            key_id: PLATFORM_KEY_ID.to_string(),
            algorithm: PLATFORM_WRAP_ALGORITHM.to_string(),
            wrapped_key: keyvault::seal::seal(
                &self.root,
                &wrap_context(id, layer),
                dek.expose_bytes(),
            )?,
        })
    }

    /// Unwraps a platform-key wrap layer made by [`Volumes::platform_wrap`].
    pub fn platform_unwrap(
        &self,
        id: Uuid,
        layer: usize,
        wrap: &WrapLayer,
    ) -> Result<XtsKey, ControlError> {
        if wrap.key_id != PLATFORM_KEY_ID || wrap.algorithm != PLATFORM_WRAP_ALGORITHM {
            return Err(ControlError::VolumeKeyUnavailable {
                volume: id.to_string(),
                key_id: wrap.key_id.clone(),
            });
        }
        let dek = keyvault::seal::open(&self.root, &wrap_context(id, layer), &wrap.wrapped_key)?;
        XtsKey::from_bytes(&dek).map_err(ControlError::VolumeCipher)
    }

    /// Creates an empty volume of `size` bytes with `layers` XTS layers, each with a fresh DEK
    /// that `wrap(layer, dek)` wraps.
    pub fn create(
        &self,
        id: Uuid,
        size: u64,
        layers: usize,
        wrap: &dyn Fn(usize, &XtsKey) -> Result<WrapLayer, ControlError>,
    ) -> Result<Arc<Disk>, ControlError> {
        let mut keyed = Vec::with_capacity(layers);
        for layer in 0..layers {
            let dek = XtsKey::generate().map_err(ControlError::VolumeCipher)?;
            let record = wrap(layer, &dek)?;
            keyed.push((dek, record));
        }
        let backend = self.new_backend(id)?;
        let disk = match Disk::create(backend, DiskId(*id.as_bytes()), size, keyed) {
            Ok(d) => d,
            Err(e) => {
                let _ = self.destroy(id);
                return Err(ControlError::Volume(e));
            }
        };
        Ok(self.remember(id, disk))
    }

    fn remember(&self, id: Uuid, disk: Disk) -> Arc<Disk> {
        let disk = Arc::new(disk);
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::downgrade(&disk));
        disk
    }

    /// The open volume `id`, opening it if nobody holds it: `unwrap(layer, record)` gives each
    /// layer's DEK.
    pub fn open(
        &self,
        id: Uuid,
        unwrap: &dyn Fn(usize, &WrapLayer) -> Result<XtsKey, ControlError>,
    ) -> Result<Arc<Disk>, ControlError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(disk) = open.get(&id).and_then(Weak::upgrade) {
            return Ok(disk);
        }
        let mut rewrapping = self
            .rewrapping
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while rewrapping.contains(&id) {
            rewrapping = self
                .rewrapped
                .wait(rewrapping)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(rewrapping);
        let backend = self.existing_backend(id)?;
        let header = Disk::read_header(&*backend).map_err(ControlError::Volume)?;
        let keys = header
            .layers
            .iter()
            .enumerate()
            .map(|(i, wrap)| unwrap(i, wrap))
            .collect::<Result<Vec<_>, _>>()?;
        let disk = Arc::new(Disk::open(backend, keys).map_err(ControlError::Volume)?);
        open.insert(id, Arc::downgrade(&disk));
        open.retain(|_, d| d.strong_count() > 0);
        Ok(disk)
    }

    /// Replaces the wrap records of volume `id` (its DEKs unchanged): through the open `Disk`
    /// if someone holds it, otherwise directly on the closed volume, with opens held off.
    pub fn rewrap(&self, id: Uuid, layers: Vec<WrapLayer>) -> Result<(), ControlError> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(disk) = open.get(&id).and_then(Weak::upgrade) {
            drop(open);
            return disk.rewrap(layers).map_err(ControlError::Volume);
        }
        // Only this volume is held off while its header is synced; others open meanwhile.
        self.rewrapping
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        drop(open);
        let result = self.existing_backend(id).and_then(|backend| {
            Disk::rewrap_closed(&*backend, layers).map_err(ControlError::Volume)
        });
        self.rewrapping
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.rewrapped.notify_all();
        result
    }

    /// The header of volume `id` (its wrap layers), read without opening it.
    pub fn header(&self, id: Uuid) -> Result<blockstore::Header, ControlError> {
        let backend = self.existing_backend(id)?;
        Disk::read_header(&*backend).map_err(ControlError::Volume)
    }

    /// Copies every allocated byte of `from` into `to` (same size or larger), through both
    /// disks' ciphers: the copy has its own DEKs. Holes stay holes.
    pub fn copy(from: &Disk, to: &Disk) -> Result<(), ControlError> {
        Self::copy_with_progress(from, to, &mut |_, _| {})
    }

    /// [`Volumes::copy`], calling `progress(bytes scanned, total)` after every window.
    pub fn copy_with_progress(
        from: &Disk,
        to: &Disk,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), ControlError> {
        const WINDOW: u64 = 256 << 20;
        const CHUNK: u64 = 1 << 20;
        let size = from.size().min(to.size());
        let mut buf = vec![0u8; CHUNK as usize];
        let mut offset = 0;
        while offset < size {
            let window = WINDOW.min(size - offset);
            let mut at = offset;
            for extent in from
                .block_status(offset, window)
                .map_err(ControlError::Volume)?
            {
                let end = (at + extent.len).min(offset + window);
                if !extent.hole && !extent.zero {
                    let mut pos = at;
                    while pos < end {
                        let n = CHUNK.min(end - pos) as usize;
                        from.read(pos, &mut buf[..n])
                            .map_err(ControlError::Volume)?;
                        to.write(pos, &buf[..n], false)
                            .map_err(ControlError::Volume)?;
                        pos += n as u64;
                    }
                }
                at = end;
                if at >= offset + window {
                    break;
                }
            }
            // An extent list that stops short still moves on: the rest of the window is read
            // in the next round from where it ended.
            offset = if at > offset { at } else { offset + window };
            progress(offset.min(size), size);
        }
        to.flush().map_err(ControlError::Volume)
    }

    /// Destroys volume `id`: its wrapped DEKs and data. Irreversible.
    pub fn destroy(&self, id: Uuid) -> Result<(), ControlError> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        match &self.storage {
            Storage::Dir(dir) => match std::fs::remove_file(Self::path(dir, id)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ControlError::VolumeFile(e)),
            },
            Storage::Memory(map) => {
                map.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                Ok(())
            }
        }
    }

    /// Whether volume `id` is open (someone holds its DEKs in memory).
    pub fn is_open(&self, id: Uuid) -> bool {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .is_some_and(|d| d.strong_count() > 0)
    }
}
