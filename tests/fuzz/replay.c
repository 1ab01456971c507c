/* replay.c: runs a fuzz target's LLVMFuzzerTestOneInput over files and folders of inputs, without
 * libFuzzer, so that `make test` replays the committed corpora (tests/fuzz/corpus_<name>) with gcc, in
 * the plain build and under ASan/UBSan. Usage: replay_<name> PATH...; prints "replayed N inputs" and
 * exits 0, or stops at the first input it cannot read (exit 2). A target that crashes or trips a
 * sanitizer ends the process as it would under libFuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    uint8_t *data = NULL;
    size_t size = 0, cap = 0, n;
    uint8_t chunk[65536];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (size + n > cap) {
            cap = (size + n) * 2;
            uint8_t *grown = realloc(data, cap);
            if (!grown) {
                free(data);
                fclose(f);
                return -1;
            }
            data = grown;
        }
        memcpy(data + size, chunk, n);
        size += n;
    }
    const int err = ferror(f);
    fclose(f);
    if (!err) LLVMFuzzerTestOneInput(data ? data : (const uint8_t *)"", size); /* libFuzzer also passes empty inputs */
    free(data);
    return err ? -1 : 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    long replayed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: cannot stat\n", argv[i]);
            return 2;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) != 0) return fprintf(stderr, "replay: %s: cannot read\n", argv[i]), 2;
            replayed++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        char **names = NULL;
        size_t n = 0;
        for (struct dirent *e; d && (e = readdir(d));) {
            if (e->d_name[0] == '.') continue;
            char **grown = realloc(names, (n + 1) * sizeof *names);
            if (!grown || !(grown[n] = malloc(strlen(argv[i]) + strlen(e->d_name) + 2))) return 2;
            names = grown;
            sprintf(names[n++], "%s/%s", argv[i], e->d_name);
        }
        if (d) closedir(d);
        qsort(names, n, sizeof *names, by_name); /* a fixed order, for a reproducible report */
        for (size_t k = 0; k < n; k++) {
            if (replay_file(names[k]) != 0) return fprintf(stderr, "replay: %s: cannot read\n", names[k]), 2;
            replayed++;
            free(names[k]);
        }
        free(names);
    }
    printf("replayed %ld inputs\n", replayed);
    return 0;
}
