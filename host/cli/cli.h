// cli.h — helpers shared by the subcommands.
#ifndef DS_CLI_H
#define DS_CLI_H

#include "diffscope/diffscope.h"

// The embedded default model's folder ($DIFFSCOPE_MODEL, next to the binary, or the source tree), or NULL.
const char* cli_default_model(void);
// Loads `path` (NULL: the default model) printing one clear message on failure; 0 on success.
int cli_load_model(ds_context* ctx, const char* path, int quiet, ds_model** m);
// Applies --device / --precision to ctx (else $DIFFSCOPE_DEVICE / $DIFFSCOPE_PRECISION, else auto);
// 0, or 2 after printing why the combination is refused.
int cli_set_device(ds_context* ctx);
// 1 if `path` can be created (its folder is writable and it is not a folder), else prints why.
int cli_check_writable_file(const char* cmd, const char* flag, const char* path);

// --guidance: the user's value, or (g < 0: not given) the model's recommended scale.
float cli_guidance(ds_context* ctx, const ds_model* m, float g);

// --sampler NAME: default|ddim|euler|euler_a|dpmpp_2m|pndm → *out; 0 if unknown.
int cli_parse_sampler(const char* s, ds_sampler* out);

// --timestep T for image-to-image: the first scheduler call whose timestep is <= T (the image is
// noised to that call's level). Prints an error naming the flag and returns nonzero on failure.
int cli_start_step_for_timestep(ds_context* ctx, const ds_model* m, ds_sampler sampler, int steps,
                                float t, const char* cmd, int* start_step);

#endif
