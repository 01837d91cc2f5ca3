// args.c — flag parsing (see args.h).
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char* kind_word(arg_kind k) {
    switch (k) {
    case ARG_INT: return "an integer";
    case ARG_U64: return "a non-negative integer";
    case ARG_FLOAT: return "a number";
    default: return "a value";
    }
}

static int set_value(const arg_command* cmd, const arg_spec* s, const char* v) {
    char* end = NULL;
    errno = 0;
    switch (s->kind) {
    case ARG_STR:
        *(const char**)s->dest = v;
        return 0;
    case ARG_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || (s->min <= s->max && (x < s->min || x > s->max))) break;
        *(int*)s->dest = (int)x;
        return 0;
    }
    case ARG_U64: {
        if (*v == '-') break;
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end) break;
        *(uint64_t*)s->dest = x;
        return 0;
    }
    case ARG_FLOAT: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) ||
            (s->min <= s->max && (x < s->min || x > s->max))) break;
        *(float*)s->dest = (float)x;
        return 0;
    }
    case ARG_FLAG:
        break;
    }
    if (s->min <= s->max)
        fprintf(stderr, "diffscope %s: --%s expects %s between %g and %g, got '%s'\n", cmd->name,
                s->name, kind_word(s->kind), s->min, s->max, v);
    else
        fprintf(stderr, "diffscope %s: --%s expects %s, got '%s'\n", cmd->name, s->name,
                kind_word(s->kind), v);
    return -1;
}

const char* args_device = NULL;
const char* args_precision = NULL;

static const arg_spec common_specs[] = {
    {"device", ARG_STR, &args_device, "cpu|cuda|auto",
     "where to compute (default auto: CUDA when a GPU is usable, else the CPU with a notice)", 1, 0, 0},
    {"precision", ARG_STR, &args_precision, "fp16|bf16|fp32",
     "storage type on the GPU (default fp16; accumulation is fp32; the CPU computes in fp32)", 1, 0, 0},
};
#define N_COMMON ((int)(sizeof common_specs / sizeof common_specs[0]))

static int check_common(const arg_command* cmd) {
    static const char* devs[] = {"cpu", "cuda", "auto"};
    static const char* precs[] = {"fp32", "fp16", "bf16"};
    int ok = !args_device;
    for (int i = 0; i < 3 && !ok; i++) ok = !strcmp(args_device, devs[i]);
    if (!ok) {
        fprintf(stderr, "diffscope %s: --device expects cpu, cuda or auto, got '%s'\n", cmd->name, args_device);
        return -1;
    }
    ok = !args_precision;
    for (int i = 0; i < 3 && !ok; i++) ok = !strcmp(args_precision, precs[i]);
    if (!ok) {
        fprintf(stderr, "diffscope %s: --precision expects fp32, fp16 or bf16, got '%s'\n", cmd->name,
                args_precision);
        return -1;
    }
    return 0;
}

int args_parse(const arg_command* cmd, int argc, char** argv) {
    char* seen = calloc((size_t)cmd->n_specs + 1, 1);
    int rc = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        const char* a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            args_print_help(cmd);
            free(seen);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "diffscope %s: unexpected argument '%s' (flags start with --; see diffscope %s --help)\n",
                    cmd->name, a, cmd->name);
            rc = -1;
            break;
        }
        const char* name = a + 2;
        const char* eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const arg_spec* s = NULL;
        int si = -1;
        for (int k = 0; k < cmd->n_specs; k++)
            if (strlen(cmd->specs[k].name) == nl && strncmp(cmd->specs[k].name, name, nl) == 0) { s = &cmd->specs[k]; si = k; }
        for (int k = 0; !s && k < N_COMMON; k++)
            if (strlen(common_specs[k].name) == nl && strncmp(common_specs[k].name, name, nl) == 0) {
                s = &common_specs[k];
                si = cmd->n_specs;  // the spare slot of `seen`: common flags are never required
            }
        if (!s) {
            fprintf(stderr, "diffscope %s: unknown flag '--%.*s' (see diffscope %s --help)\n", cmd->name, (int)nl, name, cmd->name);
            rc = -1;
            break;
        }
        seen[si] = 1;
        if (s->kind == ARG_FLAG) {
            if (eq) { fprintf(stderr, "diffscope %s: --%s takes no value\n", cmd->name, s->name); rc = -1; break; }
            *(int*)s->dest = 1;
            continue;
        }
        const char* v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) {
            fprintf(stderr, "diffscope %s: --%s needs a value (%s)\n", cmd->name, s->name, s->metavar ? s->metavar : "VALUE");
            rc = -1;
            break;
        }
        rc = set_value(cmd, s, v);
    }
    for (int k = 0; rc == 0 && k < cmd->n_specs; k++)
        if (cmd->specs[k].required && !seen[k]) {
            fprintf(stderr, "diffscope %s: --%s %s is required (see diffscope %s --help)\n", cmd->name,
                    cmd->specs[k].name, cmd->specs[k].metavar ? cmd->specs[k].metavar : "", cmd->name);
            rc = -1;
        }
    free(seen);
    if (rc == 0) rc = check_common(cmd);
    return rc;
}

void args_print_help(const arg_command* cmd) {
    printf("usage: diffscope %s %s\n\n%s\n\noptions:\n", cmd->name, cmd->usage, cmd->summary);
    for (int k = 0; k < cmd->n_specs; k++) {
        const arg_spec* s = &cmd->specs[k];
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", s->name, s->metavar ? " " : "", s->metavar ? s->metavar : "");
        printf("  %-24s %s%s\n", left, s->help, s->required ? " (required)" : "");
    }
    for (int k = 0; k < N_COMMON; k++) {
        char left[64];
        snprintf(left, sizeof left, "--%s %s", common_specs[k].name, common_specs[k].metavar);
        printf("  %-24s %s\n", left, common_specs[k].help);
    }
    printf("  %-24s %s\n", "--help", "show this help");
}
