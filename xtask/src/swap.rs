//! `--swap SIZE`: a sparse raw disk image under `target/swap/`, attached to
//! the guest as a modern virtio-blk PCI device. The guest pages to the
//! first virtio-blk disk it finds (and names its store in the Boot record).

use crate::qemu::Mem;
use crate::toolchain::target_dir;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Smallest swap disk: 4 MiB holds paging.thrash's 1024-page region
/// (`bench/src/workloads/thrash.rs`), the largest set of pages the guest
/// pages out at once; a smaller disk runs out of slots mid-run.
pub const MIN_SWAP_BYTES: u64 = 4 << 20;

/// `--swap SIZE`: QEMU size syntax (a number with an optional K, M or G
/// suffix), at least [`MIN_SWAP_BYTES`] and whole 4 KiB pages (the guest
/// pages in 4 KiB slots; a partial page at the end would be dead space).
pub fn parse_swap_size(text: &str) -> Result<Mem> {
    let size = crate::qemu::parse_size(text).map_err(|e| anyhow::anyhow!("swap size: {e:#}"))?;
    if size.bytes < MIN_SWAP_BYTES {
        anyhow::bail!(
            "swap size {text:?} is too small: the disk must hold at least {} MiB (paging.thrash pages out \
             up to 1024 pages of 4 KiB at once, and the guest pages only to the disk when one is attached)",
            MIN_SWAP_BYTES >> 20
        );
    }
    if size.bytes % record::PAGE_SIZE != 0 {
        anyhow::bail!("swap size {text:?} is not a whole number of 4 KiB pages (the guest's swap slots)");
    }
    Ok(size)
}

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
    fn swap_sizes_say_what_is_wrong() {
        assert_eq!(parse_swap_size("4M").unwrap().bytes, 4 << 20);
        assert_eq!(parse_swap_size("256M").unwrap().bytes, 256 << 20);
        assert_eq!(parse_swap_size("8196K").unwrap().bytes, 8196 << 10);
        let e = format!("{:#}", parse_swap_size("1K").unwrap_err());
        assert!(e.starts_with("swap size \"1K\" is too small: the disk must hold at least 4 MiB"), "{e}");
        assert!(!e.contains("boot"), "not a guest-RAM message: {e}");
        let e = format!("{:#}", parse_swap_size("4097K").unwrap_err());
        assert!(e.contains("not a whole number of 4 KiB pages"), "{e}");
        let e = format!("{:#}", parse_swap_size("lots").unwrap_err());
        assert!(e.starts_with("swap size: memory size \"lots\""), "{e}");
    }

    #[test]
    fn image_is_sparse_and_sized() {
        let swap = Swap::create("unit-test", parse_mem("64M").unwrap()).unwrap();
        let meta = std::fs::metadata(&swap.path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks allocated", meta.blocks());
        let args = swap.args();
        assert!(
            args[1].starts_with("if=none,id=swap,format=raw,file=") && args[1].ends_with("unit-test.img"),
            "{args:?}"
        );
        assert_eq!(args[3], "virtio-blk-pci,drive=swap,disable-legacy=on");
        std::fs::remove_file(&swap.path).unwrap();
    }
}
