/* main.c: build/vlreward, the command-line front end. One subcommand per file (cmd_*.c); this file
 * only dispatches and prints the overview. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char overview[] =
    "vlreward " VLR_VERSION ": score (image, question, answer) conversations with Skywork-VL-Reward-7B\n"
    "\n"
    "usage: vlreward COMMAND [options]   (vlreward COMMAND --help for its options)\n"
    "\n"
    "commands:\n"
    "  info      print the architecture of a model directory\n"
    "  tokenize  encode (or --decode) text with the model's tokenizer, JSON Lines in and out\n"
    "  prepare   show the model inputs of requests: prompt, input_ids, image grids, pixel sums, positions\n"
    "  score     score requests (JSON Lines) or one --image/--question/--answer conversation\n"
    "  eval      accuracy on preference pairs: pairs, VL-RewardBench or RewardBench JSON Lines\n"
    "  bench     time the vision tower, the text prefill and a request at full 7B size (random weights)\n"
    "  serve     an HTTP server for RL training loops: POST /score, GET /health, GET /info\n"
    "  pull      download a model from the Hugging Face Hub into the cache (then --model ORG/NAME)\n"
    "\n"
    "exit status: 0 success, 1 model or input error, 2 usage error\n";

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(overview, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("vlreward %s\n", VLR_VERSION);
        return EXIT_OK;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "prepare") == 0) return cmd_prepare(argc - 1, argv + 1);
    if (strcmp(cmd, "score") == 0) return cmd_score(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "pull") == 0) return cmd_pull(argc - 1, argv + 1);
    fprintf(stderr, "vlreward: unknown command '%s'\n\n%s", cmd, overview);
    return EXIT_USAGE;
}
