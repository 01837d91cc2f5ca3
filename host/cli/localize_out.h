// localize_out.h — writing a `diffscope localize` run's folder (localize_out.c; formats in docs/localization.md).
#ifndef DS_LOCALIZE_OUT_H
#define DS_LOCALIZE_OUT_H

#include "localize.h"

typedef struct loc_out {
    const char* dir;              // the output folder (exists)
    const ds_loc_result* r;
    const ds_loc_params* p;
    const char* model;            // for the provenance: the model's path, or "(embedded default)"
    const char* arch;             // "SD1.x", ...
    const char* kind;             // "object" | "style"
    const char* detector;         // "shapes" or NULL
    ds_err e;                     // what failed
} loc_out;

// Writes every file the result has, each atomically; *n_files = how many. 0, or an error code with the
// message in o->e.
int loc_write_all(loc_out* o, int* n_files);
// The ranking metric's name: "detector drop", "image change" or "concept mass drop".
const char* loc_metric_name(const ds_loc_result* r);
// A score for people: "n/a" for NaN, 4 decimals, or %.2e for very small / large values.
void loc_fmt_value(double v, char* buf, size_t cap);

#endif
