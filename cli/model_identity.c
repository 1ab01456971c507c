/* model_identity.c: the name and revision of a model folder (see model_identity.h). */
#include "model_identity.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Adds the name and the content of dir/file to the checksum; of a safetensors file only its 8-byte
 * header length and the JSON header (shapes, dtypes, offsets), never the weights. False when the
 * file cannot be opened. */
static bool hash_file(uint64_t *h, const char *dir, const char *file, bool safetensors_header) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    *h = fnv1a(*h, (const unsigned char *)file, strlen(file) + 1);
    uint64_t left = UINT64_MAX;
    if (safetensors_header) {
        unsigned char len[8];
        if (fread(len, 1, 8, f) != 8) {
            fclose(f);
            return true;
        }
        left = 0;
        for (int i = 7; i >= 0; i--) left = left << 8 | len[i];
        *h = fnv1a(*h, len, 8);
        if (left > (100u << 20)) left = 100u << 20; /* the format's own header limit */
    }
    unsigned char buf[1 << 16];
    size_t n;
    while (left && (n = fread(buf, 1, left < sizeof buf ? (size_t)left : sizeof buf, f)) > 0) {
        *h = fnv1a(*h, buf, n);
        left -= n;
    }
    fclose(f);
    return true;
}

/* ".../models--ORG--NAME/snapshots/COMMIT": ORG/NAME and COMMIT, or false. */
static bool hf_snapshot(const char *real, char **name, char **revision) {
    const char *snap = strstr(real, "/snapshots/");
    if (!snap) return false;
    const char *commit = snap + strlen("/snapshots/");
    size_t commit_len = strcspn(commit, "/");
    if (commit_len == 0 || commit[commit_len] != '\0') return false;
    const char *repo = snap;
    while (repo > real && repo[-1] != '/') repo--;
    if (strncmp(repo, "models--", 8) != 0) return false;
    repo += 8;
    int repo_len = (int)(snap - repo);
    /* the cache writes ORG/NAME as ORG--NAME (a model without an organisation has no "--") */
    const char *sep = strstr(repo, "--");
    char *n = NULL;
    if (sep && sep < snap) {
        if (asprintf(&n, "%.*s/%.*s", (int)(sep - repo), repo, (int)(snap - sep - 2), sep + 2) < 0) return false;
    } else if (asprintf(&n, "%.*s", repo_len, repo) < 0) {
        return false;
    }
    *name = n;
    *revision = strndup(commit, commit_len);
    return *revision != NULL;
}

bool cli_model_identity(const char *dir, char **name, char **revision) {
    *name = *revision = NULL;
    char real[PATH_MAX];
    if (!realpath(dir, real)) snprintf(real, sizeof real, "%s", dir);
    size_t len = strlen(real);
    while (len > 1 && real[len - 1] == '/') real[--len] = '\0';
    if (hf_snapshot(real, name, revision)) return true;
    free(*name);
    *name = NULL;
    const char *base = strrchr(real, '/');
    *name = strdup(base && base[1] ? base + 1 : real);
    uint64_t h = 1469598103934665603ull;
    hash_file(&h, real, "config.json", false);
    if (!hash_file(&h, real, "model.safetensors.index.json", false)) hash_file(&h, real, "model.safetensors", true);
    hash_file(&h, real, "value_head.safetensors", true);
    char text[32];
    snprintf(text, sizeof text, "fnv1a64:%016llx", (unsigned long long)h);
    *revision = strdup(text);
    return *name && *revision;
}
