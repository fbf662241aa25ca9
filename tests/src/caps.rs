//! This thread's capabilities (`capget(2)`/`capset(2)`, version 3), for tests of what the
//! kernel does to a process without `CAP_IPC_LOCK`: its pinned and locked memory counts against
//! `RLIMIT_MEMLOCK`, and iommufd accounts pinned pages to it.

/// `CAP_IPC_LOCK`'s bit number.
pub const CAP_IPC_LOCK: u32 = 14;

/// `_LINUX_CAPABILITY_VERSION_3`: two data structs, 64 capability bits.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Reads this thread's sets, lets `change` edit the low 32 bits (`effective`, `permitted`) and
/// writes them back; returns whether `bit` was effective before.
fn update(bit: u32, change: impl FnOnce(&mut u32, &mut u32)) -> std::io::Result<bool> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget writes one header and two data structs, which both pointers name.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = d[0].effective & (1 << bit) != 0;
    let Data {
        effective, permitted, ..
    } = &mut d[0];
    change(effective, permitted);
    // SAFETY: capset reads the header and two data structs, which both pointers name.
    if unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(was)
}

/// Sets (as far as the permitted set allows) or clears `CAP_IPC_LOCK` in this thread's
/// effective set; returns whether it was set.
pub fn set_ipc_lock(on: bool) -> std::io::Result<bool> {
    let bit = 1u32 << CAP_IPC_LOCK;
    update(CAP_IPC_LOCK, |effective, permitted| {
        if on {
            *effective |= bit & *permitted;
        } else {
            *effective &= !bit;
        }
    })
}

/// Drops `CAP_IPC_LOCK` from this thread's effective and permitted sets, for good.
pub fn drop_ipc_lock() -> std::io::Result<()> {
    let bit = 1u32 << CAP_IPC_LOCK;
    update(CAP_IPC_LOCK, |effective, permitted| {
        *effective &= !bit;
        *permitted &= !bit;
    })
    .map(|_| ())
}
