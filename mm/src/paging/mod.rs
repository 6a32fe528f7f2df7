//! Demand paging.
//!
//! The portable pieces so far: location tokens in not-present entries
//! (`token`), the backing-store trait with a RAM store (`store`) over a
//! slot allocator that keeps one slot for page faults (`slots`), and the
//! replaceable eviction policies, clock/NRU and LRU (`policy`).
pub mod policy;
pub mod slots;
pub mod store;
pub mod token;
