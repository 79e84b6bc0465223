//! postgresql.conf sizing from a node's memory and CPUs. The rules are the usual starting points
//! for a dedicated database server, written down so `SHOW` results can be predicted (and tested).

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tuning {
    pub shared_buffers_mb: u64,
    pub effective_cache_size_mb: u64,
    pub work_mem_kb: u64,
    pub maintenance_work_mem_mb: u64,
    pub max_connections: u32,
    pub max_worker_processes: u32,
    pub max_parallel_workers: u32,
    pub max_parallel_workers_per_gather: u32,
    pub max_wal_size_mb: u64,
    pub min_wal_size_mb: u64,
    /// WAL a replication slot may hold back before PostgreSQL invalidates it: a dead replica's
    /// slot must not fill the primary's disk.
    pub max_slot_wal_keep_size_mb: u64,
}

/// - shared_buffers: 25% of RAM; effective_cache_size: 75%.
/// - max_connections: 100 up to 2 vCPUs, 50 more per further vCPU, at most 500.
/// - work_mem: what is left after shared_buffers, shared by 3 sorts per connection, ≥ 4 MiB.
/// - maintenance_work_mem: RAM/16 between 64 MiB and 2 GiB.
/// - max_wal_size: 1/8 of the data disk between 1 and 16 GiB; min_wal_size a quarter of it.
/// - max_slot_wal_keep_size: 1/4 of the data disk, at least 1 GiB (a replica gone for longer
///   than that much WAL is rebuilt from the leader instead).
pub fn tune(memory_mib: u64, vcpus: u32, disk_gib: u32) -> Tuning {
    let shared = memory_mib / 4;
    let max_connections = (100 + 50 * vcpus.saturating_sub(2)).min(500);
    let work_mem_kb = ((memory_mib - shared) * 1024 / (max_connections as u64 * 3)).max(4096);
    let max_wal = (disk_gib as u64 * 1024 / 8).clamp(1024, 16 * 1024);
    Tuning {
        shared_buffers_mb: shared,
        effective_cache_size_mb: memory_mib * 3 / 4,
        work_mem_kb,
        maintenance_work_mem_mb: (memory_mib / 16).clamp(64, 2048),
        max_connections,
        max_worker_processes: vcpus.max(8),
        max_parallel_workers: vcpus,
        max_parallel_workers_per_gather: (vcpus / 2).max(1),
        max_wal_size_mb: max_wal,
        min_wal_size_mb: max_wal / 4,
        max_slot_wal_keep_size_mb: (disk_gib as u64 * 1024 / 4).max(1024),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_nodes() {
        let s = tune(1024, 1, 10);
        assert_eq!((s.shared_buffers_mb, s.effective_cache_size_mb), (256, 768));
        assert_eq!(s.max_connections, 100);
        assert_eq!(s.work_mem_kb, 4096);
        assert_eq!(s.maintenance_work_mem_mb, 64);
        assert_eq!((s.max_wal_size_mb, s.min_wal_size_mb), (1280, 320));
        assert_eq!(s.max_slot_wal_keep_size_mb, 2560);
        assert_eq!(tune(1024, 1, 2).max_slot_wal_keep_size_mb, 1024);
        let l = tune(32 * 1024, 8, 500);
        assert_eq!(
            (l.shared_buffers_mb, l.effective_cache_size_mb),
            (8192, 24576)
        );
        assert_eq!(l.max_connections, 400);
        assert_eq!(l.work_mem_kb, 24 * 1024 * 1024 / (400 * 3));
        assert_eq!(l.maintenance_work_mem_mb, 2048);
        assert_eq!(l.max_wal_size_mb, 16 * 1024);
        assert_eq!(tune(512 * 1024, 64, 100).max_connections, 500);
    }
}
