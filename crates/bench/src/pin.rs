//! Pinned cores (`--pin`): the server runs on one core and the generator on the
//! other, so that neither steals the other's core, via `sched_setaffinity`. A
//! shared run gives both every core.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// The core the server gets in a pinned run; the generator takes the others.
pub const SERVER_CORE: usize = 0;

/// Cores online on this machine, whatever mask the calling thread has.
pub fn online_cores() -> usize {
    // SAFETY: sysconf only reads a system value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// The affinity mask for `cores`.
fn mask(cores: impl Iterator<Item = usize>) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeros is the empty set,
    // and CPU_SET only sets a bit inside it (it ignores cores past its size).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for core in cores {
            libc::CPU_SET(core, &mut set);
        }
        set
    }
}

/// Sets the calling thread's mask (threads it starts afterwards inherit it).
fn apply(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of that size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Puts the calling thread (and the threads it starts from now on, such as a
/// runtime's workers) on the generator's cores when `pinned`, on every core
/// otherwise. Gives the number of cores it now has.
pub fn generator(pinned: bool) -> std::io::Result<usize> {
    let all = online_cores();
    if pinned && all >= 2 {
        apply(&mask((0..all).filter(|&c| c != SERVER_CORE)))?;
        Ok(all - 1)
    } else {
        apply(&mask(0..all))?;
        Ok(all)
    }
}

/// Makes `command`'s process run on `core` only, or on every core with `None`.
pub fn child_on(command: &mut Command, core: Option<usize>) {
    let set = match core {
        Some(core) => mask(std::iter::once(core)),
        None => mask(0..online_cores()),
    };
    // SAFETY: the hook runs in the child between fork and exec, and only makes one
    // system call on a value prepared before the fork (no allocation, no locks).
    unsafe {
        command.pre_exec(move || apply(&set));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_child_runs_on_its_core_only() {
        let mut command = Command::new("grep");
        command.args(["Cpus_allowed_list", "/proc/self/status"]);
        child_on(&mut command, Some(0));
        let out = command.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.split_whitespace().nth(1), Some("0"), "{text}");
    }
}
