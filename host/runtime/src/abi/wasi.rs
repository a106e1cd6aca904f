//! The WASI subset Envoy provides, registered under both `wasi_snapshot_preview1` and
//! `wasi_unstable` with proxy-wasm-cpp-host's answers: stdout/stderr go to the log, clocks
//! and random work, the environment holds only the plugin's variables, and everything that
//! would touch a file system or socket is a stub with cpp-host's errno.

use std::time::Instant;

use log::Level;
use wasmtime::Linker;

use super::logging::guest_log;
use super::memory::{read, write, write_u32, write_u64};
use super::timers::now_nanos;
use super::{AbiError, Caller};
use crate::vm::VmState;

const SUCCESS: u32 = 0;
const EBADF: u32 = 8;
const EFAULT: u32 = 21;
const EINVAL: u32 = 28;
const ENOENT: u32 = 44;
const ENOSYS: u32 = 52;
const ENOTDIR: u32 = 20;
const ENOTSUP: u32 = 58;
/// Envoy caps one `random_get` at 64 KiB.
const RANDOM_MAX: u32 = 64 * 1024;

/// WASI answers errno values; a bad pointer is EFAULT, a guest trap stays a trap.
fn errno(result: Result<u32, AbiError>) -> wasmtime::Result<u32> {
    match result {
        Ok(code) => Ok(code),
        Err(AbiError::Status(_)) => Ok(EFAULT),
        Err(AbiError::Trap(err)) => Err(err),
    }
}

fn stdio(fd: u32) -> bool {
    fd == 1 || fd == 2
}

/// `fd_write` to 1 logs at info and to 2 at error, without the trailing newline.
fn write_iovs(
    caller: &mut Caller<'_>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nwritten: u32,
) -> Result<u32, AbiError> {
    let level = match fd {
        1 => Level::Info,
        2 => Level::Error,
        _ => return Ok(EBADF),
    };
    let mut text = Vec::new();
    for i in 0..iovs_len {
        let iov = read(caller, iovs.wrapping_add(i.wrapping_mul(8)), 8)?;
        let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        text.extend_from_slice(&read(caller, ptr, len)?);
    }
    let written = u32::try_from(text.len()).unwrap_or(u32::MAX);
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    if written != 0 {
        guest_log(caller.data(), level, &text);
    }
    write_u32(caller, nwritten, written)?;
    Ok(SUCCESS)
}

fn environ(state: &VmState) -> Vec<Vec<u8>> {
    state
        .plugin
        .spec
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}\0").into_bytes())
        .collect()
}

fn environ_get(caller: &mut Caller<'_>, mut array: u32, mut buf: u32) -> Result<u32, AbiError> {
    for entry in environ(caller.data()) {
        write_u32(caller, array, buf)?;
        write(caller, buf, &entry)?;
        buf = buf.wrapping_add(u32::try_from(entry.len()).unwrap_or(u32::MAX));
        array = array.wrapping_add(4);
    }
    Ok(SUCCESS)
}

fn environ_sizes_get(
    caller: &mut Caller<'_>,
    count_ptr: u32,
    size_ptr: u32,
) -> Result<u32, AbiError> {
    let env = environ(caller.data());
    let size: usize = env.iter().map(Vec::len).sum();
    write_u32(
        caller,
        count_ptr,
        u32::try_from(env.len()).unwrap_or(u32::MAX),
    )?;
    write_u32(caller, size_ptr, u32::try_from(size).unwrap_or(u32::MAX))?;
    Ok(SUCCESS)
}

fn clock_time_get(caller: &mut Caller<'_>, clock: u32, ptr: u32) -> Result<u32, AbiError> {
    let now = match clock {
        0 => now_nanos(caller),
        1 => monotonic_nanos(),
        _ => return Ok(ENOTSUP),
    };
    write_u64(caller, ptr, now)?;
    Ok(SUCCESS)
}

/// Monotonic nanoseconds since the first call in this process.
fn monotonic_nanos() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn random_get(caller: &mut Caller<'_>, ptr: u32, len: u32) -> Result<u32, AbiError> {
    if len > RANDOM_MAX {
        return Ok(EINVAL);
    }
    if len == 0 {
        return Ok(SUCCESS);
    }
    let mut bytes = vec![0u8; len as usize];
    getrandom::fill(&mut bytes)
        .map_err(|err| AbiError::Trap(wasmtime::Error::msg(err.to_string())))?;
    write(caller, ptr, &bytes)?;
    Ok(SUCCESS)
}

/// A 24-byte `fdstat` for stdout/stderr: filetype 0, rights `FD_WRITE`.
fn fdstat_get(caller: &mut Caller<'_>, fd: u32, ptr: u32) -> Result<u32, AbiError> {
    if !stdio(fd) {
        return Ok(EBADF);
    }
    let mut stat = [0u8; 24];
    stat[8..16].copy_from_slice(&64u64.to_le_bytes());
    write(caller, ptr, &stat)?;
    Ok(SUCCESS)
}

#[expect(
    clippy::too_many_lines,
    reason = "one registration per WASI function, flat on purpose"
)]
pub(super) fn add(linker: &mut Linker<VmState>, module: &str) -> wasmtime::Result<()> {
    let m = module;
    linker.func_wrap(
        m,
        "fd_write",
        |mut c: Caller<'_>, fd: u32, iovs: u32, n: u32, nw: u32| {
            errno(write_iovs(&mut c, fd, iovs, n, nw))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_pwrite",
        |mut c: Caller<'_>, fd: u32, iovs: u32, n: u32, _off: u64, nw: u32| {
            errno(if stdio(fd) {
                write_iovs(&mut c, fd, iovs, n, nw)
            } else {
                Ok(EBADF)
            })
        },
    )?;
    linker.func_wrap(
        m,
        "fd_read",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32| ENOSYS,
    )?;
    linker.func_wrap(
        m,
        "fd_pread",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u64, _: u32| ENOSYS,
    )?;
    linker.func_wrap(
        m,
        "fd_seek",
        |c: Caller<'_>, _: u32, _: i64, _: u32, _: u32| {
            guest_log(c.data(), Level::Error, b"wasi_unstable fd_seek");
            SUCCESS
        },
    )?;
    linker.func_wrap(m, "fd_close", |c: Caller<'_>, _: u32| {
        guest_log(c.data(), Level::Error, b"wasi_unstable fd_close");
        SUCCESS
    })?;
    linker.func_wrap(
        m,
        "fd_fdstat_get",
        |mut c: Caller<'_>, fd: u32, ptr: u32| errno(fdstat_get(&mut c, fd, ptr)),
    )?;
    linker.func_wrap(m, "fd_fdstat_set_flags", |_: Caller<'_>, _: u32, _: u32| {
        ENOSYS
    })?;
    linker.func_wrap(
        m,
        "fd_fdstat_set_rights",
        |_: Caller<'_>, fd: u32, _: u64, _: u64| {
            if stdio(fd) { SUCCESS } else { EBADF }
        },
    )?;
    linker.func_wrap(m, "fd_prestat_get", |_: Caller<'_>, _: u32, _: u32| EBADF)?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_: Caller<'_>, _: u32, _: u32, _: u32| ENOSYS,
    )?;
    linker.func_wrap(m, "fd_filestat_get", |_: Caller<'_>, _: u32, _: u32| EBADF)?;
    linker.func_wrap(
        m,
        "fd_advise",
        |_: Caller<'_>, _: u32, _: u64, _: u64, _: u32| SUCCESS,
    )?;
    linker.func_wrap(
        m,
        "fd_allocate",
        |_: Caller<'_>, fd: u32, _: u64, _: u64| {
            if stdio(fd) { SUCCESS } else { EBADF }
        },
    )?;
    linker.func_wrap(
        m,
        "fd_datasync",
        |_: Caller<'_>, fd: u32| if stdio(fd) { SUCCESS } else { EBADF },
    )?;
    linker.func_wrap(
        m,
        "fd_sync",
        |_: Caller<'_>, fd: u32| if stdio(fd) { SUCCESS } else { EBADF },
    )?;
    linker.func_wrap(
        m,
        "fd_filestat_set_size",
        |_: Caller<'_>, fd: u32, _: u64| {
            if stdio(fd) { SUCCESS } else { EBADF }
        },
    )?;
    linker.func_wrap(
        m,
        "fd_filestat_set_times",
        |_: Caller<'_>, fd: u32, _: u64, _: u64, _: u32| {
            if stdio(fd) { SUCCESS } else { EBADF }
        },
    )?;
    linker.func_wrap(
        m,
        "fd_readdir",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u64, _: u32| ENOTDIR,
    )?;
    linker.func_wrap(
        m,
        "fd_renumber",
        |_: Caller<'_>, fd: u32, _: u32| if stdio(fd) { ENOTSUP } else { EBADF },
    )?;
    linker.func_wrap(m, "fd_tell", |mut c: Caller<'_>, fd: u32, ptr: u32| {
        errno(if stdio(fd) {
            write_u64(&mut c, ptr, 0).map(|()| SUCCESS)
        } else {
            Ok(EBADF)
        })
    })?;
    linker.func_wrap(
        m,
        "path_open",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u64, _: u64, _: u32, _: u32| {
            ENOENT
        },
    )?;
    linker.func_wrap(
        m,
        "path_filestat_get",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "path_create_directory",
        |_: Caller<'_>, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "path_filestat_set_times",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u64, _: u64, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "path_link",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "path_readlink",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "path_remove_directory",
        |_: Caller<'_>, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "path_rename",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "path_symlink",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "path_unlink_file",
        |_: Caller<'_>, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(m, "sock_accept", |_: Caller<'_>, _: u32, _: u32, _: u32| {
        ENOTSUP
    })?;
    linker.func_wrap(
        m,
        "sock_recv",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "sock_send",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u32| ENOTSUP,
    )?;
    linker.func_wrap(m, "sock_shutdown", |_: Caller<'_>, _: u32, _: u32| ENOTSUP)?;
    linker.func_wrap(
        m,
        "environ_get",
        |mut c: Caller<'_>, array: u32, buf: u32| errno(environ_get(&mut c, array, buf)),
    )?;
    linker.func_wrap(
        m,
        "environ_sizes_get",
        |mut c: Caller<'_>, count: u32, size: u32| errno(environ_sizes_get(&mut c, count, size)),
    )?;
    linker.func_wrap(m, "args_get", |_: Caller<'_>, _: u32, _: u32| SUCCESS)?;
    linker.func_wrap(
        m,
        "args_sizes_get",
        |mut c: Caller<'_>, argc: u32, size: u32| {
            errno(
                write_u32(&mut c, argc, 0)
                    .and_then(|()| write_u32(&mut c, size, 0))
                    .map(|()| SUCCESS),
            )
        },
    )?;
    linker.func_wrap(
        m,
        "clock_time_get",
        |mut c: Caller<'_>, id: u32, _precision: u64, ptr: u32| {
            errno(clock_time_get(&mut c, id, ptr))
        },
    )?;
    linker.func_wrap(
        m,
        "clock_res_get",
        |mut c: Caller<'_>, id: u32, ptr: u32| {
            errno(if id <= 1 {
                write_u64(&mut c, ptr, 1).map(|()| SUCCESS)
            } else {
                Ok(ENOTSUP)
            })
        },
    )?;
    linker.func_wrap(m, "random_get", |mut c: Caller<'_>, ptr: u32, len: u32| {
        errno(random_get(&mut c, ptr, len))
    })?;
    linker.func_wrap(m, "sched_yield", |_: Caller<'_>| SUCCESS)?;
    // Zero events: the Go runtime needs poll_oneoff to succeed.
    linker.func_wrap(
        m,
        "poll_oneoff",
        |mut c: Caller<'_>, _: u32, _: u32, _: u32, nevents: u32| {
            errno(write_u32(&mut c, nevents, 0).map(|()| SUCCESS))
        },
    )?;
    // Envoy only logs proc_exit; the guest carries on (and usually traps at `unreachable`).
    linker.func_wrap(m, "proc_exit", |c: Caller<'_>, code: u32| {
        guest_log(
            c.data(),
            Level::Error,
            format!("wasi_unstable proc_exit({code})").as_bytes(),
        );
    })?;
    Ok(())
}
