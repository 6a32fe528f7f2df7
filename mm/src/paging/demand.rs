//! The pager as the mapping code's hook (`vm::DemandPaging`): `k_mem_map`,
//! `k_mem_unmap` and `protect` call it once paging is on, and each call
//! runs as a paging operation over the VM that holds the hook.

use core::any::Any;

use super::token::{self, Location};
use super::{Pager, Paging};
use crate::vm::{DemandPaging, KMemFlags, Vm, VmError, VmPlatform};

impl<P: VmPlatform> DemandPaging<P> for Pager {
    fn k_mem_map(&self, vm: &Vm<P>, size: u64, flags: KMemFlags) -> Result<u64, VmError> {
        let loc = if flags.contains(KMemFlags::UNINIT) { Location::AnonUninit } else { Location::AnonZero };
        Paging { vm, pg: self }.k_mem_map_with(size, flags, &|_| loc)
    }

    fn holds_page(&self, e: u64) -> bool {
        token::is_pageable(e)
    }

    fn unmap_kmem_pages(&self, vm: &Vm<P>, virt: u64, pages: u64) -> Result<(), VmError> {
        Paging { vm, pg: self }.unmap_kmem_pages(virt, pages)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
