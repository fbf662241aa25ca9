//! Forked children that drop privileges: what an unprivileged user (nobody, uid/gid 65534) is
//! told when it opens VFIO nodes that are root's alone.

/// uid and gid of user nobody.
pub const NOBODY: u32 = 65534;

/// Drops this process to user and group nobody, with no supplementary groups
/// (`setgroups(0)`, `setgid`, `setuid`, in that order: the last one gives up the right to the
/// others). Meant for a forked child: there is no way back.
pub fn become_nobody() -> Result<(), String> {
    // SAFETY: plain syscalls; setgroups reads no list when its size is 0.
    let dropped =
        unsafe { libc::setgroups(0, std::ptr::null()) == 0 && libc::setgid(NOBODY) == 0 && libc::setuid(NOBODY) == 0 };
    if dropped {
        Ok(())
    } else {
        Err("cannot become nobody".into())
    }
}

/// Forks a child (see [`crate::fork_child`]) that becomes nobody and runs `f`, and waits for it:
/// an error when the child could not drop its privileges, or `f` failed or panicked (the child
/// says why on stdout).
///
/// # Safety
/// As for [`crate::fork_child`]: the calling process must have no other threads, and `f` must
/// not rely on state another thread would have held a lock on.
pub unsafe fn as_nobody(f: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>) -> Result<(), String> {
    let child = move || -> Result<(), Box<dyn std::error::Error>> {
        become_nobody()?;
        f()
    };
    // SAFETY: forwarded from the caller.
    let pid = unsafe { crate::fork_child(child) }?;
    crate::wait_child(pid)
}
