/* fetch_policy.h: which http(s) image URLs may be fetched, decided on the address each connection
 * actually goes to (after DNS, on every redirect hop), so that a name that resolves to an internal
 * address, a numeric spelling of one (2130706433, 0x7f000001, 127.1, [::ffff:127.0.0.1]) or a
 * redirect to one cannot get past the check.
 *
 * A policy is written as:
 *   "off"        no http(s) image is fetched;
 *   "on"         any host whose address is public: loopback, private (RFC 1918, unique local),
 *                shared (CGNAT), link-local (and so the cloud metadata addresses 169.254.169.254,
 *                fd00:ec2::254, 100.100.100.200), multicast, documentation, benchmarking and
 *                reserved ranges are refused, IPv4 inside IPv6 (mapped, NAT64, 6to4) as the IPv4;
 *   a list       comma-separated host names ("images.example.com", "*.example.com" for its
 *                subdomains) and addresses or CIDR blocks ("203.0.113.7", "10.0.0.0/8",
 *                "2001:db8::/32"): only a listed host, whatever its address, or an address inside a
 *                listed block is fetched. Internal ranges are refused unless listed ("127.0.0.1/32",
 *                or "0.0.0.0/0,::/0" for everything). */
#ifndef VLR_FETCH_POLICY_H
#define VLR_FETCH_POLICY_H

#include <sys/socket.h>

#include "common.h"

typedef struct vlr_fetch_policy vlr_fetch_policy;

/* Parses a policy; messages name the entry that is neither a host name nor an address/CIDR. */
vlr_status vlr_fetch_policy_parse(const char *spec, vlr_fetch_policy **out, vlr_err *e);
void vlr_fetch_policy_free(vlr_fetch_policy *p); /* NULL is a no-op */
bool vlr_fetch_policy_off(const vlr_fetch_policy *p);

/* The range a non-public address belongs to ("loopback", "private", "link-local", ...), or NULL when
 * it is public. */
const char *vlr_address_class(const struct sockaddr *sa);

/* Whether a connection to sa may be made to fetch from host (as the URL spells it, brackets off).
 * On refusal, why[0..cap) says why ("host localhost, address ::1: loopback", "neither x.com nor its
 * address 10.1.2.3 is in the allowlist"). */
bool vlr_fetch_policy_allows(const vlr_fetch_policy *p, const char *host, const struct sockaddr *sa, char *why,
                             size_t cap);

#endif
