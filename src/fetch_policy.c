/* fetch_policy.c: see fetch_policy.h. The ranges are those of the IANA special-purpose address
 * registries (RFC 6890 and its updates) that are not globally reachable, plus the deprecated
 * IPv6 forms that embed an IPv4 address. */
#include "fetch_policy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

typedef struct net {
    int family;        /* AF_INET or AF_INET6 */
    uint8_t addr[16];  /* network order; IPv4 in the first 4 bytes */
    int bits;
} net;

struct vlr_fetch_policy {
    bool off, list;    /* neither: "on" */
    char **hosts;      /* lower case; "*.example.com" kept as ".example.com" */
    size_t n_hosts;
    net *nets;
    size_t n_nets;
};

/* ---- address ranges ------------------------------------------------------------------------- */

static bool in_prefix(const uint8_t *a, const uint8_t *prefix, int bits) {
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, prefix, (size_t)whole) != 0) return false;
    return rest == 0 || ((a[whole] ^ prefix[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static const struct { uint8_t prefix[4]; int bits; const char *what; } v4_ranges[] = {
    {{0, 0, 0, 0}, 8, "\"this network\" (0.0.0.0/8)"},
    {{10, 0, 0, 0}, 8, "private"},
    {{100, 64, 0, 0}, 10, "shared address space (CGNAT)"},
    {{127, 0, 0, 0}, 8, "loopback"},
    {{169, 254, 0, 0}, 16, "link-local (cloud metadata lives here)"},
    {{172, 16, 0, 0}, 12, "private"},
    {{192, 0, 0, 0}, 24, "reserved for protocols (192.0.0.0/24)"},
    {{192, 0, 2, 0}, 24, "documentation"},
    {{192, 88, 99, 0}, 24, "6to4 relay anycast"},
    {{192, 168, 0, 0}, 16, "private"},
    {{198, 18, 0, 0}, 15, "benchmarking"},
    {{198, 51, 100, 0}, 24, "documentation"},
    {{203, 0, 113, 0}, 24, "documentation"},
    {{224, 0, 0, 0}, 4, "multicast"},
    {{240, 0, 0, 0}, 4, "reserved"},
};

static const struct { uint8_t prefix[16]; int bits; const char *what; } v6_ranges[] = {
    {{0}, 128, "unspecified"},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback"},
    {{0}, 96, "IPv4-compatible (deprecated)"},
    {{0, 0x64, 0xff, 0x9b, 0, 1}, 48, "local-use NAT64"},
    {{1, 0, 0, 0, 0, 0, 0, 0}, 64, "discard-only"},
    {{0x20, 0x01, 0, 0}, 23, "reserved for protocols (2001::/23, Teredo included)"},
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation"},
    {{0xfc}, 7, "unique local (private)"},
    {{0xfe, 0x80}, 10, "link-local"},
    {{0xfe, 0xc0}, 10, "site-local (deprecated)"},
    {{0xff}, 8, "multicast"},
};

static const char *v4_class(const uint8_t *a) {
    for (size_t i = 0; i < sizeof v4_ranges / sizeof v4_ranges[0]; i++)
        if (in_prefix(a, v4_ranges[i].prefix, v4_ranges[i].bits)) return v4_ranges[i].what;
    return NULL;
}

/* The IPv4 address an IPv6 one carries, when it is a form that reaches it: mapped (::ffff:0:0/96),
 * NAT64 (64:ff9b::/96) or 6to4 (2002::/16). */
static const uint8_t *embedded_v4(const uint8_t *a) {
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0) return a + 12;
    if (a[0] == 0x20 && a[1] == 0x02) return a + 2;
    return NULL;
}

const char *vlr_address_class(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) return v4_class((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr);
    if (sa->sa_family != AF_INET6) return "not an IP address";
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    const uint8_t *v4 = embedded_v4(a);
    if (v4) return v4_class(v4);
    for (size_t i = 0; i < sizeof v6_ranges / sizeof v6_ranges[0]; i++)
        if (in_prefix(a, v6_ranges[i].prefix, v6_ranges[i].bits)) return v6_ranges[i].what;
    return NULL;
}

/* ---- the policy ------------------------------------------------------------------------------ */

void vlr_fetch_policy_free(vlr_fetch_policy *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_hosts; i++) free(p->hosts[i]);
    free(p->hosts);
    free(p->nets);
    free(p);
}

bool vlr_fetch_policy_off(const vlr_fetch_policy *p) { return p && p->off; }

/* "a.b.c.d", "x::y", with an optional "/bits". */
static bool parse_net(const char *text, net *out) {
    char buf[64];
    if (strlen(text) >= sizeof buf) return false;
    strcpy(buf, text);
    char *slash = strchr(buf, '/');
    if (slash) *slash = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        out->bits = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        out->bits = 128;
    } else {
        return false;
    }
    if (slash) {
        char *end;
        long bits = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || bits < 0 || bits > out->bits) return false;
        out->bits = (int)bits;
    }
    return true;
}

/* A DNS name: letters, digits, '-', '.', '_' (as some internal names have), optionally "*." first. */
static bool host_name(const char *s) {
    if (strncmp(s, "*.", 2) == 0) s += 2;
    if (!*s || strlen(s) > 253) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' && *s != '_') return false;
    return true;
}

vlr_status vlr_fetch_policy_parse(const char *spec, vlr_fetch_policy **out, vlr_err *e) {
    *out = NULL;
    vlr_fetch_policy *p = vlr_calloc(1, sizeof *p, e);
    if (!p) return VLR_ERR_NOMEM;
    if (strcmp(spec, "off") == 0 || strcmp(spec, "on") == 0) {
        p->off = spec[1] == 'f';
        *out = p;
        return VLR_OK;
    }
    p->list = true;
    size_t cap = 1;
    for (const char *c = spec; *c; c++) cap += *c == ',';
    p->hosts = vlr_calloc(cap, sizeof *p->hosts, e);
    p->nets = vlr_calloc(cap, sizeof *p->nets, e);
    vlr_status rc = p->hosts && p->nets ? VLR_OK : VLR_ERR_NOMEM;
    for (const char *s = spec; !rc;) {
        const char *comma = strchr(s, ',');
        const char *a = s;
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        while (n && isspace((unsigned char)*a)) a++, n--;
        while (n && isspace((unsigned char)a[n - 1])) n--;
        char *entry = vlr_malloc(n + 1, e);
        if (!entry) {
            rc = VLR_ERR_NOMEM;
            break;
        }
        for (size_t i = 0; i < n; i++) entry[i] = (char)tolower((unsigned char)a[i]);
        entry[n] = '\0';
        if (parse_net(entry, &p->nets[p->n_nets])) {
            p->n_nets++;
            free(entry);
        } else if (host_name(entry)) {
            if (entry[0] == '*') memmove(entry, entry + 1, n); /* "*.x" -> ".x" */
            p->hosts[p->n_hosts++] = entry;
        } else {
            rc = vlr_fail(e, VLR_ERR_INPUT, "\"%s\" is neither off, on, a host name, an address nor a CIDR block", entry);
            free(entry);
        }
        if (!comma) break;
        s = comma + 1;
    }
    if (!rc && p->n_hosts + p->n_nets == 0) rc = vlr_fail(e, VLR_ERR_INPUT, "an empty allowlist (say \"off\" to fetch nothing)");
    if (rc) {
        vlr_fetch_policy_free(p);
        return rc;
    }
    *out = p;
    return VLR_OK;
}

static bool host_listed(const vlr_fetch_policy *p, const char *host) {
    char h[256];
    size_t n = strlen(host);
    if (n >= sizeof h) return false;
    for (size_t i = 0; i <= n; i++) h[i] = (char)tolower((unsigned char)host[i]);
    if (n && h[n - 1] == '.') h[--n] = '\0'; /* "example.com." is "example.com" */
    for (size_t i = 0; i < p->n_hosts; i++) {
        const char *want = p->hosts[i];
        size_t w = strlen(want);
        if (want[0] == '.' ? n > w && strcmp(h + n - w, want) == 0 : strcmp(h, want) == 0) return true;
    }
    return false;
}

static bool address_listed(const vlr_fetch_policy *p, const struct sockaddr *sa) {
    const uint8_t *a6 = sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr : NULL;
    const uint8_t *a4 = sa->sa_family == AF_INET ? (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr
                                                 : a6 ? embedded_v4(a6) : NULL;
    for (size_t i = 0; i < p->n_nets; i++) {
        const net *n = &p->nets[i];
        if (n->family == AF_INET6 && a6 && in_prefix(a6, n->addr, n->bits)) return true;
        if (n->family == AF_INET && a4 && in_prefix(a4, n->addr, n->bits)) return true;
    }
    return false;
}

bool vlr_fetch_policy_allows(const vlr_fetch_policy *p, const char *host, const struct sockaddr *sa, char *why,
                             size_t cap) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, sizeof text);
    if (sa->sa_family == AF_INET6) inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, text, sizeof text);
    if (p->off) {
        snprintf(why, cap, "remote images are off");
        return false;
    }
    if (p->list) {
        if (host_listed(p, host) || address_listed(p, sa)) return true;
        snprintf(why, cap, "neither %s nor its address %s is in the allowlist", host, text);
        return false;
    }
    const char *what = vlr_address_class(sa);
    if (what) snprintf(why, cap, "host %s, address %s: %s", host, text, what);
    return what == NULL;
}
