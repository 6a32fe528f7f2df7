//! Builds the kernel ELF with the pinned nightly and wraps it into BIOS and
//! UEFI disk images with `mkimage`. There are two kernels: the production
//! one that `run` and `bench` boot, and the test one (`--features
//! test-hooks`: the in-kernel suites and the fault injectors they use),
//! each with its own directory so neither overwrites the other.

use crate::cmd;
use crate::toolchain::{cargo, target_dir, KERNEL_TARGET};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Which kernel an image holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// No tests and no test hooks: what users run and benchmarks measure.
    Production,
    /// The in-kernel test suites and the hooks only they use.
    Test,
}

impl Flavor {
    /// The kernel's cargo features for this flavor.
    fn cargo_features(self) -> &'static [&'static str] {
        match self {
            Flavor::Production => &[],
            Flavor::Test => &["--features", "test-hooks"],
        }
    }

    /// Directory of this flavor's images and ELF, under the target dir.
    fn dir_name(self) -> &'static str {
        match self {
            Flavor::Production => "image",
            Flavor::Test => "image-test",
        }
    }
}

pub struct Images {
    pub bios: PathBuf,
    pub uefi: PathBuf,
    /// The kernel ELF the images are made from, with its symbols (release
    /// profile: `debug = "line-tables-only"`, not stripped), for gdb and
    /// the sharing tracer's symbol names.
    pub elf: PathBuf,
}

impl Images {
    /// Where `build` puts `flavor`'s images; used as is by `--no-build`.
    pub fn existing(flavor: Flavor) -> Images {
        let dir = image_dir(flavor);
        Images { bios: dir.join("bios.img"), uefi: dir.join("uefi.img"), elf: dir.join("kernel") }
    }
}

/// Where cargo leaves the kernel it built last (of either flavor).
fn cargo_kernel_elf() -> PathBuf {
    target_dir().join(KERNEL_TARGET).join("release").join("kernel")
}

fn image_dir(flavor: Flavor) -> PathBuf {
    target_dir().join(flavor.dir_name())
}

/// The images to boot: the ones on disk with `--no-build`, else freshly
/// built (installing the pinned toolchain first if needed).
pub fn images(no_build: bool, flavor: Flavor) -> Result<Images> {
    if no_build {
        return Ok(Images::existing(flavor));
    }
    crate::toolchain::ensure_toolchain()?;
    build(flavor)
}

/// Builds the kernel of `flavor` and both its images (mkimage always
/// writes both; once its builder is compiled that takes ~20 ms).
pub fn build(flavor: Flavor) -> Result<Images> {
    eprintln!("==> building kernel ({})", flavor.dir_name());
    let mut args = vec!["build", "--package", "kernel", "--release", "--target", KERNEL_TARGET];
    args.extend(flavor.cargo_features());
    cmd::run(&mut cargo(&args)).context("building the kernel")?;
    let built = cargo_kernel_elf();
    anyhow::ensure!(built.is_file(), "the kernel build succeeded but {} is missing", built.display());

    let dir = image_dir(flavor);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Both flavors build to the same path: a copy beside the images keeps
    // the ELF that matches them for gdb and the tracer.
    let images = Images::existing(flavor);
    std::fs::copy(&built, &images.elf)
        .with_context(|| format!("copying {} to {}", built.display(), images.elf.display()))?;

    eprintln!("==> making disk images");
    if !target_dir().join("release").join("mkimage").exists() {
        // bootloader's build script `cargo install`s its boot stages.
        eprintln!("    first build of mkimage: the bootloader stages take about 3 minutes to compile");
    }
    let (kernel_arg, dir_arg) = (images.elf.to_string_lossy(), dir.to_string_lossy());
    cmd::run(&mut cargo(&["run", "--release", "--quiet", "--package", "mkimage", "--", &kernel_arg, &dir_arg]))
        .context("making the disk images")?;
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_flavors_keep_their_own_files() {
        let (prod, test) = (Images::existing(Flavor::Production), Images::existing(Flavor::Test));
        for (p, t) in [(&prod.bios, &test.bios), (&prod.uefi, &test.uefi), (&prod.elf, &test.elf)] {
            assert_ne!(p, t);
            assert_eq!(p.file_name(), t.file_name());
        }
        assert!(prod.bios.ends_with("image/bios.img"), "{}", prod.bios.display());
        assert!(test.elf.ends_with("image-test/kernel"), "{}", test.elf.display());
    }

    #[test]
    fn only_the_test_flavor_has_the_hooks() {
        assert!(Flavor::Production.cargo_features().is_empty());
        assert_eq!(Flavor::Test.cargo_features(), ["--features", "test-hooks"]);
    }
}
