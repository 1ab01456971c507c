/* hub.h: the Hugging Face Hub as `vlreward pull` and `--model ORG/NAME` use it, with the protocol and
 * the cache layout of the official huggingface_hub client, so a model fetched by either tool serves
 * both:
 *
 *   CACHE/models--ORG--NAME/blobs/ETAG                 file contents, named by their ETag (sha256 for
 *                                                      LFS files, the git blob sha1 for small ones)
 *   CACHE/models--ORG--NAME/snapshots/COMMIT/FILE      relative symlinks into ../../blobs/
 *   CACHE/models--ORG--NAME/refs/REV                   the commit a branch or tag resolved to
 *
 * hub.c: the environment (HF_ENDPOINT, HF_TOKEN and the token file, HF_HOME / HF_HUB_CACHE,
 * HF_HUB_OFFLINE), repository ids, cache paths and `--model` resolution. hub_http.c: requests to the
 * hub and its error answers. hub_download.c: the parallel, resumable, verified file transfers.
 * hub_progress.c: what a pull prints while it runs. */
#ifndef VLR_HUB_H
#define VLR_HUB_H

#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>

#include "internal.h"

#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"

/* What the environment (and --token) says; strings are malloc'd. */
typedef struct hub_env {
    char *endpoint;      /* HF_ENDPOINT without trailing '/' */
    char *cache_dir;     /* HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub */
    char *token;         /* NULL when none: sent only to the endpoint's host, never printed */
    char *token_source;  /* where the token came from ("--token", "HF_TOKEN", a file path), for messages */
    bool offline;        /* HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is 1, ON, YES or TRUE */
    bool no_bars;        /* HF_HUB_DISABLE_PROGRESS_BARS is true: plain lines even on a terminal */
} hub_env;

/* Reads the environment; token_flag (--token) wins over HF_TOKEN, HUGGING_FACE_HUB_TOKEN and the token
 * file of `hf auth login` (HF_TOKEN_PATH, default HF_HOME/token). */
vlr_status hub_env_load(hub_env *env, const char *token_flag, vlr_err *e);
void hub_env_free(hub_env *env);

/* ORG/NAME as the hub accepts it: letters, digits, '-', '_', '.'; no "--" or ".."; at most 96 bytes. */
bool hub_repo_id_valid(const char *repo, vlr_err *e);
/* A branch, tag or commit usable as a path under refs/ (no "..", no empty component). */
bool hub_revision_valid(const char *rev, vlr_err *e);
/* 40 hexadecimal digits. */
bool hub_is_commit(const char *s);
/* A file name of the repository usable as a path under snapshots/COMMIT/. */
bool hub_filename_valid(const char *name);
/* A normalised ETag usable as a file name in blobs/. */
bool hub_etag_valid(const char *etag);

/* CACHE/models--ORG--NAME (malloc'd). */
char *hub_repo_dir(const hub_env *env, const char *repo);
/* The snapshot folder a cached revision resolves to (a commit, or a branch or tag through refs/), or
 * VLR_ERR_IO with a message that says what is missing. *dir is malloc'd. */
vlr_status hub_cached_snapshot(const hub_env *env, const char *repo, const char *rev, char **dir, vlr_err *e);
/* refs/REV := commit, atomically (a no-op when rev is the commit itself). */
vlr_status hub_write_ref(const char *repo_dir, const char *rev, const char *commit, vlr_err *e);
/* snapshots/COMMIT/FILE -> ../../blobs/ETAG, created or replaced atomically. */
vlr_status hub_link_snapshot(const char *repo_dir, const char *commit, const char *file, const char *etag,
                             vlr_err *e);
/* mkdir -p */
vlr_status hub_mkdirs(const char *path, vlr_err *e);

/* The folder `--model ARG` names: ARG itself when it is a directory, else ORG/NAME[@REV] (REV default
 * main) resolved from the cache; when that is absent the message says `vlreward pull ORG/NAME`. */
vlr_status hub_model_dir(const char *arg, char **dir, vlr_err *e);

/* ---- hub_http.c ------------------------------------------------------------------------------- */

/* A file of the repository as the API lists it. */
typedef struct hub_file {
    char *name;
    int64_t size; /* -1 when the API did not say */
} hub_file;

typedef struct hub_repo_info {
    char commit[41];
    bool gated;
    hub_file *files;
    size_t n_files;
} hub_repo_info;

/* GET ENDPOINT/api/models/ORG/NAME/revision/REV?blobs=true: the commit REV is at and its files. */
vlr_status hub_api_revision(const hub_env *env, const char *repo, const char *rev, hub_repo_info *info,
                            vlr_err *e);
void hub_repo_info_free(hub_repo_info *info);

/* The headers of one response that the protocol reads (strings NUL-terminated, "" when absent). */
typedef struct hub_response {
    long status;
    char *location;            /* malloc'd: signed CDN links are long */
    char repo_commit[48];      /* X-Repo-Commit */
    char linked_etag[136];     /* X-Linked-Etag */
    char etag[136];            /* ETag */
    int64_t linked_size;       /* X-Linked-Size, -1 when absent */
    int64_t content_length;    /* Content-Length, -1 when absent */
    char content_range[96];
    char content_encoding[32];
    char error_code[48];       /* X-Error-Code */
    char error_message[200];   /* X-Error-Message, printable ASCII only */
} hub_response;

void hub_response_reset(hub_response *r);
/* CURLOPT_HEADERFUNCTION for a hub_response (userdata). */
size_t hub_response_header_cb(char *line, size_t size, size_t n, void *userdata);

/* Where a request went, for messages: the URL without its query (signed links carry secrets). */
void hub_url_for_message(const char *url, char *out, size_t cap);
/* scheme://host[:port] of url equals the endpoint's: the only host the token may go to. */
bool hub_same_origin(const char *url, const char *endpoint);
/* Percent-encodes s for a URL path; '/' stays when keep_slash. malloc'd. */
char *hub_url_escape(const char *s, bool keep_slash);

/* What went wrong with a hub answer, as a message for people: gated repositories, missing
 * repositories, revisions and files, refused tokens. file may be NULL (the API call). */
void hub_http_error(vlr_err *e, const hub_env *env, const hub_response *r, const char *url, const char *repo,
                    const char *rev, const char *file, bool gated);

/* Common options of every hub request: http(s) only, connect timeout, user agent, no signals; errbuf
 * (CURL_ERROR_SIZE bytes) receives libcurl's message. Proxies come from the usual environment. */
void hub_curl_defaults(CURL *h, char *errbuf);

/* ---- hub_download.c --------------------------------------------------------------------------- */

typedef struct hub_pull_plan {
    const hub_env *env;
    const char *repo;
    const char *commit;
    const char *repo_dir;  /* cache mode: CACHE/models--ORG--NAME; NULL with local_dir */
    const char *local_dir; /* --local-dir: plain files there, metadata in DIR/.cache/huggingface/ */
    bool gated;
    int parallel;          /* transfers at once */
    bool tty;              /* progress bars (else plain lines) */
    FILE *log;             /* where progress and per-file errors go (stderr) */
} hub_pull_plan;

typedef struct hub_pull_result {
    size_t n_downloaded, n_cached, n_failed;
    int64_t bytes_transferred;
} hub_pull_result;

/* Brings every file into the cache (or local_dir): skips what is already there, resumes
 * .incomplete files with Range, verifies LFS files' sha256 against X-Linked-Etag, moves atomically.
 * Each failing file is reported on plan->log; the return is VLR_OK only when every file is there. */
vlr_status hub_download(const hub_pull_plan *plan, const hub_file *files, size_t n, hub_pull_result *res,
                        vlr_err *e);

/* ---- hub_progress.c --------------------------------------------------------------------------- */

typedef struct hub_progress hub_progress;
/* n_files rows at most on a terminal; total_bytes may grow as sizes become known. */
hub_progress *hub_progress_new(FILE *out, bool tty, size_t n_files);
void hub_progress_free(hub_progress *p);
/* Slot i (0..n_files-1): name, bytes present, bytes expected (-1: unknown); counts in the total. */
void hub_progress_file(hub_progress *p, size_t i, const char *name, int64_t have, int64_t size);
/* Slot i is transferring: it gets a bar. */
void hub_progress_start(hub_progress *p, size_t i);
/* Slot i now has `have` bytes, `received` of them over the network in this run (for the speed). */
void hub_progress_bytes(hub_progress *p, size_t i, int64_t have, int64_t received);
/* Prints a line above the bars (a retry note, a warning). */
void hub_progress_print(hub_progress *p, const char *line);
/* Slot i is finished; line (a done, cached or error line; NULL: none) is printed once. */
void hub_progress_finish(hub_progress *p, size_t i, const char *line);
/* Redraws the bars (at most ten times a second unless force) or, without a terminal, prints a total
 * line every ten seconds. */
void hub_progress_draw(hub_progress *p, bool force);
/* "19.8 MB", "1.2 GB" */
void hub_format_bytes(int64_t n, char *out, size_t cap);

#endif
