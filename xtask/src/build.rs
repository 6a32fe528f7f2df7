//! Builds the kernel ELF with the pinned nightly and wraps it into BIOS and
//! UEFI disk images with `mkimage`.

use crate::cmd;
use crate::toolchain::{cargo, target_dir, KERNEL_TARGET};
use anyhow::{Context, Result};
use std::path::PathBuf;

pub struct Images {
    pub bios: PathBuf,
    pub uefi: PathBuf,
}

impl Images {
    /// Where `mkimage` puts the images; used as is by `run --no-build`.
    pub fn existing() -> Images {
        let dir = image_dir();
        Images { bios: dir.join("bios.img"), uefi: dir.join("uefi.img") }
    }
}

/// The kernel ELF the images are made from, with its symbols (release
/// profile: `debug = "line-tables-only"`, not stripped), for gdb and the
/// sharing tracer's symbol names.
pub fn kernel_elf() -> PathBuf {
    target_dir().join(KERNEL_TARGET).join("release").join("kernel")
}

fn image_dir() -> PathBuf {
    target_dir().join("image")
}

/// The images to boot: the ones on disk with `--no-build`, else freshly
/// built (installing the pinned toolchain first if needed).
pub fn images(no_build: bool) -> Result<Images> {
    if no_build {
        return Ok(Images::existing());
    }
    crate::toolchain::ensure_toolchain()?;
    build()
}

/// Builds the kernel and both images (mkimage always writes both; once its
/// builder is compiled that takes ~20 ms).
pub fn build() -> Result<Images> {
    eprintln!("==> building kernel");
    cmd::run(&mut cargo(&["build", "--package", "kernel", "--release", "--target", KERNEL_TARGET]))
        .context("building the kernel")?;
    let kernel = kernel_elf();
    anyhow::ensure!(kernel.is_file(), "the kernel build succeeded but {} is missing", kernel.display());

    eprintln!("==> making disk images");
    if !target_dir().join("release").join("mkimage").exists() {
        // bootloader's build script `cargo install`s its boot stages.
        eprintln!("    first build of mkimage: the bootloader stages take about 3 minutes to compile");
    }
    let dir = image_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (kernel_arg, dir_arg) = (kernel.to_string_lossy(), dir.to_string_lossy());
    cmd::run(&mut cargo(&["run", "--release", "--quiet", "--package", "mkimage", "--", &kernel_arg, &dir_arg]))
        .context("making the disk images")?;
    Ok(Images::existing())
}
