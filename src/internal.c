/* internal.c: the accessors internal.h gives the CLI in place of vlr_model's fields. */
#include "model.h"

const vlr_params *vlr_model_params(const vlr_model *m) { return &m->params; }
const vlr_config *vlr_model_config(const vlr_model *m) { return &m->cfg; }
const vlr_tokenizer *vlr_model_tokenizer(const vlr_model *m) { return m->tokenizer; }
int vlr_model_max_tokens(const vlr_model *m) { return m->max_tokens; }
int vlr_model_n_threads(const vlr_model *m) { return m->n_threads; }
const char *vlr_model_template_warning(const vlr_model *m) { return m->template_warning; }
