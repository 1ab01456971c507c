/* test_bench.c: the in-memory random model of `vlreward bench` (src/bench_model.h) and the command.
 *
 * Library: the built tensors have exactly the shapes and dtypes the loader binds for tiny-a's real
 * checkpoint, and at 7B size the parameter count of the published Qwen2.5-VL-7B-Instruct checkpoint;
 * values follow their distributions, are deterministic (seed, thread count, lazily filled embedding
 * rows, models cut to fewer layers); the vision tower and the decoder run on them with finite,
 * thread-independent results; the FLOP counts agree with the window layout of vision.c and the
 * tensors' sizes. Command: `bench --json` keys and values, grids against the reference's
 * image_grid_thw, --layers scaling, usage errors. The binary comes from $VLR_BUILD (default build/). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_flops.h"
#include "bench_model.h"
#include "quantize.h"
#include "json.h"
#include "kernels/exec.h"
#include "rope.h"
#include "test.h"
#include "test_cmd.h"
#include "text.h"
#include "vision.h"

#define MODEL "tests/reference/models/tiny-a"
#define MAX_TENSORS 512

static char bin[512], tmpdir[256];

/* Every tensor of a vlr_weights, in a fixed order. */
static size_t list_tensors(const vlr_weights *w, const vlr_config *c, const vlr_tensor **out) {
    size_t n = 0;
    const vlr_vision_weights *v = &w->vision;
    out[n++] = &v->patch_embed;
    for (int i = 0; i < c->vision.depth; i++) {
        const vlr_vision_block_weights *b = &v->blocks[i];
        const vlr_tensor *t[] = {&b->norm1, &b->qkv_w, &b->qkv_b, &b->proj_w, &b->proj_b, &b->norm2,
                                 &b->gate_w, &b->gate_b, &b->up_w, &b->up_b, &b->down_w, &b->down_b};
        for (size_t j = 0; j < 12; j++) out[n++] = t[j];
    }
    out[n++] = &v->merger_norm;
    out[n++] = &v->merger_fc1_w;
    out[n++] = &v->merger_fc1_b;
    out[n++] = &v->merger_fc2_w;
    out[n++] = &v->merger_fc2_b;
    const vlr_text_weights *tw = &w->text;
    out[n++] = &tw->embed;
    for (int i = 0; i < c->text.num_layers; i++) {
        const vlr_text_layer_weights *l = &tw->layers[i];
        const vlr_tensor *t[] = {&l->input_norm, &l->q_w, &l->q_b, &l->k_w, &l->k_b, &l->v_w, &l->v_b,
                                 &l->o_w, &l->post_norm, &l->gate_w, &l->up_w, &l->down_w};
        for (size_t j = 0; j < 12; j++) out[n++] = t[j];
    }
    out[n++] = &tw->final_norm;
    out[n++] = &tw->value_w;
    out[n++] = &tw->value_b;
    return n;
}

static size_t tensor_bytes(const vlr_tensor *t) { return (size_t)vlr_tensor_numel(t) * vlr_dtype_size(t->dtype); }

static bool same_data(const vlr_tensor *a, const vlr_tensor *b) {
    return tensor_bytes(a) == tensor_bytes(b) && memcmp(a->data, b->data, tensor_bytes(a)) == 0;
}

static void stats(const vlr_tensor *t, double *mean, double *std, double *lo, double *hi) {
    const size_t n = (size_t)vlr_tensor_numel(t);
    const uint16_t *d = t->data;
    double s = 0, s2 = 0;
    *lo = INFINITY, *hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        const double v = vlr_bf16_to_f32(d[i]);
        s += v, s2 += v * v;
        if (v < *lo) *lo = v;
        if (v > *hi) *hi = v;
    }
    *mean = s / n;
    *std = sqrt(s2 / n - *mean * *mean);
}

/* The bench model has the loader's tensors for tiny-a; values follow the documented distributions. */
static void test_shapes_and_values(const vlr_config *cfg, const vlr_bench_model *bm) {
    vlr_weights real;
    vlr_err e = {0};
    if (vlr_weights_load(MODEL, cfg, &real, &e) != VLR_OK) {
        CHECK(0, "load tiny-a: %s", e.msg);
        return;
    }
    static const vlr_tensor *a[MAX_TENSORS], *b[MAX_TENSORS];
    const size_t na = list_tensors(&real, cfg, a), nb = list_tensors(&bm->w, &bm->cfg, b);
    CHECK(na == nb, "tensor count %zu vs %zu", na, nb);
    size_t bad = 0;
    for (size_t i = 0; i < na && i < nb; i++) {
        bool same = a[i]->ndim == b[i]->ndim && b[i]->dtype == VLR_DT_BF16 && b[i]->data != NULL;
        for (int d = 0; same && d < a[i]->ndim; d++) same = a[i]->shape[d] == b[i]->shape[d];
        if (!same) bad++;
    }
    CHECK(bad == 0, "%zu tensors differ in shape from the loader's", bad);
    CHECK(real.parameters == bm->w.parameters, "parameters %llu vs loader %llu",
          (unsigned long long)bm->w.parameters, (unsigned long long)real.parameters);
    CHECK(strcmp(bm->w.dtype, "bf16") == 0 && bm->w.bytes == 2 * bm->w.parameters, "dtype/bytes");
    vlr_weights_free(&real);

    double mean, std, lo, hi;
    const vlr_text_layer_weights *l = &bm->w.text.layers[0];
    stats(&l->gate_w, &mean, &std, &lo, &hi); /* [160, 64]: std 1/8 */
    CHECK(fabs(std * 8.0 - 1.0) < 0.03 && fabs(mean) < 0.005, "gate_w mean %g std %g", mean, std);
    CHECK(hi <= sqrt(3.0) / 8.0 * 1.004 && lo >= -sqrt(3.0) / 8.0 * 1.004, "gate_w range %g..%g", lo, hi);
    stats(&l->down_w, &mean, &std, &lo, &hi); /* [64, 160]: std 1/sqrt(160) */
    CHECK(fabs(std * sqrt(160.0) - 1.0) < 0.03, "down_w std %g", std);
    stats(&bm->w.vision.patch_embed, &mean, &std, &lo, &hi); /* fan_in 1176 */
    CHECK(fabs(std * sqrt(1176.0) - 1.0) < 0.03, "patch_embed std %g", std);
    stats(&bm->w.text.embed, &mean, &std, &lo, &hi);
    CHECK(fabs(std / 0.02 - 1.0) < 0.01 && fabs(mean) < 1e-4, "embed std %g mean %g", std, mean);
    stats(&l->input_norm, &mean, &std, &lo, &hi);
    CHECK(lo >= 0.949 && hi <= 1.051 && fabs(mean - 1.0) < 0.02, "norm in 1 +- 0.05: %g..%g", lo, hi);
    stats(&bm->w.vision.blocks[0].qkv_b, &mean, &std, &lo, &hi);
    CHECK(std > 0.01 && std < 0.03, "bias std %g", std);
    CHECK(vlr_bf16_to_f32(((const uint16_t *)bm->w.text.value_b.data)[0]) == 0.0f, "value bias 0");
}

/* Same seed: same bits whatever the fill's thread count; another seed: other values; a model cut to
 * fewer layers holds the same first layers; lazily filled embedding rows equal the full fill's. */
static void test_determinism(const vlr_config *cfg, const vlr_bench_model *bm) {
    vlr_err e = {0};
    vlr_bench_model m2, m3, cut, lazy;
    static const vlr_tensor *a[MAX_TENSORS], *b[MAX_TENSORS];
    CHECK(vlr_bench_model_build(cfg, 7, true, 2, &m2, &e) == VLR_OK, "build 2 threads: %s", e.msg);
    const size_t n = list_tensors(&bm->w, cfg, a);
    list_tensors(&m2.w, cfg, b);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += !same_data(a[i], b[i]);
    CHECK(differ == 0, "%zu tensors differ between 1 and 2 fill threads", differ);
    vlr_bench_model_free(&m2);
    CHECK(m2.allocs == NULL && m2.w.text.layers == NULL, "free zeroes");
    vlr_bench_model_free(&m2); /* twice is fine */

    CHECK(vlr_bench_model_build(cfg, 8, true, 1, &m3, &e) == VLR_OK, "build seed 8");
    CHECK(!same_data(&bm->w.text.layers[0].gate_w, &m3.w.text.layers[0].gate_w), "another seed, other values");
    CHECK(!same_data(&bm->w.text.layers[0].gate_w, &bm->w.text.layers[1].gate_w), "layers differ");
    CHECK(!same_data(&bm->w.text.layers[0].gate_w, &bm->w.text.layers[0].up_w), "gate and up differ");
    vlr_bench_model_free(&m3);

    vlr_config c1 = *cfg;
    vlr_bench_config_cut(&c1, 1);
    CHECK(c1.text.num_layers == 1 && c1.vision.depth == 1 && c1.vision.n_fullatt == 0, "cut to 1");
    vlr_config c2 = *cfg;
    vlr_bench_config_cut(&c2, 2);
    CHECK(c2.vision.depth == 2 && c2.vision.n_fullatt == 1 && c2.vision.fullatt_block_indexes[0] == 1 &&
          c2.text.num_layers == 2, "cut to 2 keeps full-attention block 1");
    vlr_config c9 = *cfg;
    vlr_bench_config_cut(&c9, 9);
    CHECK(c9.vision.depth == 4 && c9.text.num_layers == 2 && c9.vision.n_fullatt == 2, "cut above depth: unchanged");
    CHECK(vlr_bench_model_build(&c1, 7, false, 1, &cut, &e) == VLR_OK, "build cut");
    CHECK(same_data(&cut.w.text.layers[0].down_w, &bm->w.text.layers[0].down_w) &&
          same_data(&cut.w.vision.blocks[0].qkv_w, &bm->w.vision.blocks[0].qkv_w) &&
          same_data(&cut.w.vision.merger_fc2_w, &bm->w.vision.merger_fc2_w),
          "a cut model's layers equal the whole model's");
    vlr_bench_model_free(&cut);

    CHECK(vlr_bench_model_build(cfg, 7, false, 1, &lazy, &e) == VLR_OK, "build lazy");
    const size_t D = (size_t)cfg->text.hidden_size;
    const uint16_t *full = bm->w.text.embed.data, *lz = lazy.w.text.embed.data;
    const int32_t ids[] = {5, 151000, -1, 999999999, 151935};
    vlr_bench_model_fill_embed_rows(&lazy, ids, 5);
    bool rows_ok = true, zero_ok = true;
    for (size_t i = 0; i < 5; i++)
        if (ids[i] >= 0 && ids[i] < cfg->text.vocab_size)
            rows_ok &= memcmp(full + (size_t)ids[i] * D, lz + (size_t)ids[i] * D, D * 2) == 0;
    for (size_t j = 0; j < D; j++) zero_ok &= lz[6 * D + j] == 0;
    CHECK(rows_ok, "lazily filled rows equal the full fill");
    CHECK(zero_ok, "rows not asked for stay zero");
    vlr_bench_model_free(&lazy);

    int32_t r1[64], r2[64];
    vlr_bench_random_ids(3, 64, 100, 7, r1);
    vlr_bench_random_ids(3, 64, 100, 7, r2);
    bool in_range = true;
    for (size_t i = 0; i < 64; i++) in_range &= r1[i] >= 0 && r1[i] < 100 && r1[i] != 7;
    CHECK(in_range && memcmp(r1, r2, sizeof r1) == 0, "random ids: deterministic, in range, avoid");
}

/* Count at 7B size: the published checkpoint has 8,292,166,656 parameters (its
 * model.safetensors.index.json: total_size 16,584,333,312 bf16 bytes), lm_head [152064, 3584]
 * included, which we do not build, and no value head [1, 3584] + [1], which we do. */
static void test_count(const vlr_config *cfg, const vlr_bench_model *bm) {
    vlr_config c7;
    vlr_config_qwen25vl_7b(&c7);
    uint64_t p, b, f;
    vlr_err e = {0};
    CHECK(vlr_bench_model_count(&c7, false, &p, &b, &f, &e) == VLR_OK, "count 7B: %s", e.msg);
    CHECK(p + 152064ull * 3584 - 3585 == 8292166656ull, "7B parameters %llu", (unsigned long long)p);
    CHECK(b == 2 * p && f == b - 2ull * 152064 * 3584, "7B bytes %llu filled %llu", (unsigned long long)b,
          (unsigned long long)f);
    CHECK(vlr_bench_model_count(cfg, true, &p, &b, &f, &e) == VLR_OK && p == bm->w.parameters && f == b,
          "tiny count matches the build");
    vlr_config broken = *cfg;
    broken.text.hidden_size = 0;
    vlr_bench_model m;
    CHECK(vlr_bench_model_build(&broken, 1, false, 1, &m, &e) == VLR_ERR_CONFIG, "zero hidden size refused");
}

/* FLOPs against the window layout vision.c uses and against the tensors' sizes. */
static void test_flops(const vlr_config *cfg, const vlr_bench_model *bm) {
    const vlr_grid_thw grids[] = {{1, 34, 46}, {1, 4, 6}, {1, 50, 72}, {2, 8, 8}, {1, 2, 2}};
    const vlr_vision_block_weights *b = &bm->w.vision.blocks[0];
    const double block_params = (double)(vlr_tensor_numel(&b->qkv_w) + vlr_tensor_numel(&b->proj_w) +
                                         vlr_tensor_numel(&b->gate_w) + vlr_tensor_numel(&b->up_w) +
                                         vlr_tensor_numel(&b->down_w));
    const double att = 2.0 * 2.0 * cfg->vision.head_dim * cfg->vision.num_heads;
    for (size_t gi = 0; gi < sizeof grids / sizeof grids[0]; gi++) {
        const vlr_grid_thw g = grids[gi];
        const size_t n_tok = vlr_vision_n_tokens(cfg, g);
        const double n = (double)g.t * g.h * g.w;
        int32_t *wi = calloc(n_tok, sizeof *wi), *cu = calloc(vlr_vision_max_windows(cfg, g) + 1, sizeof *cu);
        size_t n_win = 0;
        vlr_err e = {0};
        CHECK(vlr_vision_windows(cfg, g, wi, cu, &n_win, &e) == VLR_OK, "windows: %s", e.msg);
        double pairs = 0;
        for (size_t w = 0; w < n_win; w++) pairs += (double)(cu[w + 1] - cu[w]) * (cu[w + 1] - cu[w]);
        const double want_window = 2.0 * n * block_params + att * pairs;
        const double want_full = 2.0 * n * block_params + att * g.t * (double)g.h * g.w * g.h * g.w;
        CHECK_NEAR(vlr_bench_vision_block_flops(cfg, g, 0), want_window, 1e-9 * want_window, "window block flops");
        CHECK_NEAR(vlr_bench_vision_block_flops(cfg, g, 1), want_full, 1e-9 * want_full, "full block flops");
        const vlr_vision_weights *v = &bm->w.vision;
        const double fixed = 2.0 * n * vlr_tensor_numel(&v->patch_embed) +
                             2.0 * n_tok * (vlr_tensor_numel(&v->merger_fc1_w) + vlr_tensor_numel(&v->merger_fc2_w));
        CHECK_NEAR(vlr_bench_vision_fixed_flops(cfg, g), fixed, 1e-9 * fixed, "fixed vision flops");
        const double all = fixed + 2 * want_window + 2 * want_full; /* tiny-a: blocks 1 and 3 full */
        CHECK_NEAR(vlr_bench_vision_flops(cfg, g), all, 1e-9 * all, "vision flops");
        free(wi);
        free(cu);
    }
    double layer_params = 0;
    for (int i = 0; i < cfg->text.num_layers; i++) {
        const vlr_text_layer_weights *l = &bm->w.text.layers[i];
        layer_params += (double)(vlr_tensor_numel(&l->q_w) + vlr_tensor_numel(&l->k_w) + vlr_tensor_numel(&l->v_w) +
                                 vlr_tensor_numel(&l->o_w) + vlr_tensor_numel(&l->gate_w) +
                                 vlr_tensor_numel(&l->up_w) + vlr_tensor_numel(&l->down_w));
    }
    const double hd = cfg->text.head_dim, H = cfg->text.num_heads, L = cfg->text.num_layers;
    /* 5 new tokens after 3 cached: query i sees 3 + i + 1 keys: 4+5+6+7+8 = 30 pairs per head */
    const double want = 2.0 * 5 * layer_params + 2.0 * 2.0 * 30 * hd * H * L;
    CHECK_NEAR(vlr_bench_text_flops(cfg, 3, 5), want, 1e-9 * want, "text flops");
}

/* The vision tower and the decoder run on the random model in one precision: finite, O(1), and
 * bit-identical for 1 and 2 threads and across runs. */
static void test_forward(const vlr_bench_model *bm, vlr_precision precision) {
    const vlr_config *cfg = &bm->cfg;
    vlr_kernels k;
    vlr_kernels_select(&k, VLR_ISA_AUTO, precision);
    vlr_workspace *ws = vlr_workspace_new(0);
    const vlr_exec x[2] = {{.k = &k, .n_threads = 1, .ws = ws}, {.k = &k, .n_threads = 2, .ws = ws}};
    vlr_err e = {0};
    const vlr_grid_thw g = {1, 8, 12};
    const size_t n_patches = 96, patch_dim = 1176, D = (size_t)cfg->text.hidden_size;
    const size_t n_tok = vlr_vision_n_tokens(cfg, g);
    float *px = malloc(n_patches * patch_dim * sizeof(float));
    float *v1 = calloc(n_tok * D, sizeof(float)), *v2 = calloc(n_tok * D, sizeof(float));
    vlr_bench_fill_f32(px, n_patches * patch_dim, 1, 3, 0.0f, 1.0f, 1);
    CHECK(vlr_vision_forward(cfg, &bm->w.vision, &x[0], px, g, v1, &e) == VLR_OK, "vision: %s", e.msg);
    CHECK(vlr_vision_forward(cfg, &bm->w.vision, &x[1], px, g, v2, &e) == VLR_OK, "vision 2 threads");
    CHECK(memcmp(v1, v2, n_tok * D * sizeof(float)) == 0, "vision: same bits with 1 and 2 threads");
    double ss = 0;
    bool finite = true;
    for (size_t i = 0; i < n_tok * D; i++) finite &= isfinite(v1[i]), ss += (double)v1[i] * v1[i];
    const double rms = sqrt(ss / (double)(n_tok * D));
    CHECK(finite && rms > 0.05 && rms < 20, "vision output finite and O(1): rms %g", rms);

    /* a request: 5 text ids, vision_start, the image's pads, vision_end, 6 text ids */
    const size_t n = 13 + n_tok;
    int32_t *ids = calloc(n, sizeof *ids), *pos = calloc(3 * n, sizeof *pos);
    vlr_bench_random_ids(1, n, cfg->text.vocab_size, cfg->tokens.image_pad, ids);
    ids[5] = cfg->tokens.vision_start;
    for (size_t i = 0; i < n_tok; i++) ids[6 + i] = cfg->tokens.image_pad;
    ids[6 + n_tok] = cfg->tokens.vision_end;
    int64_t delta;
    CHECK(vlr_rope_positions(ids, n, cfg->tokens.image_pad, &g, 1, 2, pos, &delta, &e) == VLR_OK, "positions");
    float *emb = calloc(n * D, sizeof(float));
    CHECK(vlr_text_embed(cfg, &bm->w.text, ids, n, v1, n_tok, emb, &e) == VLR_OK, "embed: %s", e.msg);
    double s[2] = {NAN, NAN};
    float *h[2] = {calloc(D, sizeof(float)), calloc(D, sizeof(float))};
    for (int t = 0; t < 2; t++) {
        vlr_text_state *st = NULL;
        CHECK(vlr_text_state_init(cfg, &bm->w.text, &x[t], (int)n, 4, &st, &e) == VLR_OK, "state: %s", e.msg);
        if (!st) continue;
        CHECK(vlr_text_prefill(st, emb, pos, n, n, &s[t], &e) == VLR_OK, "prefill: %s", e.msg);
        memcpy(h[t], vlr_text_last_hidden(st), D * sizeof(float));
        vlr_text_state_free(st);
    }
    CHECK(isfinite(s[0]) && fabs(s[0]) < 100, "score finite: %g", s[0]);
    CHECK(s[0] == s[1] && memcmp(h[0], h[1], D * sizeof(float)) == 0, "text: same bits with 1 and 2 threads");
    free(h[0]);
    free(h[1]);
    free(emb);
    free(ids);
    free(pos);
    free(px);
    free(v1);
    free(v2);
    vlr_workspace_free(ws);
}

/* ---- the command --------------------------------------------------------------------------- */

/* The binary's stdout in *out, its stderr in tmpdir/stderr (read_stderr), its exit status returned. */
static int run(const char *cmd, char **out) {
    char err_path[300];
    snprintf(err_path, sizeof err_path, "%s/stderr", tmpdir);
    return test_run(cmd, err_path, out);
}

static char *read_stderr(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/stderr", tmpdir);
    return test_read_text(path);
}

static double num(const vlr_json *obj, const char *key) {
    const vlr_json *v = vlr_json_get(obj, key);
    return vlr_json_is(v, VLR_JSON_NUMBER) ? v->number : NAN;
}

static bool positive(double v) { return isfinite(v) && v > 0; }

/* image_grid_thw of a reference case in tests/reference/expected.jsonl (its first image). */
static bool expected_grid(const char *id, int grid[3]) {
    char *text;
    size_t len;
    vlr_err e;
    bool found = false;
    if (vlr_read_file("tests/reference/expected.jsonl", 1 << 26, &text, &len, &e)) return false;
    for (char *line = text; line && *line && !found;) {
        char *end = strchr(line, '\n');
        vlr_json_doc *d = vlr_json_parse(line, end ? (size_t)(end - line) : strlen(line), &e);
        const vlr_json *r = vlr_json_root(d), *jid = vlr_json_get(r, "id");
        if (vlr_json_is(jid, VLR_JSON_STRING) && strcmp(jid->str, id) == 0) {
            const vlr_json *g = vlr_json_at(vlr_json_get(r, "image_grid_thw"), 0);
            for (int i = 0; g && g->len == 3 && i < 3; i++) grid[i] = (int)g->items[i].number;
            found = g && g->len == 3;
        }
        vlr_json_free(d);
        line = end ? end + 1 : NULL;
    }
    free(text);
    return found;
}

static vlr_json_doc *run_json(const char *args, int *rc) {
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s bench --config " MODEL "/config.json --threads 1 --repeat 1 "
             "--calibration 64x128x96 --json %s", bin, args);
    *rc = run(cmd, &out);
    vlr_err e = {0};
    size_t len = strlen(out);
    vlr_json_doc *d = vlr_json_parse(out, len, &e);
    CHECK(d != NULL && len > 0 && out[len - 1] == '\n' && !strchr(out, '\n')[1], "one JSON object: %s (%s)", e.msg, out);
    free(out);
    return d;
}

static void test_cli_json(const vlr_config *cfg) {
    int rc;
    vlr_json_doc *d = run_json("--tokens 16,40", &rc);
    CHECK(rc == 0, "bench exit %d", rc);
    if (d) {
        const vlr_json *r = vlr_json_root(d);
        CHECK(num(r, "threads") == 1 && num(r, "layers") == 2 && num(r, "vision_blocks") == 4, "threads/layers");
        CHECK(vlr_json_get(r, "scaled_from_layers") == NULL, "not scaled without --layers");
        const vlr_json *cal = vlr_json_get(r, "calibration"), *kern = vlr_json_get(cal, "kernel");
        CHECK(positive(num(cal, "gflops")) && positive(num(cal, "ms")), "calibration rate");
        CHECK(vlr_json_is(kern, VLR_JSON_STRING) && strncmp(kern->str, "vlreward-", 9) == 0, "kernel name");
        const vlr_json *v = vlr_json_get(r, "vision"), *img = vlr_json_get(v, "image"), *rs = vlr_json_get(v, "resized");
        CHECK(vlr_json_is(img, VLR_JSON_STRING) && strcmp(img->str, "640x480") == 0, "vision image");
        /* qwen_vl_utils smart_resize(480, 640, 28): round-half-even of 17.14 and 22.86 -> 476 x 644 */
        CHECK(vlr_json_is(rs, VLR_JSON_STRING) && strcmp(rs->str, "644x476") == 0, "resized");
        CHECK(num(v, "patches") == 1564 && num(v, "tokens") == 391, "patches %g", num(v, "patches"));
        CHECK(positive(num(v, "ms")) && positive(num(v, "gflops")) && positive(num(v, "tokens_per_s")) &&
              positive(num(v, "vs_calibration")), "vision figures");
        const vlr_grid_thw g = {1, 34, 46};
        CHECK_NEAR(num(v, "gflop"), vlr_bench_vision_flops(cfg, g) * 1e-9, 6e-4, "vision gflop");
        const vlr_json *tp = vlr_json_get(r, "text_prefill");
        CHECK(vlr_json_is(tp, VLR_JSON_ARRAY) && tp->len == 2, "two prefill lengths");
        for (size_t i = 0; tp && i < tp->len && i < 2; i++) {
            const vlr_json *p = vlr_json_at(tp, i);
            CHECK(num(p, "tokens") == (i ? 40 : 16), "prefill tokens");
            CHECK(positive(num(p, "ms")) && positive(num(p, "tokens_per_s")) && positive(num(p, "gflops")),
                  "prefill figures %zu", i);
            const double tps = num(p, "tokens_per_s"), ms = num(p, "ms"); /* ms printed to 1e-3 */
            CHECK(tps * (ms - 6e-4) * 1e-3 <= num(p, "tokens") && num(p, "tokens") <= tps * (ms + 6e-4) * 1e-3,
                  "tokens/s = tokens / time: %g tokens/s, %g ms", tps, ms);
        }
        const vlr_json *req = vlr_json_get(r, "request");
        CHECK(positive(num(req, "ms")) && num(req, "tokens") == 591 && num(req, "text_tokens") == 200 &&
              num(req, "image_tokens") == 391, "request");
        CHECK(num(req, "ms") >= num(v, "ms") * 0.5, "a request costs about its vision tower at least");
        CHECK(positive(num(r, "peak_rss_bytes")), "peak rss");
    }
    vlr_json_free(d);

    /* --group: one group against separate requests, the exact field names of issue 12 */
    d = run_json("--tokens 8 --group 4", &rc);
    CHECK(rc == 0, "bench --group exit %d", rc);
    if (d) {
        const vlr_json *g = vlr_json_get(vlr_json_root(d), "group");
        const double group_ms = num(g, "group_ms"), separate_ms = num(g, "separate_ms");
        CHECK(num(g, "n") == 4 && positive(group_ms) && positive(separate_ms), "group object");
        /* 4 separate requests run the tower and the prompt 4 times; the group once */
        CHECK(separate_ms > 1.5 * group_ms, "a group is faster: %g ms vs %g ms separate", group_ms, separate_ms);
        CHECK_NEAR(num(g, "speedup"), separate_ms / group_ms, 2e-3 * separate_ms / group_ms, "speedup");
    }
    vlr_json_free(d);
    d = run_json("--tokens 8", &rc);
    CHECK(rc == 0 && d && vlr_json_get(vlr_json_root(d), "group") == NULL, "no group object without --group");
    vlr_json_free(d);

    /* --layers: figures scaled, grid of the reference's 30x20 image */
    int want[3];
    d = run_json("--layers 1 --tokens 8 --image-size 30x20", &rc);
    CHECK(rc == 0, "bench --layers exit %d", rc);
    if (d && expected_grid("tiny_upscale", want)) {
        const vlr_json *r = vlr_json_root(d), *g = vlr_json_get(vlr_json_get(r, "vision"), "grid");
        CHECK(num(r, "scaled_from_layers") == 1 && num(r, "layers") == 2 && num(r, "scaled_from_vision_blocks") == 1,
              "scaled from 1 layer");
        CHECK(g && g->len == 3 && vlr_json_at(g, 0)->number == want[0] && vlr_json_at(g, 1)->number == want[1] &&
              vlr_json_at(g, 2)->number == want[2], "30x20 grid as the reference's tiny_upscale");
        const vlr_json *p = vlr_json_at(vlr_json_get(r, "text_prefill"), 0);
        CHECK_NEAR(num(p, "gflop"), vlr_bench_text_flops(cfg, 0, 8) * 1e-9, 6e-4, "scaled prefill counts 2 layers");
    } else {
        CHECK(0, "tiny_upscale grid");
    }
    vlr_json_free(d);
    d = run_json("--tokens 4 --image-size 640x110", &rc);
    if (d && expected_grid("wide_rocket", want)) {
        const vlr_json *g = vlr_json_get(vlr_json_get(vlr_json_root(d), "vision"), "grid");
        CHECK(g && g->len == 3 && vlr_json_at(g, 1)->number == want[1] && vlr_json_at(g, 2)->number == want[2],
              "640x110 grid as the reference's wide_rocket");
    } else {
        CHECK(0, "wide_rocket grid");
    }
    vlr_json_free(d);
}

static void test_cli_text_and_usage(void) {
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s bench --config " MODEL "/config.json --threads 1 --repeat 1 "
             "--calibration 32x64x64 --tokens 16 --layers 1", bin);
    CHECK(run(cmd, &out) == 0 && strstr(out, "calibration GEMM 32x64x64") && strstr(out, "text prefill 16") &&
          strstr(out, "scaled from 1 of 2 decoder layers"), "table output: %s", out);
    free(out);
    /* several precisions on one model: int8 moved last, a repeat dropped, one table each, then ratios */
    snprintf(cmd, sizeof cmd, "%s bench --config " MODEL "/config.json --threads 1 --repeat 1 "
             "--calibration 32x64x64 --tokens 16 --layers 1 --precision int8,f32,int8,bf16", bin);
    CHECK(run(cmd, &out) == 0, "bench with three precisions: %s", out);
    const char *f32 = strstr(out, "precision f32 ("), *bf16 = strstr(out, "precision bf16 ("),
               *int8 = strstr(out, "precision int8 (");
    CHECK(f32 && bf16 && int8 && f32 < bf16 && bf16 < int8 && !strstr(int8 + 1, "precision int8 (") &&
          strstr(out, "calibration GEMM 32x64x64 int8") && strstr(out, "int8 quantization") &&
          strstr(out, "bf16 / f32, tokens/s: calibration x") && strstr(out, "int8 / f32, tokens/s: calibration x"),
          "three precisions in order f32, bf16, int8, then the ratios: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s bench --help", bin);
    CHECK(run(cmd, &out) == 0 && strstr(out, "usage: vlreward bench") && strstr(out, "2*m*n*k"), "--help");
    free(out);
    const char *bad[] = {"--tokens 0", "--tokens 16,,x", "--precision fp16", "--precision bf16,", "--precision ,",
                         "--image-size 640", "--repeat 0", "--layers 0", "--bogus", "--calibration 1x2", "--tokens",
                         "--group 1", "--group x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* the tiny shapes first: an argument wrongly accepted must not start a 15 GB run */
        snprintf(cmd, sizeof cmd, "%s bench --config " MODEL "/config.json --calibration 32x64x64 --tokens 16 %s", bin,
                 bad[i]);
        CHECK(run(cmd, &out) == 2, "'%s' is a usage error", bad[i]);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "%s bench --config %s/nope.json", bin, tmpdir);
    int rc = run(cmd, &out);
    char *err = read_stderr();
    CHECK(rc == 1 && strstr(err, "nope.json"), "missing config: exit %d, '%s'", rc, err);
    free(err);
    free(out);
}

int main(void) {
    vlr_config cfg;
    vlr_err e = {0};
    if (vlr_config_load(MODEL, &cfg, &e) != VLR_OK) {
        CHECK(0, "config: %s", e.msg);
        return test_report();
    }
    vlr_bench_model bm;
    if (vlr_bench_model_build(&cfg, 7, true, 1, &bm, &e) != VLR_OK) {
        CHECK(0, "build: %s", e.msg);
        return test_report();
    }
    TEST_RUN_WITH(test_shapes_and_values, &cfg, &bm);
    TEST_RUN_WITH(test_determinism, &cfg, &bm);
    TEST_RUN_WITH(test_count, &cfg, &bm);
    TEST_RUN_WITH(test_flops, &cfg, &bm);
    TEST_RUN_WITH(test_forward, &bm, VLR_PRECISION_F32);
    TEST_RUN_WITH(test_forward, &bm, VLR_PRECISION_BF16);
    /* int8 last: its weights are quantized into the model (the bf16 values stay: no release) */
    CHECK(vlr_weights_quantize_int8(&bm.w, &bm.cfg, 2, false, &e) == VLR_OK && bm.w.n_qweights > 0, "int8: %s", e.msg);
    TEST_RUN_WITH(test_forward, &bm, VLR_PRECISION_INT8);
    vlr_bench_model_free(&bm);

    const char *build = getenv("VLR_BUILD");
    snprintf(bin, sizeof bin, "%s/vlreward", build && *build ? build : "build");
    if (access(bin, X_OK) != 0) {
        CHECK(0, "%s not built", bin);
        return test_report();
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vlr_bench_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp");
        return test_report();
    }
    TEST_RUN_WITH(test_cli_json, &cfg);
    TEST_RUN(test_cli_text_and_usage);
    char cmd[300], *out;
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    run(cmd, &out);
    free(out);
    return test_report();
}
