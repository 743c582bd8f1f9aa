//! What every container runs inside, one step past Docker's defaults: its own user
//! namespace (root inside is an unprivileged id range outside), a seccomp allowlist
//! with the semantics of Docker's and containerd's default profile (and `ptrace`,
//! `io_uring` and namespace creation refused as well, whatever the capabilities),
//! `noNewPrivileges`, cgroup limits on memory, processes and CPU, runc's masked and
//! read-only kernel paths, and nothing of the host mounted but `/proc`, `/dev` and
//! `/sys` of its own.

use serde_json::{json, Value};

use crate::unpack::IdShift;

/// Where containers' ids live on the host unless configured: far above any
/// `/etc/subuid` range tools hand out (which start at 100000).
pub const DEFAULT_USERNS_BASE: u32 = 1_000_000_000;
pub const USERNS_SIZE: u32 = 65536;

/// The sandbox of every container a server runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sandbox {
    /// Container ids `0..size` are host ids `base..base+size`.
    pub ids: IdShift,
    /// Memory limit (bytes); swap is not granted beyond it.
    pub memory_bytes: u64,
    /// At most this many processes and threads.
    pub pids: i64,
    /// CPU time, in CPUs (`1.5` = one and a half cores).
    pub cpus: f64,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            ids: IdShift {
                base: DEFAULT_USERNS_BASE,
                size: USERNS_SIZE,
            },
            memory_bytes: 512 << 20,
            pids: 512,
            cpus: 1.0,
        }
    }
}

/// Why the configured id range cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the container id range {base}..{end} {reason}; choose another with --userns-base")]
pub struct RangeTaken {
    pub base: u32,
    pub end: u64,
    pub reason: String,
}

/// A service's own limits over the server's defaults (`None` keeps the default).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
    pub cpus: Option<f64>,
}

impl Sandbox {
    /// This sandbox with a service's own limits.
    pub fn with(mut self, limits: Limits) -> Self {
        if let Some(m) = limits.memory_bytes {
            self.memory_bytes = m;
        }
        if let Some(p) = limits.pids {
            self.pids = p;
        }
        if let Some(c) = limits.cpus {
            self.cpus = c;
        }
        self
    }

    /// Checks that no user or subordinate id range of this host overlaps the
    /// containers' range (a file owned by a container would then be someone's).
    pub fn check_range_free(&self) -> Result<(), RangeTaken> {
        let (base, end) = (
            u64::from(self.ids.base),
            u64::from(self.ids.base) + u64::from(self.ids.size),
        );
        let taken = |reason: String| RangeTaken {
            base: self.ids.base,
            end,
            reason,
        };
        if self.ids.base == 0 {
            return Err(taken("includes the host's root".into()));
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if let [name, start, count] = f[..] {
                    let (Ok(s), Ok(c)) = (start.parse::<u64>(), count.parse::<u64>()) else {
                        continue;
                    };
                    if s < end && base < s + c {
                        return Err(taken(format!("overlaps {name}'s range in {file}")));
                    }
                }
            }
        }
        for file in ["/etc/passwd", "/etc/group"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if let Some(id) = f.get(2).and_then(|i| i.parse::<u64>().ok()) {
                    if (base..end).contains(&id) {
                        return Err(taken(format!("holds {}'s id in {file}", f[0])));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies the sandbox to a runtime spec (as JSON): namespaces, id mappings,
    /// seccomp, cgroup limits and path, `noNewPrivileges`.
    pub fn apply(&self, spec: &mut Value, container_id: &str) {
        let linux = &mut spec["linux"];
        let namespaces = linux["namespaces"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut namespaces: Vec<Value> = namespaces
            .into_iter()
            .filter(|n| n["type"] != "user" && n["type"] != "cgroup")
            .collect();
        namespaces.push(json!({"type": "user"}));
        namespaces.push(json!({"type": "cgroup"}));
        linux["namespaces"] = Value::Array(namespaces);
        let map = json!([{"containerID": 0, "hostID": self.ids.base, "size": self.ids.size}]);
        linux["uidMappings"] = map.clone();
        linux["gidMappings"] = map;
        linux["seccomp"] = seccomp_profile();
        let period: u64 = 100_000;
        linux["resources"] = json!({
            "memory": {"limit": self.memory_bytes, "swap": self.memory_bytes},
            "pids": {"limit": self.pids},
            "cpu": {"quota": (self.cpus * period as f64) as i64, "period": period},
            "devices": [{"allow": false, "access": "rwm"}],
        });
        linux["cgroupsPath"] = json!(format!("/berth/{container_id}"));
        spec["process"]["noNewPrivileges"] = json!(true);
    }
}

/// Allowed for every container: the syscalls of Docker's default profile that need
/// no capability a container lacks. Everything else fails with `EPERM`.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "chroot",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// The namespace flags of `clone` (`CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
/// CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`): a `clone` with any
/// of them is refused, as `unshare` and `setns` are.
const CLONE_NAMESPACES: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;

/// The seccomp profile, in the runtime spec's form. Compared with Docker's default:
/// `ptrace`, `process_vm_readv/writev`, `personality` beyond the harmless values,
/// and the `io_uring` calls (which bypass seccomp for the work they queue) are
/// refused too.
pub fn seccomp_profile() -> Value {
    let mut syscalls = vec![json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"})];
    syscalls.push(json!({
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    }));
    // glibc falls back to clone when clone3 is "not implemented" (its flags are in
    // memory, out of seccomp's reach).
    syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    syscalls.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]
    }));
    for persona in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_refuses_what_breaks_out() {
        let p = seccomp_profile();
        let allowed: Vec<&str> = p["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for refused in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "ptrace",
            "process_vm_readv",
            "kexec_load",
            "init_module",
            "finit_module",
            "reboot",
            "swapon",
            "userfaultfd",
            "perf_event_open",
            "open_by_handle_at",
            "io_uring_setup",
            "clone3",
            "fsopen",
            "move_mount",
        ] {
            assert!(!allowed.contains(&refused), "{refused} is allowed");
        }
        for needed in [
            "read",
            "write",
            "execve",
            "futex",
            "epoll_wait",
            "mmap",
            "exit_group",
        ] {
            assert!(allowed.contains(&needed), "{needed} is refused");
        }
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn the_spec_gets_a_user_namespace_limits_and_seccomp() {
        let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap();
        Sandbox::default().apply(&mut spec, "berth-x");
        let linux = &spec["linux"];
        let ns: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["user", "pid", "network", "ipc", "uts", "mount", "cgroup"] {
            assert!(ns.contains(&want), "{want} namespace missing: {ns:?}");
        }
        assert_eq!(
            linux["uidMappings"],
            json!([{"containerID": 0, "hostID": DEFAULT_USERNS_BASE, "size": USERNS_SIZE}])
        );
        assert_eq!(linux["resources"]["memory"]["limit"], 512u64 << 20);
        assert_eq!(linux["resources"]["pids"]["limit"], 512);
        assert_eq!(linux["resources"]["cpu"]["quota"], 100_000);
        assert_eq!(linux["cgroupsPath"], "/berth/berth-x");
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert!(linux["maskedPaths"].as_array().unwrap().len() > 3);
        assert!(linux["readonlyPaths"].as_array().unwrap().len() > 3);
    }
}
