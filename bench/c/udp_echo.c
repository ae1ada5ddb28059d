/*
** udp_echo.c - the C peer of the UDP benchmark: a recvmmsg/sendmmsg echo
** server, and a client keeping DEPTH datagrams in flight.
**   udp_echo server PORT          prints "port N", echoes every datagram
**   udp_echo client PORT SECONDS DEPTH SIZE
**                                 prints "udp_echo N" (echoes per second)
** The client answers each echo with a new datagram, so DEPTH stay in
** flight; if none comes back for 50 ms (a datagram lost to a full socket
** buffer) it sends DEPTH new ones.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define SLOT 2048

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int udp_socket(int port, struct sockaddr_in *addr) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) { perror("socket"); exit(1); }
  memset(addr, 0, sizeof *addr);
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr->sin_port = htons((unsigned short)port);
  return fd;
}

static void run_server(int port) {
  struct sockaddr_in addr;
  int fd = udp_socket(port, &addr);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    perror("bind");
    exit(1);
  }
  socklen_t len = sizeof addr;
  getsockname(fd, (struct sockaddr *)&addr, &len);
  printf("port %d\n", ntohs(addr.sin_port));
  fflush(stdout);
  static char bufs[BATCH][SLOT];
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_in from[BATCH];
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = SLOT;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
    if (n <= 0) continue;
    for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
    sendmmsg(fd, msgs, (unsigned)n, 0);
  }
}

static void send_burst(int fd, const char *payload, int size, int count) {
  struct mmsghdr msgs[BATCH];
  struct iovec iov = { (void *)payload, (size_t)size };
  while (count > 0) {
    int n = count < BATCH ? count : BATCH;
    for (int i = 0; i < n; i++) {
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov;
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int sent = sendmmsg(fd, msgs, (unsigned)n, 0);
    if (sent <= 0) return;
    count -= sent;
  }
}

static void run_client(int port, double seconds, int depth, int size) {
  struct sockaddr_in addr;
  int fd = udp_socket(port, &addr);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    perror("connect");
    exit(1);
  }
  static char payload[SLOT], bufs[BATCH][SLOT];
  memset(payload, 'x', sizeof payload);
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  long echoes = 0;
  double start = now(), end = start + seconds;
  send_burst(fd, payload, size, depth);
  struct pollfd pfd = { fd, POLLIN, 0 };
  while (now() < end) {
    if (poll(&pfd, 1, 50) == 0) {   /* lost: prime the window again */
      send_burst(fd, payload, size, depth);
      continue;
    }
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = SLOT;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) continue;
    echoes += n;
    send_burst(fd, payload, size, n);
  }
  printf("udp_echo %.0f\n", (double)echoes / (now() - start));
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "server") == 0) {
    run_server(atoi(argv[2]));
  } else if (argc == 6 && strcmp(argv[1], "client") == 0) {
    run_client(atoi(argv[2]), atof(argv[3]), atoi(argv[4]), atoi(argv[5]));
  } else {
    fprintf(stderr, "usage: udp_echo server PORT | "
                    "client PORT SECONDS DEPTH SIZE\n");
    return 2;
  }
  return 0;
}
