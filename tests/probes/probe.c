/* Attacks a build step or container makes on its own isolation (SECURITY.md section 4,
 * G19-G21). Built by the tests with `gcc -static` and copied into a busybox image; each
 * probe prints one line "NAME: refused (ERRNO)" or "NAME: ALLOWED ..." so the test can
 * assert on every line and show what got through.
 *
 * A probe counts as refused only when the kernel said no (EPERM, EACCES, EROFS, ENOENT for
 * a path that must not exist): an EINVAL means the call was reachable, which is what the
 * probe is about. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/perf_event.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

/* The internet checksum of `len` bytes, `sum` carrying a pseudo header's part. */
static unsigned short inet_sum(const void *data, size_t len, unsigned long sum) {
    const unsigned char *p = data;
    for (; len > 1; p += 2, len -= 2)
        sum += (unsigned long)(p[0] << 8 | p[1]);
    if (len)
        sum += (unsigned long)(p[0] << 8);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return htons((unsigned short)~sum);
}

/* The default route's interface and gateway, from /proc/net/route. */
static int default_route(char ifname[IFNAMSIZ], struct in_addr *gateway) {
    FILE *f = fopen("/proc/net/route", "r");
    char line[256], name[IFNAMSIZ];
    unsigned long dest, gw;
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        if (sscanf(line, "%15s %lx %lx", name, &dest, &gw) == 3 && dest == 0 && gw != 0) {
            snprintf(ifname, IFNAMSIZ, "%s", name);
            gateway->s_addr = (in_addr_t)gw; /* printed as the raw network-order word */
            found = 1;
        }
    if (f)
        fclose(f);
    return found;
}

/* The gateway's MAC once the kernel resolved it (a datagram to it makes it ARP). */
static int neighbour_mac(struct in_addr ip, unsigned char mac[6]) {
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr = ip};
    sendto(udp, "x", 1, 0, (struct sockaddr *)&to, sizeof to);
    close(udp);
    for (int tries = 0; tries < 20; tries++) {
        FILE *f = fopen("/proc/net/arp", "r");
        char line[256], addr[64];
        unsigned m[6], flags;
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "%63s %*x %x %x:%x:%x:%x:%x:%x", addr, &flags, &m[0], &m[1], &m[2],
                       &m[3], &m[4], &m[5]) == 8 &&
                (flags & 2) && inet_addr(addr) == ip.s_addr) {
                for (int i = 0; i < 6; i++)
                    mac[i] = (unsigned char)m[i];
                fclose(f);
                return 1;
            }
        if (f)
            fclose(f);
        usleep(50000);
    }
    return 0;
}

/* A TCP SYN from `self` to `dst`:`port`, framed for the gateway `gw_mac`. */
static size_t syn_frame(unsigned char *frame, const unsigned char self_mac[6],
                        const unsigned char gw_mac[6], struct in_addr self, struct in_addr dst,
                        unsigned short sport, unsigned short port) {
    struct ether_header *eth = (void *)frame;
    struct iphdr *ip = (void *)(frame + sizeof *eth);
    struct tcphdr *tcp = (void *)(frame + sizeof *eth + sizeof *ip);
    memset(frame, 0, sizeof *eth + sizeof *ip + sizeof *tcp);
    memcpy(eth->ether_dhost, gw_mac, 6);
    memcpy(eth->ether_shost, self_mac, 6);
    eth->ether_type = htons(ETHERTYPE_IP);
    ip->version = 4;
    ip->ihl = 5;
    ip->tot_len = htons(sizeof *ip + sizeof *tcp);
    ip->id = htons(sport);
    ip->ttl = 64;
    ip->protocol = IPPROTO_TCP;
    ip->saddr = self.s_addr;
    ip->daddr = dst.s_addr;
    ip->check = inet_sum(ip, sizeof *ip, 0);
    tcp->source = htons(sport);
    tcp->dest = htons(port);
    tcp->seq = htonl(0x6b696c6e);
    tcp->doff = 5;
    tcp->syn = 1;
    tcp->window = htons(64240);
    unsigned long pseudo = (ntohl(self.s_addr) >> 16) + (ntohl(self.s_addr) & 0xffff) +
                           (ntohl(dst.s_addr) >> 16) + (ntohl(dst.s_addr) & 0xffff) +
                           IPPROTO_TCP + sizeof *tcp;
    tcp->check = inet_sum(tcp, sizeof *tcp, pseudo);
    return sizeof *eth + sizeof *ip + sizeof *tcp;
}

/* Sends SYNs to `dst`:`port` through the gateway for up to 2 s; whether a TCP answer
 * (SYN-ACK or RST) from there came back. */
static int raw_syn_answered(int sock, int ifindex, const unsigned char self_mac[6],
                            const unsigned char gw_mac[6], struct in_addr self,
                            struct in_addr dst, unsigned short port) {
    unsigned short sport = (unsigned short)(40000 + getpid() % 20000 + port % 97);
    unsigned char frame[128], got[2048];
    size_t len = syn_frame(frame, self_mac, gw_mac, self, dst, sport, port);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6};
    memcpy(to.sll_addr, gw_mac, 6);
    for (int round = 0; round < 4; round++) {
        if (sendto(sock, frame, len, 0, (struct sockaddr *)&to, sizeof to) < 0)
            return 0;
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        while (poll(&pfd, 1, 500) > 0) {
            ssize_t n = recv(sock, got, sizeof got, 0);
            struct iphdr *ip = (void *)(got + sizeof(struct ether_header));
            struct tcphdr *tcp = (void *)(got + sizeof(struct ether_header) + sizeof *ip);
            if (n >= (ssize_t)(sizeof(struct ether_header) + sizeof *ip + sizeof *tcp) &&
                ip->protocol == IPPROTO_TCP && ip->saddr == dst.s_addr &&
                tcp->source == htons(port) && tcp->dest == htons(sport))
                return 1;
        }
    }
    return 0;
}

/* CVE-2020-8558: a frame to 127.0.0.1 sent to the bridge's MAC (a packet socket needs only
 * CAP_NET_RAW, a default capability) must not reach a service the host binds to its
 * loopback on `port`. The control: the same SYN to the gateway's own address must be
 * answered (a RST), or the probe could not have seen an answer at all. */
static void probe_localnet(unsigned short port) {
    char ifname[IFNAMSIZ];
    struct in_addr gateway, self, loopback = {.s_addr = htonl(INADDR_LOOPBACK)};
    unsigned char self_mac[6], gw_mac[6];
    if (!default_route(ifname, &gateway)) {
        printf("localnet: refused (no route out)\n");
        return;
    }
    int sock = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
    if (sock < 0) {
        printf("localnet: refused (%s)\n", strerrorname_np(errno));
        return;
    }
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(sock, SIOCGIFADDR, &ifr) < 0) {
        printf("localnet: ERROR (no address on %s)\n", ifname);
        return;
    }
    self = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr;
    if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0 || !neighbour_mac(gateway, gw_mac)) {
        printf("localnet: ERROR (no MAC for %s or the gateway)\n", ifname);
        return;
    }
    memcpy(self_mac, ifr.ifr_hwaddr.sa_data, 6);
    int ifindex = (int)if_nametoindex(ifname);
    int control = raw_syn_answered(sock, ifindex, self_mac, gw_mac, self, gateway, port);
    printf("localnet-control: %s\n", control ? "answered" : "NO ANSWER (the probe is blind)");
    if (raw_syn_answered(sock, ifindex, self_mac, gw_mac, self, loopback, port))
        printf("localnet: ALLOWED (the host's 127.0.0.1:%u answered)\n", port);
    else
        printf("localnet: refused (no answer from the host's 127.0.0.1:%u)\n", port);
    close(sock);
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
        else if (!strcmp(p, "localnet"))
            probe_localnet((unsigned short)atoi(argv[++i]));
        else {
            fprintf(stderr, "unknown probe %s\n", p);
            return 2;
        }
    }
    return 0;
}
