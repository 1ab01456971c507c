/* omp_defaults.c: libgomp spins only briefly (GOMP_SPINCOUNT=1000) in build/vlreward unless the user
 * chose a wait policy.
 *
 * Why: with OMP_WAIT_POLICY and GOMP_SPINCOUNT unset, a libgomp thread that runs out of work spins
 * 300,000 iterations (milliseconds) before it sleeps. On a host whose cores are also busy with other
 * processes (an RL trainer next to `vlreward serve`), those spinning threads take CPU time from the
 * threads that have the work. Measured on the shared 2-core AMD EPYC machine (issue "Run at the
 * machine's own speed", item 5), the 13 golden requests (`score --input tests/reference/cases.jsonl
 * --threads 2`), configurations interleaved, medians: with 2 busy loops beside it, 1.37 s with
 * libgomp's default, 0.81 s with OMP_WAIT_POLICY=passive, 0.76 s with GOMP_SPINCOUNT=1000 (with other
 * builds running as well: 4.7 s, 1.19 s, 1.32 s; 10000: 1.9 s). Idle, passive costs 2-4 % (every
 * wait becomes a futex sleep and wake-up) while 1000 spins (microseconds) keep the default's speed
 * (-1 % to +1 %); a 512-token prefill (`bench --layers 1 --tokens 512`) is the same under all three.
 *
 * How: libgomp reads its environment in its library constructor, before main, so a setenv in main
 * comes too late. A function in the executable's .preinit_array runs before every library
 * constructor, but also before glibc's own: there environ is still NULL, and glibc's initialisation
 * then points environ at the kernel's array again, so a setenv made there is lost (checked with
 * glibc 2.36). That array can be edited in place but not grown, so, when the environment names
 * neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT, this file
 *   - turns the entry of "_" (which the shell sets to the command's path; vlreward never reads it)
 *     into GOMP_SPINCOUNT=1000: no cost at all;
 *   - else (no "_": env -i, systemd, a container's exec-form entrypoint) re-executes the binary
 *     (/proc/self/exe, same argv) with GOMP_SPINCOUNT=1000 added, before any library constructor
 *     has run: one more load of the executable and its libraries (about 14 ms on the shared 2-core
 *     machine); nothing when that fails (no /proc: libgomp's default stays), and not done under
 *     valgrind, whose tool would not follow the exec.
 * A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins (OMP_WAIT_POLICY=passive or active, or
 * GOMP_SPINCOUNT=300000 for libgomp's default); every other OMP_* and GOMP_* setting passes through
 * untouched. The setting stays in the environment, so child processes inherit it.
 *
 * Linked into build/vlreward (the Makefile links every cli/ source) and into the test binaries; not
 * into libvlreward, whose host program owns its environment. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char vlr_omp_default[] = "GOMP_SPINCOUNT=1000";

static int has_prefix(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static void vlr_omp_defaults(int argc, char **argv, char **envp) {
    (void)argc;
    if (!argv || !argv[0] || !envp) return;
    size_t n = 0, underscore = SIZE_MAX;
    int valgrind = 0;
    for (; envp[n]; n++) {
        if (has_prefix(envp[n], "OMP_WAIT_POLICY=") || has_prefix(envp[n], "GOMP_SPINCOUNT=")) return;
        if (has_prefix(envp[n], "_=") && underscore == SIZE_MAX) underscore = n;
        if (has_prefix(envp[n], "LD_PRELOAD=") && strstr(envp[n], "vgpreload")) valgrind = 1;
    }
    if (underscore != SIZE_MAX) {
        envp[underscore] = vlr_omp_default;
        return;
    }
    if (valgrind) return;
    char **env = malloc((n + 2) * sizeof *env);
    if (!env) return;
    memcpy(env, envp, n * sizeof *env);
    env[n] = vlr_omp_default;
    env[n + 1] = NULL;
    execve("/proc/self/exe", argv, env);
    free(env); /* no /proc, or the exec was refused: run on with libgomp's default */
}

/* glibc calls the .preinit_array entries of the executable with (argc, argv, envp), first of all. */
__attribute__((used, section(".preinit_array"))) static void (*const vlr_omp_defaults_entry)(int, char **,
                                                                                            char **) =
    vlr_omp_defaults;
