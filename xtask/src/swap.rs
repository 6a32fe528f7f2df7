//! `--swap SIZE`: a sparse raw disk image under `target/swap/`, attached to
//! the guest as a modern virtio-blk PCI device. The guest pages to the
//! first virtio-blk disk it finds (and names its store in the Boot record).

use crate::qemu::Mem;
use crate::toolchain::target_dir;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Swap {
    pub path: PathBuf,
    pub size: Mem,
}

impl Swap {
    /// A fresh all-zero image `name.img` of `size` (sparse: it takes no
    /// disk space until the guest writes).
    pub fn create(name: &str, size: Mem) -> Result<Swap> {
        let dir = target_dir().join("swap");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.img"));
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        file.set_len(size.bytes).with_context(|| format!("sizing {}", path.display()))?;
        Ok(Swap { path, size })
    }

    /// The QEMU arguments that attach it.
    pub fn args(&self) -> Vec<String> {
        vec![
            "-drive".into(),
            format!("if=none,id=swap,format=raw,file={}", self.path.display().to_string().replace(',', ",,")),
            "-device".into(),
            // Modern only (virtio 1.x, device id 0x1042), as the guest's
            // driver expects.
            "virtio-blk-pci,drive=swap,disable-legacy=on".into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::parse_mem;

    #[test]
    fn image_is_sparse_and_sized() {
        let swap = Swap::create("unit-test", parse_mem("64M").unwrap()).unwrap();
        let meta = std::fs::metadata(&swap.path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks allocated", meta.blocks());
        let args = swap.args();
        assert!(args[1].starts_with("if=none,id=swap,format=raw,file=") && args[1].ends_with("unit-test.img"), "{args:?}");
        assert_eq!(args[3], "virtio-blk-pci,drive=swap,disable-legacy=on");
        std::fs::remove_file(&swap.path).unwrap();
    }
}
