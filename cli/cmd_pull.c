/* cmd_pull.c: `vlreward pull ORG/NAME [--revision REV] [--local-dir DIR] [--token T]`: downloads what
 * the engine reads from a Hugging Face model repository into the cache shared with huggingface_hub
 * (or plain files in DIR) and prints the folder. The protocol is in hub_download.c. */
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "hub.h"

#define PARALLEL_TRANSFERS 8 /* huggingface_hub's snapshot_download default */

static const char help[] =
    "usage: vlreward pull ORG/NAME [--revision REV] [--local-dir DIR] [--token T]\n"
    "\n"
    "Downloads the files vlreward reads from a Hugging Face model repository (config, preprocessor and\n"
    "tokenizer files, chat template, safetensors index, shards, value_head.safetensors; not *.bin, *.pt,\n"
    "ONNX or other formats) into the Hugging Face cache that `hf download`, transformers and vLLM share,\n"
    "and prints the snapshot folder. Afterwards every command takes --model ORG/NAME[@REV].\n"
    "  --revision REV   branch, tag or commit (default main)\n"
    "  --local-dir DIR  plain files in DIR instead of the cache (then use --model DIR)\n"
    "  --token T        access token (default: HF_TOKEN, else the token file of `hf auth login`)\n"
    "\n"
    "Gated repositories (Skywork/Skywork-VL-Reward-7B is one): accept the terms on the model page with\n"
    "your account, then set HF_TOKEN or run `hf auth login`.\n"
    "Interrupted downloads resume where they stopped; files of LFS (large files) are checked against\n"
    "their sha256 before they enter the cache; a second pull of the same revision downloads nothing.\n"
    "\n"
    "environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN, HF_HOME, HF_HUB_CACHE,\n"
    "  HF_HUB_OFFLINE=1 (no network: print the cached folder or fail), HF_HUB_DISABLE_PROGRESS_BARS=1\n";

/* What the engine reads, at the top of the repository: configs, tokenizer files, the chat template,
 * the safetensors index and weights. Other formats (*.bin, *.pt, *.onnx, *.gguf, *.h5, *.msgpack) and
 * subfolders are never downloaded. */
static bool wanted(const char *name) {
    static const char *suffixes[] = {".json", ".safetensors", ".jinja"};
    if (strchr(name, '/') || !hub_filename_valid(name)) return false;
    if (strcmp(name, "merges.txt") == 0) return true; /* with vocab.json: the tokenizer's other form */
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t k = strlen(suffixes[i]);
        if (n > k && strcmp(name + n - k, suffixes[i]) == 0) return true;
    }
    return false;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const hub_file *)a)->name, ((const hub_file *)b)->name);
}

/* Keeps the wanted files of info (in place, sorted, each name once); says what is missing when the
 * repository cannot be a checkpoint vlreward loads. */
static bool select_files(hub_repo_info *info, const char *repo, const char *rev) {
    size_t kept = 0;
    bool config = false, weights = false;
    qsort(info->files, info->n_files, sizeof *info->files, by_name);
    for (size_t i = 0; i < info->n_files; i++) {
        hub_file f = info->files[i];
        if (!wanted(f.name) || (kept && strcmp(info->files[kept - 1].name, f.name) == 0)) {
            free(f.name);
            continue;
        }
        config |= strcmp(f.name, "config.json") == 0;
        size_t n = strlen(f.name);
        weights |= n > 12 && strcmp(f.name + n - 12, ".safetensors") == 0;
        info->files[kept++] = f;
    }
    info->n_files = kept;
    if (!config || !weights) {
        fprintf(stderr, "vlreward pull: %s at %s has no %s: not a checkpoint vlreward can load (it reads "
                        "config.json and safetensors weights)\n", repo, rev, !config ? "config.json" : "*.safetensors");
        return false;
    }
    return true;
}

/* HF_HUB_OFFLINE: no request; the cached snapshot (or a filled --local-dir) or an error. */
static int pull_offline(const hub_env *env, const char *repo, const char *rev, const char *local_dir) {
    char *dir = NULL;
    vlr_err e;
    if (local_dir) {
        char *config = vlr_path_join(local_dir, "config.json");
        bool there = config && vlr_file_exists(config);
        free(config);
        if (!there) {
            fprintf(stderr, "vlreward pull: HF_HUB_OFFLINE is set and %s holds no config.json: nothing to use "
                            "without the network\n", local_dir);
            return EXIT_INPUT;
        }
        printf("%s\n", local_dir);
        return EXIT_OK;
    }
    if (hub_cached_snapshot(env, repo, rev, &dir, &e) != VLR_OK) {
        fprintf(stderr, "vlreward pull: HF_HUB_OFFLINE is set and %s\n", e.msg);
        return EXIT_INPUT;
    }
    fprintf(stderr, "vlreward pull: HF_HUB_OFFLINE is set: using the cached %s\n", dir);
    printf("%s\n", dir);
    free(dir);
    return EXIT_OK;
}

/* DIR/.cache/huggingface/ with its .gitignore, as huggingface_hub leaves it. */
static bool prepare_local_dir(const char *local_dir) {
    vlr_err e;
    char *meta = vlr_path_join(local_dir, ".cache/huggingface/download");
    bool ok = meta && hub_mkdirs(meta, &e) == VLR_OK;
    if (!ok) fprintf(stderr, "vlreward pull: %s\n", meta ? e.msg : "out of memory");
    free(meta);
    char *ignore = ok ? vlr_path_join(local_dir, ".cache/huggingface/.gitignore") : NULL;
    if (ignore && !vlr_file_exists(ignore)) {
        FILE *f = fopen(ignore, "w");
        if (f) {
            fputs("*", f);
            fclose(f);
        }
    }
    free(ignore);
    return ok;
}

static int pull(const hub_env *env, const char *repo, const char *rev, const char *local_dir) {
    hub_repo_info info;
    vlr_err e;
    double t0 = vlr_now();
    if (hub_api_revision(env, repo, rev, &info, &e) != VLR_OK) {
        fprintf(stderr, "vlreward pull: %s\n", e.msg);
        return EXIT_INPUT;
    }
    int rc = EXIT_INPUT;
    char *repo_dir = local_dir ? NULL : hub_repo_dir(env, repo);
    if (!select_files(&info, repo, rev)) goto done;
    if (!local_dir && !repo_dir) {
        fprintf(stderr, "vlreward pull: out of memory\n");
        goto done;
    }
    if (local_dir && !prepare_local_dir(local_dir)) goto done;
    hub_pull_plan plan = {.env = env, .repo = repo, .commit = info.commit, .repo_dir = repo_dir,
                          .local_dir = local_dir, .gated = info.gated, .parallel = PARALLEL_TRANSFERS,
                          .tty = isatty(STDERR_FILENO) && !env->no_bars,
                          .log = stderr};
    fprintf(stderr, "vlreward pull: %s at %s (commit %s): %zu files\n", repo, rev, info.commit, info.n_files);
    hub_pull_result res;
    if (hub_download(&plan, info.files, info.n_files, &res, &e) != VLR_OK) {
        fprintf(stderr, "vlreward pull: %s\n", e.msg);
        goto done;
    }
    /* the branch or tag now points at a complete snapshot */
    if (!local_dir && hub_write_ref(repo_dir, rev, info.commit, &e) != VLR_OK) {
        fprintf(stderr, "vlreward pull: %s\n", e.msg);
        goto done;
    }
    char bytes[32];
    hub_format_bytes(res.bytes_transferred, bytes, sizeof bytes);
    vlr_buf where = {0};
    if (local_dir) vlr_buf_puts(&where, local_dir);
    else vlr_buf_printf(&where, "%s/snapshots/%s", repo_dir, info.commit);
    fprintf(stderr, "vlreward pull: %zu downloaded (%s), %zu already there, in %.1f s\n", res.n_downloaded, bytes,
            res.n_cached, vlr_now() - t0);
    printf("%s\n", where.data ? where.data : "");
    vlr_buf_free(&where);
    rc = EXIT_OK;
done:
    free(repo_dir);
    hub_repo_info_free(&info);
    return rc;
}

int cmd_pull(int argc, char **argv) {
    cli_args a = {argc, 1, argv, "pull"};
    const char *repo = NULL, *rev = "main", *local_dir = NULL, *token = NULL;
    bool bad = false;
    while (a.i < argc && !bad) {
        const char *arg = argv[a.i];
        if (cli_is_help(arg)) return cli_print_help(help);
        if (cli_opt(&a, "--revision", true, &rev, &bad) || cli_opt(&a, "--local-dir", true, &local_dir, &bad) ||
            cli_opt(&a, "--token", true, &token, &bad))
            continue;
        if (arg[0] == '-' || repo) return cli_usage_error("pull", "unexpected argument '%s'", arg);
        repo = arg;
        a.i++;
    }
    if (bad) return EXIT_USAGE;
    if (!repo) return cli_usage_error("pull", "which repository? e.g. vlreward pull Skywork/Skywork-VL-Reward-7B");
    vlr_err e;
    if (!hub_repo_id_valid(repo, &e) || !hub_revision_valid(rev, &e)) return cli_usage_error("pull", "%s", e.msg);
    if (local_dir && !*local_dir) return cli_usage_error("pull", "--local-dir needs a folder");
    hub_env env;
    if (hub_env_load(&env, token, &e) != VLR_OK) {
        fprintf(stderr, "vlreward pull: %s\n", e.msg);
        return EXIT_INPUT;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = env.offline ? pull_offline(&env, repo, rev, local_dir) : pull(&env, repo, rev, local_dir);
    curl_global_cleanup();
    hub_env_free(&env);
    return rc;
}
