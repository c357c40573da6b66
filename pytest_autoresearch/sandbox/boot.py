"""The bootstrap an isolated process starts with: the namespace's init (``BOOT``).

Run as ``python -I -S -c BOOT <spec json> <cmd...>`` by ``unshare``, as PID 1 of the new PID
namespace (or, without one, as a plain reaper). Standard library only, nothing from this
package: it must start fast and cannot be influenced by the project's ``sys.path``.

In order, it:

1. covers the ``hidden`` paths with an empty tmpfs (a file with ``/dev/null``);
2. gives the evaluation a fresh scratch: a new tmpfs at ``$AUTORESEARCH_SCRATCH`` with
   ``home/`` and ``tmp/`` (``HOME``/``TMPDIR`` point there), and the ``links`` (declared caches
   under the real home, linked at the same place in the scratch home);
3. with ``world``: binds the working directory (the checkout or the worker's worktree) and
   the ``writable`` paths (program.md's ``cache:``) onto themselves, puts a fresh tmpfs on
   ``/dev/shm``, then, after the ``readonly`` binds (git dirs), remounts *every other mount*
   read-only (``/dev`` too: device nodes still work): nothing outside the checkout, the
   scratch and the caches can be written, so nothing an evaluation writes there reaches a
   later one (``unshare --ipc`` gives it its own SysV IPC and POSIX queues as well);
4. brings loopback up (``lo``: ``network: off``), drops the capabilities that could undo the
   mounts, then runs the command as its only child, forwards signals, reaps orphans and exits
   with the command's status. Without a PID namespace it is a child subreaper and kills what
   the command left behind before it exits, so nothing escapes the measured tree.

``spec["probe"]`` stops after the mounts: ``isolation._probe`` runs exactly what an
evaluation gets.
"""

from __future__ import annotations

SCRATCH_ENV = "AUTORESEARCH_SCRATCH"  # where BOOT puts the evaluation's fresh HOME and TMPDIR

# Pseudo filesystems a remount may refuse (a container's /sys, /proc/sys): best effort there.
PSEUDO_FS = (
    "proc sysfs cgroup cgroup2 devpts mqueue debugfs tracefs securityfs pstore bpf fusectl "
    "configfs binfmt_misc autofs hugetlbfs nsfs efivarfs selinuxfs rpc_pipefs"
)

BOOT = r"""
import ctypes, errno, json, os, re, signal, sys
spec = json.loads(sys.argv[1])
cmd = sys.argv[2:]
signal.pthread_sigmask(signal.SIG_SETMASK, [])
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p)

def fail(what):
    err = ctypes.get_errno()
    sys.stderr.write("autoresearch isolation: cannot %s: %s\n" % (what, os.strerror(err)))
    sys.stderr.flush()
    os._exit(125)

def mount(src, target, fstype, flags, data, what):
    enc = lambda s: None if s is None else os.fsencode(s)
    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        fail("%s %s" % (what, target))

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MS_BIND, MS_REC, MS_RELATIME = 4096, 16384, 1 << 21

def kept(path):
    # A remount must keep the flags a user namespace locked (nosuid, nodev, noexec, atime).
    st = os.statvfs(path).f_flag
    return (st & (2 | 4 | 8 | 16 | 64 | 1024 | 2048)) | (MS_RELATIME if st & 4096 else 0)

def make_readonly(path, strict):
    try:
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | kept(path)
    except OSError:
        if strict:
            fail("stat %s" % path)
        return
    if libc.mount(None, os.fsencode(path), None, flags, None) != 0:
        if strict and ctypes.get_errno() != errno.ENOENT:
            fail("make read-only %s" % path)

def under(path, tops):
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in tops)

def mountpoints():
    unescape = lambda m: bytes([int(m.group(1), 8)])
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            parts = line.split(b" ")
            point = re.sub(rb"\\([0-7]{3})", unescape, parts[4])
            yield os.fsdecode(point), parts[parts.index(b"-") + 1].decode()

mounts = spec["pid"]  # only in a mount namespace of our own (never the host's)
for path in spec["hidden"] if mounts else ():
    if os.path.isdir(path):
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700,size=256m", "hide")
    elif os.path.lexists(path):
        mount("/dev/null", path, None, MS_BIND, None, "hide")
scratch = os.environ.get("AUTORESEARCH_SCRATCH") if mounts else None
if scratch:
    os.makedirs(scratch, exist_ok=True)  # inside a hidden path it does not exist yet
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", "create the scratch")
    for sub in ("home/.cache", "tmp"):
        os.makedirs(os.path.join(scratch, sub), exist_ok=True)
    for rel, target in spec.get("links", ()):
        link = os.path.join(scratch, "home", rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(target, link)
world = mounts and spec.get("world")
keep = [os.getcwd()] + [p for p in spec.get("writable", ()) if os.path.lexists(p)]
for path in keep if world else ():
    mount(path, path, None, MS_BIND | MS_REC, None, "bind")  # its own mount: stays writable
if world and os.path.isdir("/dev/shm"):
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", "renew /dev/shm")
for path in spec["readonly"] if mounts else ():
    if not os.path.lexists(path):
        continue
    mount(path, path, None, MS_BIND | MS_REC, None, "bind")
    make_readonly(path, True)
if world:
    keep += [scratch] if scratch else []
    keep += ["/proc", "/dev/shm"] + list(spec["readonly"])
    done = set()
    for point, fstype in list(mountpoints()):
        if point in done or under(point, keep):
            continue
        done.add(point)
        # Device nodes still work on a read-only /dev; a pseudo filesystem may refuse.
        make_readonly(point, fstype not in spec["pseudo"] and not under(point, ["/sys", "/dev"]))
    os.chdir(os.getcwd())  # onto the writable bind: the old cwd is on the read-only mount
if spec["lo"]:
    import fcntl, socket, struct
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH22x", b"lo", 0))[:18])[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 0x1 | 0x40))
    s.close()
for cap in spec["drop"]:
    if libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # PR_CAPBSET_DROP
        fail("drop capability %d" % cap)
libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL

class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]

header, data = Header(0x20080522, 0), (Data * 2)()
if spec["drop"] and libc.capget(ctypes.byref(header), data) == 0:
    for cap in spec["drop"]:
        word, bit = divmod(cap, 32)
        if word < 2:
            data[word].inheritable &= ~(1 << bit)
    if libc.capset(ctypes.byref(header), data) != 0:
        fail("clear inheritable capabilities")
if spec["probe"]:
    if spec["pid"] and os.getpid() != 1:
        sys.stderr.write("autoresearch isolation: not PID 1 in the new namespace\n")
        os._exit(125)
    os._exit(0)
init = os.getpid() == 1
if not init:
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back to this process

child = os.fork()
if child == 0:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        sys.stderr.write("autoresearch isolation: cannot run %s: %s\n" % (cmd[0], exc))
        os._exit(127)

def forward(signum, frame):
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass

def children():
    me, out = str(os.getpid()), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as fh:
                if fh.read().rsplit(")", 1)[1].split()[1] == me:
                    out.append(int(name))
        except (OSError, IndexError):
            pass
    return out

def reap_the_rest():
    # Without a PID namespace nobody kills what the command left: this reaper does.
    while True:
        for pid in children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.wait()
        except ChildProcessError:
            return

for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(signum, forward)
# Reap every orphan; when the command itself ends, so does the namespace: the kernel kills
# whatever it left behind (a daemon, a sleeping grandchild) as this init exits.
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        os._exit(1)
    if pid == child:
        code = os.waitstatus_to_exitcode(status)
        if not init:
            reap_the_rest()
        os._exit(code if code >= 0 else 128 - code)
"""
