/* Attacks a build step or container makes on its own isolation (SECURITY.md section 4,
 * G19-G21). Built by the tests with `gcc -static` and copied into a busybox image; each
 * probe prints one line "NAME: refused (ERRNO)" or "NAME: ALLOWED ..." so the test can
 * assert on every line and show what got through.
 *
 * A probe counts as refused only when the kernel said no (EPERM, EACCES, EROFS, ENOENT for
 * a path that must not exist): an EINVAL means the call was reachable, which is what the
 * probe is about. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static void result(const char *name, long rc, int err) {
    if (rc < 0)
        printf("%s: refused (%s)\n", name, strerrorname_np(err));
    else
        printf("%s: ALLOWED (returned %ld)\n", name, rc);
}

/* The call must fail with one of the errnos that mean "not allowed". */
static void denied(const char *name, long rc, int err) {
    if (rc < 0 && (err == EPERM || err == EACCES || err == EROFS))
        printf("%s: refused (%s)\n", name, strerrorname_np(err));
    else if (rc < 0)
        printf("%s: ALLOWED (reachable: %s)\n", name, strerrorname_np(err));
    else
        printf("%s: ALLOWED (returned %ld)\n", name, rc);
}

static void probe_mount(void) {
    mkdir("/probe-mnt", 0755);
    long rc = mount("none", "/probe-mnt", "tmpfs", 0, NULL);
    denied("mount", rc, errno);
    mkdir("/probe-cg", 0755);
    rc = mount("cgroup", "/probe-cg", "cgroup", 0, "memory");
    denied("cgroupfs-mount", rc, errno);
    rc = mount("cgroup2", "/probe-cg", "cgroup2", 0, NULL);
    denied("cgroup2-mount", rc, errno);
    struct stat st;
    if (stat("/sys/fs/cgroup/memory", &st) == 0 || stat("/sys/fs/cgroup/cgroup.procs", &st) == 0)
        printf("cgroupfs-visible: ALLOWED (a cgroup hierarchy is mounted)\n");
    else
        printf("cgroupfs-visible: refused (none mounted)\n");
}

static void probe_remount(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("remount %s: absent\n", path);
        return;
    }
    char name[256];
    snprintf(name, sizeof name, "remount-rw %s", path);
    long rc = mount(NULL, path, NULL, MS_REMOUNT | MS_BIND, NULL);
    denied(name, rc, errno);
}

/* A host file bound read-only must stay read-only. */
static void probe_write(const char *path) {
    char name[256];
    snprintf(name, sizeof name, "write %s", path);
    int fd = open(path, O_WRONLY);
    denied(name, fd, errno);
    if (fd >= 0)
        close(fd);
}

/* The "shocker" technique: a file handle opened relative to a bind mount from the host
 * reaches the host filesystem's root. */
static void probe_open_by_handle(const char *path) {
    int mount_fd = open(path, O_RDONLY);
    if (mount_fd < 0)
        mount_fd = open("/", O_RDONLY);
    struct {
        struct file_handle fh;
        unsigned char bytes[128];
    } h;
    memset(&h, 0, sizeof h);
    h.fh.handle_bytes = 128;
    int mnt_id;
    if (syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &h.fh, &mnt_id, 0) != 0) {
        /* A made-up handle for inode 2 (the root of ext4): the call is what matters. */
        h.fh.handle_bytes = 8;
        h.fh.handle_type = 1;
        h.bytes[0] = 2;
    }
    long rc = syscall(SYS_open_by_handle_at, mount_fd, &h.fh, O_RDONLY);
    denied("open_by_handle_at", rc, errno);
}

static void probe_proc(void) {
    int fd = open("/proc/sys/kernel/core_pattern", O_WRONLY);
    denied("core_pattern", fd, errno);
    fd = open("/proc/sysrq-trigger", O_WRONLY);
    if (fd < 0 && errno == ENOENT)
        printf("sysrq-trigger: absent (kernel without magic sysrq)\n");
    else
        denied("sysrq-trigger", fd, errno);
}

static void probe_syscalls(void) {
    unsigned char attr[256];
    memset(attr, 0, sizeof attr);
    long rc = syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, 72);
    denied("bpf", rc, errno);

    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_CPU_CLOCK;
    pe.exclude_kernel = 1;
    rc = syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0);
    denied("perf_event_open", rc, errno);

    rc = syscall(SYS_userfaultfd, 0);
    denied("userfaultfd", rc, errno);

    memset(attr, 0, sizeof attr);
    rc = syscall(SYS_io_uring_setup, 1, attr);
    denied("io_uring_setup", rc, errno);

    rc = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0);
    denied("keyctl", rc, errno);

    rc = syscall(SYS_add_key, "user", "kiln-probe", "x", 1, -3);
    denied("add_key", rc, errno);

    rc = syscall(SYS_syslog, 10 /* SYSLOG_ACTION_SIZE_BUFFER */, 0, 0);
    denied("syslog", rc, errno);

    rc = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
    denied("socket(AF_VSOCK)", rc, errno);

    rc = personality(0x0040000 /* ADDR_NO_RANDOMIZE */);
    denied("personality(ADDR_NO_RANDOMIZE)", rc, errno);

    rc = unshare(CLONE_NEWUSER);
    denied("unshare(CLONE_NEWUSER)", rc, errno);

    int pidfd = syscall(SYS_pidfd_open, getpid(), 0);
    rc = syscall(SYS_pidfd_getfd, pidfd, 0, 0);
    denied("pidfd_getfd", rc, errno);
    char page[64];
    struct iovec iov = {page, sizeof page};
    rc = syscall(SYS_process_madvise, pidfd, &iov, 1, 20 /* MADV_COLD */, 0);
    denied("process_madvise", rc, errno);
}

/* Opens `path` for reading and writing, else for writing only (/dev/kmsg takes writes
 * without CAP_SYSLOG), else for reading; the first errno of the last try is kept. */
static int open_any(const char *path) {
    int modes[] = {O_RDWR, O_WRONLY, O_RDONLY};
    int fd = -1;
    for (int i = 0; i < 3 && fd < 0; i++)
        fd = open(path, modes[i]);
    return fd;
}

/* mknod may work (CAP_MKNOD is in Docker's default set), opening the node must not. */
static void probe_device(const char *name, const char *path, mode_t kind, unsigned maj, unsigned min) {
    unlink(path);
    char label[256];
    if (mknod(path, kind | 0666, makedev(maj, min)) != 0) {
        snprintf(label, sizeof label, "%s mknod %s", name, path);
        result(label, -1, errno);
        return;
    }
    int fd = open_any(path);
    snprintf(label, sizeof label, "%s open %s", name, path);
    denied(label, fd, errno);
    if (fd >= 0)
        close(fd);
    unlink(path);
}

static void probe_open_existing(const char *path) {
    char label[256];
    snprintf(label, sizeof label, "open %s", path);
    int fd = open_any(path);
    denied(label, fd, errno);
}

/* Forks up to `max` children that wait; prints how many it got. */
static void probe_pids(int max) {
    pid_t *kids = calloc(max, sizeof *kids);
    int n = 0;
    for (; n < max; n++) {
        pid_t pid = fork();
        if (pid == 0) {
            pause();
            _exit(0);
        }
        if (pid < 0)
            break;
        kids[n] = pid;
    }
    for (int i = 0; i < n; i++)
        kill(kids[i], SIGKILL);
    for (int i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    printf("pids: %d forked of %d\n", n, max);
}

static void probe_status(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) ||
            !strncmp(line, "Seccomp", 7))
            printf("status %s", line);
    if (f)
        fclose(f);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *p = argv[i];
        if (!strcmp(p, "status"))
            probe_status();
        else if (!strcmp(p, "mount"))
            probe_mount();
        else if (!strcmp(p, "remount"))
            probe_remount(argv[++i]);
        else if (!strcmp(p, "write"))
            probe_write(argv[++i]);
        else if (!strcmp(p, "handle"))
            probe_open_by_handle(argv[++i]);
        else if (!strcmp(p, "proc"))
            probe_proc();
        else if (!strcmp(p, "syscalls"))
            probe_syscalls();
        else if (!strcmp(p, "block")) {
            /* block MAJOR MINOR: a host block device (the test's loop device) */
            unsigned maj = atoi(argv[i + 1]), min = atoi(argv[i + 2]);
            i += 2;
            probe_device("block", "/dev/probe-blk", S_IFBLK, maj, min);
            probe_device("block", "/probe-blk", S_IFBLK, maj, min);
            probe_device("kmsg", "/dev/probe-kmsg", S_IFCHR, 1, 11);
            probe_device("kmsg", "/probe-kmsg", S_IFCHR, 1, 11);
        } else if (!strcmp(p, "open"))
            probe_open_existing(argv[++i]);
        else if (!strcmp(p, "pids"))
            probe_pids(atoi(argv[++i]));
        else {
            fprintf(stderr, "unknown probe %s\n", p);
            return 2;
        }
    }
    return 0;
}
