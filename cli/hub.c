/* hub.c: the environment of the Hugging Face tools, repository ids, the cache layout shared with
 * huggingface_hub, and what `--model ORG/NAME[@REV]` resolves to. See hub.h. */
#include "hub.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- environment ------------------------------------------------------------------------------ */

/* huggingface_hub's truth values for environment variables. */
static bool env_true(const char *name) {
    const char *v = getenv(name);
    if (!v) return false;
    return strcasecmp(v, "1") == 0 || strcasecmp(v, "ON") == 0 || strcasecmp(v, "YES") == 0 ||
           strcasecmp(v, "TRUE") == 0;
}

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* "~" and "~/x" become $HOME and $HOME/x (os.path.expanduser); other paths are copied. */
static char *expand_home(const char *path, vlr_err *e) {
    if (path[0] != '~' || (path[1] != '\0' && path[1] != '/')) {
        char *p = strdup(path);
        if (!p) vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        return p;
    }
    const char *home = env_nonempty("HOME");
    if (!home) {
        vlr_fail(e, VLR_ERR_CONFIG, "cannot expand '%s': HOME is not set", path);
        return NULL;
    }
    char *p = malloc(strlen(home) + strlen(path));
    if (!p) {
        vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        return NULL;
    }
    sprintf(p, "%s%s", home, path + 1);
    return p;
}

/* HF_HOME, or $XDG_CACHE_HOME/huggingface, or ~/.cache/huggingface. */
static char *hf_home(vlr_err *e) {
    const char *v = env_nonempty("HF_HOME");
    if (v) return expand_home(v, e);
    const char *xdg = env_nonempty("XDG_CACHE_HOME");
    char *base = expand_home(xdg ? xdg : "~/.cache", e);
    if (!base) return NULL;
    char *home = vlr_path_join(base, "huggingface");
    free(base);
    if (!home) vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    return home;
}

/* huggingface_hub's _clean_token: line ends removed, spaces stripped; NULL when nothing is left. The
 * rest must be printable ASCII: it goes into an HTTP header. */
static vlr_status clean_token(const char *raw, size_t len, const char *source, char **out, vlr_err *e) {
    char *t = malloc(len + 1);
    if (!t) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (raw[i] != '\r' && raw[i] != '\n') t[n++] = raw[i];
    t[n] = '\0';
    size_t start = 0;
    while (start < n && isspace((unsigned char)t[start])) start++;
    while (n > start && isspace((unsigned char)t[n - 1])) n--;
    memmove(t, t + start, n - start);
    n -= start;
    t[n] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (t[i] < 0x21 || t[i] > 0x7e) {
            free(t);
            return vlr_fail(e, VLR_ERR_CONFIG, "the token from %s contains a character a token cannot have "
                                               "(byte %zu)", source, i);
        }
    }
    if (n == 0) {
        free(t);
        t = NULL;
    }
    *out = t;
    return VLR_OK;
}

static vlr_status load_token(hub_env *env, const char *flag, const char *home, vlr_err *e) {
    const char *sources[][2] = {{"--token", flag},
                                {"HF_TOKEN", getenv("HF_TOKEN")},
                                {"HUGGING_FACE_HUB_TOKEN", getenv("HUGGING_FACE_HUB_TOKEN")}};
    for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++) {
        if (!sources[i][1] || !*sources[i][1]) continue;
        if (clean_token(sources[i][1], strlen(sources[i][1]), sources[i][0], &env->token, e)) return e->code;
        if (env->token) {
            env->token_source = strdup(sources[i][0]);
            return env->token_source ? VLR_OK : vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        }
    }
    const char *path_env = env_nonempty("HF_TOKEN_PATH");
    char *path = path_env ? expand_home(path_env, e) : vlr_path_join(home, "token");
    if (!path) return path_env ? e->code : vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    char *text = NULL;
    size_t len = 0;
    vlr_err fe;
    /* A missing or unreadable token file means "not logged in", as for huggingface_hub. */
    if (vlr_read_file(path, 1 << 16, &text, &len, &fe) == VLR_OK) {
        vlr_status rc = clean_token(text, len, path, &env->token, e);
        free(text);
        if (rc) {
            free(path);
            return rc;
        }
    }
    if (env->token) env->token_source = path;
    else free(path);
    return VLR_OK;
}

/* HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, else HF_HOME/hub; *home gets HF_HOME when not NULL. */
static char *cache_dir(char **home_out, vlr_err *e) {
    char *home = hf_home(e);
    if (!home) return NULL;
    const char *cache = env_nonempty("HF_HUB_CACHE");
    if (!cache) cache = env_nonempty("HUGGINGFACE_HUB_CACHE");
    char *dir = cache ? expand_home(cache, e) : vlr_path_join(home, "hub");
    if (!dir && !cache) vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    if (dir && home_out) *home_out = home;
    else free(home);
    return dir;
}

vlr_status hub_env_load(hub_env *env, const char *token_flag, vlr_err *e) {
    memset(env, 0, sizeof *env);
    const char *endpoint = env_nonempty("HF_ENDPOINT");
    env->endpoint = strdup(endpoint ? endpoint : HUB_DEFAULT_ENDPOINT);
    if (!env->endpoint) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    size_t n = strlen(env->endpoint);
    while (n && env->endpoint[n - 1] == '/') env->endpoint[--n] = '\0';
    if (strncmp(env->endpoint, "http://", 7) != 0 && strncmp(env->endpoint, "https://", 8) != 0) {
        vlr_fail(e, VLR_ERR_CONFIG, "HF_ENDPOINT must be an http:// or https:// URL, got '%s'", env->endpoint);
        hub_env_free(env);
        return e->code;
    }
    char *home = NULL;
    env->cache_dir = cache_dir(&home, e);
    vlr_status rc = env->cache_dir ? load_token(env, token_flag, home, e) : e->code;
    free(home);
    if (rc) {
        hub_env_free(env);
        return rc;
    }
    env->offline = env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE");
    env->no_bars = env_true("HF_HUB_DISABLE_PROGRESS_BARS");
    return VLR_OK;
}

void hub_env_free(hub_env *env) {
    free(env->endpoint);
    free(env->cache_dir);
    if (env->token) memset(env->token, 0, strlen(env->token));
    free(env->token);
    free(env->token_source);
    memset(env, 0, sizeof *env);
}

/* ---- names ------------------------------------------------------------------------------------- */

static bool word_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* One side of ORG/NAME: [\w.-]+ that starts and ends with a word character (the hub's \b...\b). */
static bool repo_part_valid(const char *s, size_t n) {
    if (n == 0 || !word_char(s[0]) || !word_char(s[n - 1])) return false;
    for (size_t i = 0; i < n; i++)
        if (!word_char(s[i]) && s[i] != '-' && s[i] != '.') return false;
    return true;
}

bool hub_repo_id_valid(const char *repo, vlr_err *e) {
    const char *slash = strchr(repo, '/');
    size_t n = strlen(repo);
    if (!slash || strchr(slash + 1, '/') || n > 96 || !repo_part_valid(repo, (size_t)(slash - repo)) ||
        !repo_part_valid(slash + 1, n - (size_t)(slash - repo) - 1) || strstr(repo, "--") || strstr(repo, "..")) {
        vlr_fail(e, VLR_ERR_INPUT, "'%s' is not a Hugging Face repository id: expected ORG/NAME (letters, digits, "
                                   "'-', '_', '.'; no '--' or '..'; at most 96 characters)", repo);
        return false;
    }
    return true;
}

/* A relative path of at most max bytes: components not empty, "." or ".."; no byte below `lowest`,
 * no DEL, no backslash. */
static bool relative_path_valid(const char *s, size_t max, unsigned char lowest) {
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < lowest || s[i] == 0x7f || s[i] == '\\') return false;
    for (const char *c = s;;) {
        const char *end = strchrnul(c, '/');
        size_t len = (size_t)(end - c);
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) return false;
        if (!*end) return true;
        c = end + 1;
    }
}

bool hub_revision_valid(const char *rev, vlr_err *e) {
    bool ok = relative_path_valid(rev, 255, 0x21); /* git ref names have no spaces */
    if (!ok) vlr_fail(e, VLR_ERR_INPUT, "'%s' is not a revision: expected a branch, tag or commit name", rev);
    return ok;
}

bool hub_is_commit(const char *s) {
    size_t i = 0;
    for (; s[i]; i++)
        if (!isxdigit((unsigned char)s[i])) return false;
    return i == 40;
}

bool hub_filename_valid(const char *name) { return relative_path_valid(name, 1024, 0x20); }

bool hub_etag_valid(const char *etag) {
    size_t n = strlen(etag);
    if (n == 0 || n > 128 || etag[0] == '.') return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)etag[i]) && etag[i] != '-' && etag[i] != '_' && etag[i] != '.') return false;
    return true;
}

/* ---- cache layout ------------------------------------------------------------------------------ */

char *hub_repo_dir(const hub_env *env, const char *repo) {
    vlr_buf b = {0};
    vlr_buf_puts(&b, "models--");
    for (const char *c = repo; *c; c++) {
        if (*c == '/') vlr_buf_puts(&b, "--");
        else vlr_buf_append(&b, c, 1);
    }
    char *dir = b.oom ? NULL : vlr_path_join(env->cache_dir, b.data);
    vlr_buf_free(&b);
    return dir;
}

vlr_status hub_mkdirs(const char *path, vlr_err *e) {
    char *p = strdup(path);
    if (!p) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != '\0') continue;
        char saved = *c;
        *c = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            vlr_fail(e, VLR_ERR_IO, "cannot create folder %s: %s", p, strerror(errno));
            free(p);
            return e->code;
        }
        *c = saved;
        if (!saved) break;
    }
    struct stat st;
    bool dir = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
    if (!dir) vlr_fail(e, VLR_ERR_IO, "%s exists and is not a folder", p);
    free(p);
    return dir ? VLR_OK : e->code;
}

/* Writes text into path through a temporary file and rename(): readers see the old or the new text. */
static vlr_status write_atomic(const char *path, const char *text, vlr_err *e) {
    vlr_buf tmp = {0};
    vlr_buf_printf(&tmp, "%s.%ld.tmp", path, (long)getpid());
    if (tmp.oom) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    int fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    size_t n = strlen(text);
    bool ok = fd >= 0 && write(fd, text, n) == (ssize_t)n;
    if (fd >= 0 && close(fd) != 0) ok = false;
    if (ok && rename(tmp.data, path) != 0) ok = false;
    if (!ok) {
        vlr_fail(e, VLR_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp.data);
    }
    vlr_buf_free(&tmp);
    return ok ? VLR_OK : e->code;
}

/* The folder part of path (malloc'd). */
static char *parent_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
}

vlr_status hub_write_ref(const char *repo_dir, const char *rev, const char *commit, vlr_err *e) {
    if (strcmp(rev, commit) == 0) return VLR_OK;
    vlr_buf path = {0};
    vlr_buf_printf(&path, "%s/refs/%s", repo_dir, rev);
    char *dir = path.oom ? NULL : parent_of(path.data);
    vlr_status rc = !dir ? vlr_fail(e, VLR_ERR_NOMEM, "out of memory") : hub_mkdirs(dir, e);
    /* no line end: huggingface_hub writes and reads the bare commit */
    if (rc == VLR_OK) rc = write_atomic(path.data, commit, e);
    free(dir);
    vlr_buf_free(&path);
    return rc;
}

vlr_status hub_link_snapshot(const char *repo_dir, const char *commit, const char *file, const char *etag,
                             vlr_err *e) {
    vlr_buf pointer = {0}, target = {0}, tmp = {0};
    vlr_buf_printf(&pointer, "%s/snapshots/%s/%s", repo_dir, commit, file);
    /* relative, as huggingface_hub makes it, so the cache can move: up from snapshots/COMMIT/<dirs of file> */
    vlr_buf_puts(&target, "../../");
    for (const char *c = file; *c; c++)
        if (*c == '/') vlr_buf_puts(&target, "../");
    vlr_buf_printf(&target, "blobs/%s", etag);
    vlr_buf_printf(&tmp, "%s.%ld.tmp", pointer.data ? pointer.data : "", (long)getpid());
    char *dir = pointer.oom ? NULL : parent_of(pointer.data);
    vlr_status rc = !dir || target.oom || tmp.oom ? vlr_fail(e, VLR_ERR_NOMEM, "out of memory") : hub_mkdirs(dir, e);
    if (rc == VLR_OK) {
        unlink(tmp.data);
        if (symlink(target.data, tmp.data) != 0 || rename(tmp.data, pointer.data) != 0) {
            rc = vlr_fail(e, VLR_ERR_IO, "cannot link %s to %s: %s", pointer.data, target.data, strerror(errno));
            unlink(tmp.data);
        }
    }
    free(dir);
    vlr_buf_free(&pointer);
    vlr_buf_free(&target);
    vlr_buf_free(&tmp);
    return rc;
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

vlr_status hub_cached_snapshot(const hub_env *env, const char *repo, const char *rev, char **dir, vlr_err *e) {
    *dir = NULL;
    char *repo_dir = hub_repo_dir(env, repo);
    if (!repo_dir) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    char commit[41] = "";
    vlr_status rc = VLR_OK;
    if (hub_is_commit(rev)) {
        memcpy(commit, rev, 41);
    } else {
        vlr_buf ref = {0};
        vlr_buf_printf(&ref, "%s/refs/%s", repo_dir, rev);
        char *text = NULL;
        size_t len = 0;
        vlr_err re;
        if (ref.oom) {
            rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        } else if (vlr_read_file(ref.data, 4096, &text, &len, &re) != VLR_OK) {
            rc = vlr_fail(e, VLR_ERR_IO, "%s@%s is not in the Hugging Face cache (no %s)", repo, rev, ref.data);
        } else {
            while (len && isspace((unsigned char)text[len - 1])) text[--len] = '\0';
            if (!hub_is_commit(text)) rc = vlr_fail(e, VLR_ERR_FORMAT, "%s does not hold a commit hash", ref.data);
            else memcpy(commit, text, 41);
        }
        free(text);
        vlr_buf_free(&ref);
    }
    if (rc == VLR_OK) {
        vlr_buf snap = {0};
        vlr_buf_printf(&snap, "%s/snapshots/%s", repo_dir, commit);
        if (snap.oom) rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        else if (!is_dir(snap.data))
            rc = vlr_fail(e, VLR_ERR_IO, "%s@%s is not in the Hugging Face cache (no %s)", repo, rev, snap.data);
        else *dir = snap.data, snap.data = NULL;
        vlr_buf_free(&snap);
    }
    free(repo_dir);
    return rc;
}

vlr_status hub_model_dir(const char *arg, char **dir, vlr_err *e) {
    *dir = NULL;
    const char *at = strchr(arg, '@');
    char *repo = at ? strndup(arg, (size_t)(at - arg)) : strdup(arg);
    if (!repo) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    vlr_err ignored;
    /* A directory always wins; so does anything that cannot be a repository id: the loader then says
     * which file it could not open, as it always did. */
    if (is_dir(arg) || !hub_repo_id_valid(repo, &ignored) || (at && !hub_revision_valid(at + 1, &ignored))) {
        free(repo);
        *dir = strdup(arg);
        return *dir ? VLR_OK : vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    }
    const char *rev = at ? at + 1 : "main";
    /* the cache only: no token, no endpoint, no request */
    hub_env env = {.cache_dir = cache_dir(NULL, e)};
    vlr_status rc = env.cache_dir ? VLR_OK : e->code;
    if (rc == VLR_OK) {
        vlr_err ce;
        if (hub_cached_snapshot(&env, repo, rev, dir, &ce) != VLR_OK) {
            vlr_buf pull = {0};
            vlr_buf_printf(&pull, "vlreward pull %s", repo);
            if (at) vlr_buf_printf(&pull, " --revision %s", rev);
            rc = vlr_fail(e, VLR_ERR_IO, "'%s' is not a directory, and %s; download it with `%s`", arg, ce.msg,
                          pull.oom ? "vlreward pull" : pull.data);
            vlr_buf_free(&pull);
        }
        hub_env_free(&env);
    }
    free(repo);
    return rc;
}
