/* serve_conns.h: the open connections of `vlreward serve`, for what libmicrohttpd does not do itself
 * (0.9.75, Debian 12): a deadline for a request's headers and body that trickling bytes cannot push
 * back (libmicrohttpd's --idle-timeout restarts on every byte), and a shutdown that waits only for the
 * requests that have fully arrived.
 *
 * Each connection is in one of three phases:
 *   reading    its request (headers, body) has started but not fully arrived: the read deadline runs;
 *   answering  the request is complete (or already answered) and is being scored or sent;
 *   idle       kept alive between requests: libmicrohttpd's idle timeout applies. The next request's
 *              first bytes are seen in the kernel's TCP counters (tcpi_last_data_recv), which moves the
 *              connection back to reading, so a kept-alive connection cannot trickle either.
 * A connection past its deadline gets 408 with a JSON body and is shut down (shutdown(2) on its
 * socket, under the lock that its CLOSED notification takes before libmicrohttpd closes the
 * descriptor, so the descriptor cannot belong to another connection by then).
 *
 * Connection limits without resets: libmicrohttpd closes a connection beyond its own limits at once,
 * and the client sees "connection reset". So its limits are set well above --max-connections and
 * --max-connections-per-ip, and the registry counts the connections itself: one that arrives when
 * max_conns are open, or per_ip from its address, is "over": it is read like any other (under the
 * read deadline) and answered 503 with Retry-After, then closed. It holds no slot. */
#ifndef VLR_CLI_SERVE_CONNS_H
#define VLR_CLI_SERVE_CONNS_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct serve_conns serve_conns;

/* read_timeout_s: the time a request may take to arrive (> 0); max_conns, per_ip: the connections
 * served at once, in all and from one address. NULL when out of memory. */
serve_conns *serve_conns_new(double read_timeout_s, size_t max_conns, size_t per_ip);
void serve_conns_free(serve_conns *cs);

/* MHD_OPTION_NOTIFY_CONNECTION (cls = the serve_conns). */
void serve_conns_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe);

/* The access handler, once the request has fully arrived or is answered early: the connection leaves
 * the reading phase. False when the deadline already cut it (then answer nothing: MHD_NO). */
bool serve_conns_answering(serve_conns *cs, struct MHD_Connection *c);
/* The access handler, at the headers of a request: a kept-alive connection whose next request arrived
 * before the TCP counters showed it is reading from now on. */
void serve_conns_reading(serve_conns *cs, struct MHD_Connection *c);
/* MHD_OPTION_NOTIFY_COMPLETED: the response is sent, the connection waits for the next request. */
void serve_conns_idle(serve_conns *cs, struct MHD_Connection *c);

/* Cuts the connections past the read deadline (408); call it a few times a second. Returns how many. */
size_t serve_conns_sweep(serve_conns *cs);
/* Shutdown: cuts every connection whose request has not fully arrived (503 "shutting down") and every
 * idle one. Returns how many; those being answered are left to finish. */
size_t serve_conns_cut_unfinished(serve_conns *cs);
/* True when c arrived beyond the limits: answer it 503 and close it. */
bool serve_conns_over(struct MHD_Connection *c);
/* True when c's client has closed its end (or the connection was cut): nobody reads a reply. */
bool serve_conns_client_gone(struct MHD_Connection *c);
/* Open connections: *served hold a slot, *over are being answered 503. */
void serve_conns_count(serve_conns *cs, size_t *served, size_t *over);
/* Connections in the answering phase. */
size_t serve_conns_answering_count(serve_conns *cs);

#endif
