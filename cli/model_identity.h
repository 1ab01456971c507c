/* model_identity.h: what an evaluation reports about the model it ran: the name people know it by
 * and its revision, so two summaries can be told apart. */
#ifndef VLR_CLI_MODEL_IDENTITY_H
#define VLR_CLI_MODEL_IDENTITY_H

#include <stdbool.h>

/* For a Hugging Face cache snapshot (.../models--ORG--NAME/snapshots/COMMIT, symlinks resolved):
 * "ORG/NAME" and the commit. For any other folder: its name and "fnv1a64:" + 16 hex digits, a
 * checksum of config.json and of the weights' index (model.safetensors.index.json, else the JSON
 * header of model.safetensors) and of value_head.safetensors' header: cheap (no weight bytes read)
 * and changed by any change of shapes, dtypes, offsets or configuration. Files that are missing are
 * left out of the checksum. *name and *revision are malloc'd; false on OOM. */
bool cli_model_identity(const char *dir, char **name, char **revision);

#endif
