//! PCI configuration space and device discovery, over the `virtio-drivers`
//! crate's PCI types: ECAM (memory-mapped, from the ACPI MCFG table) where
//! the platform has it, port I/O (`0xCF8`/`0xCFC`) otherwise.

use core::ops::RangeInclusive;

use x86_64::instructions::port::Port;

pub use virtio_drivers::transport::pci::bus::{
    BarInfo, Cam, Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, MmioCam, PciRoot,
};

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// Configuration access through the legacy I/O ports (256 bytes per
/// function, enough for the header and capabilities).
pub struct PortCam {
    _private: (),
}

impl PortCam {
    /// # Safety
    /// Only one `PortCam` may be in use at a time: an access is two port
    /// writes/reads that another user of the ports must not interleave.
    pub unsafe fn new() -> PortCam {
        PortCam { _private: () }
    }

    fn address(df: DeviceFunction, offset: u8) -> u32 {
        1 << 31
            | u32::from(df.bus) << 16
            | u32::from(df.device) << 11
            | u32::from(df.function) << 8
            | u32::from(offset & 0xFC)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        // SAFETY: 0xCF8/0xCFC are the PCI configuration ports on every PC;
        // `PortCam::new`'s contract makes this the only user.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(Self::address(df, offset));
            Port::<u32>::new(CONFIG_DATA).read()
        }
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: as in `read_word`.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(Self::address(df, offset));
            Port::<u32>::new(CONFIG_DATA).write(data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam { _private: () }
    }
}

/// The first function on `buses` with `vendor` and one of `devices`.
pub fn find<C: ConfigurationAccess>(
    root: &PciRoot<C>,
    buses: RangeInclusive<u8>,
    vendor: u16,
    devices: &[u16],
) -> Option<(DeviceFunction, DeviceFunctionInfo)> {
    buses
        .flat_map(|bus| root.enumerate_bus(bus))
        .find(|(_, info)| info.vendor_id == vendor && devices.contains(&info.device_id))
}

/// Turns on memory decoding and bus mastering (DMA) for `df`.
pub fn enable<C: ConfigurationAccess>(root: &mut PciRoot<C>, df: DeviceFunction) {
    let (_, command) = root.get_status_command(df);
    root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_addresses_pack_bus_device_function_and_register() {
        let df = DeviceFunction { bus: 1, device: 3, function: 2 };
        assert_eq!(PortCam::address(df, 0x12), 0x8001_1A10);
    }
}
