/* examples/score.c: the library API in one page. Loads a model, scores one request given as JSON,
 * prints the reward.
 *
 *   build/example_score tests/reference/models/tiny-a \
 *       '{"image": "tests/reference/images/demo.jpg", "question": "Is Purple the highest value?", "answer": "No."}'
 */
#include <stdio.h>
#include <string.h>

#include "vlreward.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR REQUEST_JSON\n", argv[0]);
        return 2;
    }
    char err[1024];
    vlr_params params = vlr_default_params();
    vlr_model *model = NULL;
    if (vlr_model_load(argv[1], &params, &model, err, sizeof err) != VLR_OK) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], err);
        return 1;
    }
    vlr_session *session = NULL;
    int status = 1;
    if (vlr_session_init(model, &session) != VLR_OK) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    double score;
    if (vlr_score_json(session, argv[2], strlen(argv[2]), ".", &score) != VLR_OK) {
        fprintf(stderr, "cannot score: %s\n", vlr_session_errmsg(session));
        goto done;
    }
    printf("%.6f\n", score);
    status = 0;
done:
    vlr_session_free(session);
    vlr_model_free(model);
    return status;
}
