// tunring: what a director's loop on a TUN device costs per packet with
// read(2)+write(2) against io_uring (one io_uring_enter a round that
// submits the writes and re-arms the reads), on this machine.
// It enters a fresh network namespace itself (unshare(CLONE_NEWNET)) and
// refuses to go on if that fails. A sender thread sends UDP datagrams from
// 10.9.0.1:5000 to 10.9.0.2:6000, which route to the TUN device tr0; the
// loop reads each, rewrites its destination to 10.9.0.1:7000 and writes
// it back; a receiver socket on 7000 takes it. In ping-pong mode the
// sender waits for each datagram to come back before the next (one
// packet in flight: a request-response workload); in flood mode it sends
// as fast as it can. CPU is the loop thread's (RUSAGE_THREAD).
//
// usage: tunring rw|uring pingpong|flood SECONDS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int pingpong;
static atomic_int stop;
static atomic_long sent, received;

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int udp(const char *ip, int port) {
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, ip, &a.sin_addr);
	if (s < 0 || bind(s, (void *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
	return s;
}

static int rx;
static double other_cpu; // the sender's and receiver's threads
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static double tcpu(int who) {
	struct rusage u;
	getrusage(who, &u);
	return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
static void add_other(void) {
	double c = tcpu(RUSAGE_THREAD);
	pthread_mutex_lock(&mu);
	other_cpu += c;
	pthread_mutex_unlock(&mu);
}

static void *sender(void *arg) {
	(void)arg;
	int s = udp("10.9.0.1", 5000);
	struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(6000)};
	inet_pton(AF_INET, "10.9.0.2", &d.sin_addr);
	char b[64] = {0}, r[2048];
	while (!atomic_load(&stop)) {
		if (sendto(s, b, sizeof b, 0, (void *)&d, sizeof d) == sizeof b) atomic_fetch_add(&sent, 1);
		if (pingpong) {
			struct timeval tv = {0, 100000};
			setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
			if (recv(rx, r, sizeof r, 0) > 0) atomic_fetch_add(&received, 1);
		}
	}
	add_other();
	return NULL;
}

static void *receiver(void *arg) {
	(void)arg;
	char r[2048];
	struct timeval tv = {0, 100000};
	setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	while (!atomic_load(&stop))
		if (recv(rx, r, sizeof r, 0) > 0) atomic_fetch_add(&received, 1);
	add_other();
	return NULL;
}

static uint16_t csum(const void *p, int n) {
	const uint16_t *w = p;
	uint32_t s = 0;
	for (; n > 1; n -= 2) s += *w++;
	while (s >> 16) s = (s & 0xffff) + (s >> 16);
	return ~s;
}

// rewrite turns the datagram for 10.9.0.2:6000 into one for 10.9.0.1:7000
// from 10.9.0.2:6000. Returns 0 for anything else.
static int rewrite(unsigned char *p, int n) {
	struct iphdr *ip = (void *)p;
	if (n < 28 || ip->version != 4 || ip->protocol != IPPROTO_UDP) return 0;
	unsigned char *u = p + ip->ihl * 4;
	ip->saddr = htonl(0x0a090002);
	ip->daddr = htonl(0x0a090001);
	ip->check = 0;
	ip->check = csum(ip, ip->ihl * 4);
	memcpy(u, "\x17\x70\x1b\x58", 4); // 6000 -> 7000
	u[6] = u[7] = 0; // no UDP checksum
	return 1;
}

static long packets;

static void loop_rw(int fd) {
	unsigned char b[2048];
	while (!atomic_load(&stop)) {
		int n = read(fd, b, sizeof b);
		if (n < 0) { if (errno == EINTR || errno == EAGAIN) continue; perror("read"); exit(1); }
		if (!rewrite(b, n)) continue;
		if (write(fd, b, n) != n) { perror("write"); exit(1); }
		packets++;
	}
}

#define MAXDEPTH 32
static void loop_uring(int fd) {
	int DEPTH = getenv("DEPTH") ? atoi(getenv("DEPTH")) : MAXDEPTH;
	struct io_uring ring;
	if (io_uring_queue_init(2 * MAXDEPTH, &ring, 0) < 0) { fprintf(stderr, "io_uring_queue_init failed\n"); exit(1); }
	static unsigned char buf[MAXDEPTH][2048];
	for (int i = 0; i < DEPTH; i++) {
		struct io_uring_sqe *e = io_uring_get_sqe(&ring);
		io_uring_prep_read(e, fd, buf[i], sizeof buf[i], 0);
		io_uring_sqe_set_data64(e, i);
	}
	struct __kernel_timespec ts = {0, 100000000};
	while (!atomic_load(&stop)) {
		struct io_uring_cqe *c;
		// One system call: submit what the last round queued, wait for one.
		int r = getenv("NOTIMEOUT") ? io_uring_submit_and_wait(&ring, 1) : io_uring_submit_and_wait_timeout(&ring, &c, 1, &ts, NULL);
		if (r < 0 && r != -ETIME && r != -EINTR) { fprintf(stderr, "wait: %s\n", strerror(-r)); exit(1); }
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&ring, head, c) {
			seen++;
			uint64_t d = io_uring_cqe_get_data64(c);
			if (d & 0x100) { // a write done: re-arm its buffer's read
				int i = d & 0xff;
				struct io_uring_sqe *e = io_uring_get_sqe(&ring);
				io_uring_prep_read(e, fd, buf[i], sizeof buf[i], 0);
				io_uring_sqe_set_data64(e, i);
				continue;
			}
			int i = d, n = c->res;
			if (n > 0 && rewrite(buf[i], n)) {
				struct io_uring_sqe *e = io_uring_get_sqe(&ring);
				io_uring_prep_write(e, fd, buf[i], n, 0);
				io_uring_sqe_set_data64(e, 0x100 | i);
				packets++;
			} else {
				struct io_uring_sqe *e = io_uring_get_sqe(&ring);
				io_uring_prep_read(e, fd, buf[i], sizeof buf[i], 0);
				io_uring_sqe_set_data64(e, i);
			}
		}
		io_uring_cq_advance(&ring, seen);
	}
}

int main(int argc, char **argv) {
	if (argc != 4) { fprintf(stderr, "usage: tunring rw|uring pingpong|flood SECONDS\n"); return 2; }
	int uring = !strcmp(argv[1], "uring");
	pingpong = !strcmp(argv[2], "pingpong");
	double secs = atof(argv[3]);
	if (unshare(CLONE_NEWNET) != 0) { perror("unshare(CLONE_NEWNET): refusing to run"); return 1; }
	int fd = open("/dev/net/tun", O_RDWR | (getenv("NONBLOCK") ? O_NONBLOCK : 0));
	struct ifreq ifr = {0};
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	strcpy(ifr.ifr_name, "tr0");
	if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("tun"); return 1; }
	if (system("ip link set lo up && ip link set tr0 up && ip addr add 10.9.0.1/24 dev tr0 && sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.tr0.rp_filter=0 net.ipv4.conf.tr0.accept_local=1") != 0) return 1;
	rx = udp("10.9.0.1", 7000);
	pthread_t st, rt;
	pthread_create(&st, NULL, sender, NULL);
	if (!pingpong) pthread_create(&rt, NULL, receiver, NULL);
	// The loop runs on this thread until the alarm.
	pthread_t self = pthread_self();
	(void)self;
	double t0 = now();
	struct rusage u0, u1;
	getrusage(RUSAGE_THREAD, &u0);
	// stop after secs, from a timer thread
	struct { double s; } *arg = malloc(sizeof *arg);
	arg->s = secs;
	pthread_t tt;
	void *timer(void *a) {
		usleep((useconds_t)(((double *)a)[0] * 1e6));
		atomic_store(&stop, 1);
		// wake a loop blocked in read(2)
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(6000)};
		inet_pton(AF_INET, "10.9.0.2", &d.sin_addr);
		sendto(s, "x", 1, 0, (void *)&d, sizeof d);
		return NULL;
	}
	pthread_create(&tt, NULL, timer, arg);
	if (uring) loop_uring(fd); else loop_rw(fd);
	getrusage(RUSAGE_THREAD, &u1);
	double t1 = now();
	double cpu = (u1.ru_utime.tv_sec - u0.ru_utime.tv_sec) + (u1.ru_stime.tv_sec - u0.ru_stime.tv_sec) +
		((u1.ru_utime.tv_usec - u0.ru_utime.tv_usec) + (u1.ru_stime.tv_usec - u0.ru_stime.tv_usec)) / 1e6;
	pthread_join(st, NULL);
	if (!pingpong) pthread_join(rt, NULL);
	double all = tcpu(RUSAGE_SELF) - other_cpu; // the loop and any io_uring workers
	printf("%s %s%s: %ld packets in %.1f s (%.0f/s), loop thread CPU %.2f us a packet, with io_uring's workers %.2f; sent %ld received %ld\n",
		argv[1], argv[2], getenv("NONBLOCK") ? (getenv("NOTIMEOUT") ? " nonblock notimeout" : " nonblock") : "", packets, t1 - t0, packets / (t1 - t0), cpu / packets * 1e6, all / packets * 1e6,
		atomic_load(&sent), atomic_load(&received));
	return 0;
}
