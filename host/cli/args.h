// args.h — table-driven flag parsing for the diffscope subcommands.
//
// Every flag is declared once (name, kind, destination, help, range); the same table drives
// parsing, validation (one clear message naming the flag and what was expected) and --help.
#ifndef DS_CLI_ARGS_H
#define DS_CLI_ARGS_H

#include <stdint.h>

typedef enum { ARG_STR, ARG_INT, ARG_U64, ARG_FLOAT, ARG_FLAG } arg_kind;

typedef struct arg_spec {
    const char* name;      // without the leading "--"
    arg_kind kind;
    void* dest;            // const char**, int*, uint64_t*, float*, int* (flag)
    const char* metavar;   // e.g. "N", "PATH"
    const char* help;
    double min, max;       // numeric range (ignored when min > max)
    int required;
} arg_spec;

typedef struct arg_command {
    const char* name;      // "generate"
    const char* summary;   // one line
    const char* usage;     // e.g. "--prompt TEXT --out FILE.png [options]"
    const arg_spec* specs;
    int n_specs;
} arg_command;

// Flags every command accepts (parsed by args_parse, listed by --help): --device cpu|cuda|auto and
// --precision fp32|fp16|bf16. NULL when not given.
extern const char* args_device;
extern const char* args_precision;

// Parses argv[0..argc) (the words after the subcommand). Returns 0 on success, 1 when --help was
// printed, -1 after printing an error to stderr.
int args_parse(const arg_command* cmd, int argc, char** argv);
void args_print_help(const arg_command* cmd);

#endif
