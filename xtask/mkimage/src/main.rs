//! `mkimage KERNEL OUT_DIR`: writes `OUT_DIR/bios.img` and `OUT_DIR/uefi.img`.
//!
//! Kept apart from xtask because the `bootloader` crate's build script
//! compiles the boot stages with `-Zbuild-std`, so this binary must be built
//! by the pinned nightly, while xtask itself runs on any stable toolchain.

use bootloader::{BootConfig, DiskImageBuilder};
use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kernel, out_dir] = args.as_slice() else {
        eprintln!("usage: mkimage KERNEL OUT_DIR");
        return ExitCode::from(2);
    };
    let out_dir = PathBuf::from(out_dir);
    let mut config = BootConfig::default();
    // The bootloader's own INFO lines would drown the kernel's serial output.
    config.serial_logging = false;
    config.frame_buffer_logging = false;
    let mut builder = DiskImageBuilder::new(PathBuf::from(kernel));
    builder.set_boot_config(&config);
    let steps = [
        ("bios.img", builder.create_bios_image(&out_dir.join("bios.img"))),
        ("uefi.img", builder.create_uefi_image(&out_dir.join("uefi.img"))),
    ];
    for (name, result) in steps {
        if let Err(e) = result {
            eprintln!("mkimage: creating {name}: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
