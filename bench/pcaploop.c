/* The bare libpcap read loops catchd replay is compared with (built by bench/replay.sh).
 *
 *   pcaploop [--loop] [--bigbuf] FILE
 *
 * Counts packets and captured bytes, nothing else. By default it reads with pcap_next_ex
 * through libpcap's default stdio buffer, as a minimal libpcap program does; --loop uses
 * pcap_loop (as tcpdump does), and --bigbuf gives libpcap's stream a 1 MiB buffer, as
 * catchd does. Prints: packets bytes seconds packets/s. */
#include <pcap/pcap.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static unsigned long n, bytes;
static char big[1 << 20];

static void count(u_char *user, const struct pcap_pkthdr *h, const u_char *d) {
    (void)user; (void)d;
    n++;
    bytes += h->caplen;
}

int main(int argc, char **argv) {
    int use_loop = 0, bigbuf = 0;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--loop")) use_loop = 1;
        else if (!strcmp(argv[i], "--bigbuf")) bigbuf = 1;
        else file = argv[i];
    }
    if (!file) { fprintf(stderr, "usage: pcaploop [--loop] [--bigbuf] FILE\n"); return 2; }
    char err[PCAP_ERRBUF_SIZE];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pcap_t *p = pcap_open_offline(file, err);
    if (!p) { fprintf(stderr, "%s\n", err); return 1; }
    if (bigbuf) setvbuf(pcap_file(p), big, _IOFBF, sizeof big);
    int r;
    if (use_loop) {
        r = pcap_loop(p, -1, count, NULL);
    } else {
        struct pcap_pkthdr *h;
        const u_char *d;
        while ((r = pcap_next_ex(p, &h, &d)) == 1) { n++; bytes += h->caplen; }
        if (r == -2) r = 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%lu %lu %.6f %.0f\n", n, bytes, s, n / s);
    pcap_close(p);
    return r == 0 ? 0 : 1;
}
