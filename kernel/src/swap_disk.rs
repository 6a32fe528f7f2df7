//! The swap disk: the first virtio-blk PCI device (modern, virtio 1.x),
//! found through ECAM where the ACPI MCFG gives it and port I/O otherwise,
//! driven with `virtio-drivers` and polled. One request at a time under a
//! short lock; a CPU waiting for the lock or the device naps (halts until a
//! short timer or an IPI, so QEMU's I/O thread gets the host core and
//! shootdowns are answered), and every wait is bounded.

use alloc::boxed::Box;

use drivers::acpi_tables::Ecam;
use drivers::pci::{self, Cam, ConfigurationAccess, MmioCam, PciRoot, PortCam};
use mm::frame::Frame;
use mm::paging::block_store::BlockDevice;
use mm::vm::CacheMode;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::pci::PciTransport;

use crate::nap::nap;
use crate::virtio_hal::KernelHal;
use crate::{memory, vm};

const VIRTIO_VENDOR: u16 = 0x1AF4;
/// virtio-blk: modern (1.x) and transitional device ids.
const BLK_DEVICES: [u16; 2] = [0x1042, 0x1001];
/// Buses searched (QEMU puts its devices on bus 0; bridges add a few).
const MAX_BUSES: u8 = 16;
/// Longest a CPU waits for the lock or the device for one request.
const WAIT_NS: u64 = 10_000_000_000;
/// One nap of a waiter (a 4 KiB request takes tens of microseconds).
const NAP_US: u32 = 20;

struct Inner {
    blk: VirtIOBlk<KernelHal, PciTransport>,
    // Request header and status live here (in the heap, so in the direct
    // map and physically contiguous), not on a stack.
    req: BlkReq,
    resp: BlkResp,
}

pub struct VirtioDisk {
    inner: spin::Mutex<Box<Inner>>,
    sectors: u64,
}

/// Finds and opens the swap disk; `None` if there is none.
pub fn probe(ecam: Option<&Ecam>) -> Option<VirtioDisk> {
    match ecam {
        Some(e) => {
            let buses = *e.buses.start()..=(*e.buses.end()).min(MAX_BUSES - 1);
            let len = (u64::from(*buses.end()) + 1) << 20;
            // SAFETY: the MCFG's ECAM window is device memory (PCI
            // configuration space), which nothing else owns.
            let virt = unsafe { vm::get().phys_map(e.phys, len, CacheMode::Uncached) }
                .unwrap_or_else(|err| panic!("pci: mapping ECAM at {:#x}: {err:?}", e.phys));
            // SAFETY: `virt` maps the ECAM window of buses 0..=end (1 MiB
            // each), uncached, for good, and nothing else uses it.
            let cam = unsafe { MmioCam::new(virt as *mut u8, Cam::Ecam) };
            open(PciRoot::new(cam), buses, "ecam")
        }
        // SAFETY: config access happens here only, on the BSP at boot.
        None => open(PciRoot::new(unsafe { PortCam::new() }), 0..=MAX_BUSES - 1, "port i/o"),
    }
}

fn open<C: ConfigurationAccess>(
    mut root: PciRoot<C>,
    buses: core::ops::RangeInclusive<u8>,
    how: &str,
) -> Option<VirtioDisk> {
    let (df, info) = pci::find(&root, buses, VIRTIO_VENDOR, &BLK_DEVICES)?;
    log::info!("pci ({how}): virtio-blk {:04x}:{:04x} at {df}", info.vendor_id, info.device_id);
    pci::enable(&mut root, df);
    let transport =
        PciTransport::new::<KernelHal, C>(&mut root, df).map_err(|e| log::error!("virtio-blk at {df}: {e:?}")).ok()?;
    let blk = VirtIOBlk::<KernelHal, _>::new(transport).map_err(|e| log::error!("virtio-blk at {df}: {e:?}")).ok()?;
    let sectors = blk.capacity();
    Some(VirtioDisk {
        inner: spin::Mutex::new(Box::new(Inner { blk, req: BlkReq::default(), resp: BlkResp::default() })),
        sectors,
    })
}

/// A transfer's frame: read into (the device writes it) or written out.
enum Buf<'f> {
    In(&'f mut [u8]),
    Out(&'f [u8]),
}

impl VirtioDisk {
    /// One page between `frame` and the 8 sectors at `sector`.
    fn transfer(&self, sector: u64, mut buf: Buf<'_>) -> Result<(), ()> {
        let deadline = drivers::tsc::now_ns() + WAIT_NS;
        let mut guard = loop {
            if let Some(g) = self.inner.try_lock() {
                break g;
            }
            if drivers::tsc::now_ns() > deadline {
                log::error!("virtio-blk: waited {} s for the disk lock", WAIT_NS / 1_000_000_000);
                return Err(());
            }
            smp::ipi::service_pending();
            nap(NAP_US);
        };
        let Inner { blk, req, resp } = &mut **guard;
        // SAFETY: `req`, `resp` and `buf` stay untouched and alive until the
        // request completes below (we wait for it, bounded, or die); `buf`
        // is the caller's frame, borrowed for the whole call.
        let token = unsafe {
            match &mut buf {
                Buf::In(b) => blk.read_blocks_nb(sector as usize, req, b, resp),
                Buf::Out(b) => blk.write_blocks_nb(sector as usize, req, b, resp),
            }
        }
        .map_err(|e| log::error!("virtio-blk: queuing sector {sector}: {e:?}"))?;
        while blk.peek_used() != Some(token) {
            // A request the device never finishes may still write into the
            // frame later: it cannot be given back, so stop here, loudly.
            if drivers::tsc::now_ns() > deadline {
                panic!("virtio-blk: request for sector {sector} not done after {} s", WAIT_NS / 1_000_000_000);
            }
            nap(NAP_US);
        }
        // SAFETY: the same request, buffers and token as queued above.
        let done = unsafe {
            match &mut buf {
                Buf::In(b) => blk.complete_read_blocks(token, req, b, resp),
                Buf::Out(b) => blk.complete_write_blocks(token, req, b, resp),
            }
        };
        done.map_err(|e| log::error!("virtio-blk: sector {sector}: {e:?}"))
    }
}

impl BlockDevice for VirtioDisk {
    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read_page(&self, sector: u64, frame: &mut Frame) -> Result<(), ()> {
        self.transfer(sector, Buf::In(memory::frame_bytes_mut(frame)))
    }

    fn write_page(&self, sector: u64, frame: &Frame) -> Result<(), ()> {
        self.transfer(sector, Buf::Out(memory::frame_bytes(frame)))
    }

    fn name(&self) -> &'static str {
        "virtio-blk"
    }
}
