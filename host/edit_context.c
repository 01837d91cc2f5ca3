// edit_context.c — in-context erase keys (`diffscope erase --context FILE`).
//
// UCE's default key is the concept's own token. A causal text encoder also writes the concept into
// every later position (the next words, EOS and the padding), and a UNet may read it from there: on
// the testbed model, swapping only the colour token of "a red circle on a white background" for
// "blue" leaves the circle red, while swapping the positions after it makes it blue (docs/verification.md).
// Erasing the token alone then cannot work. MACE's closed-form refinement (Lu et al., CVPR 2024)
// takes the keys from prompts that use the concept: every position from the concept on is mapped to
// the same prompt with the guide in the concept's place, and the same prompts with each preserved
// word in that place are kept. Everything stays W' = W₀ M, so the shared solve applies unchanged.
//
// Keys, for each context prompt S = prefix + concept + suffix (a = 1 + tokens(prefix), n_c concept
// tokens, n_g guide tokens, G = prefix + guide + suffix):
//   position q in [a, 77) of S  →  position of G:  a + n_g − 1 for the concept's own tokens (the
//   guide's last token, or the token before the concept for the empty guide); q − n_c + n_g after
//   them (the same word, shifted), clamped to 76;
//   preserve word x: X = prefix + x + suffix, positions [a, 77) map to themselves.
// A context line is a template with one "{}" (filled with each concept, its guide and each
// preserved word) or a plain prompt that names a concept as a whole word (case-insensitive). An
// article "a"/"an" right before the place agrees with the word put there.
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edit.h"

typedef struct ctx_list {
    int n, cap;
    char** text;
} ctx_list;

// Index of `text` in the list, added when new; -1 on out of memory.
static int ctx_add(ctx_list* l, const char* text) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->text[i], text) == 0) return i;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        char** nt = realloc(l->text, sizeof(char*) * (size_t)cap);
        if (!nt) return -1;
        l->text = nt;
        l->cap = cap;
    }
    if (!(l->text[l->n] = strdup(text))) return -1;
    return l->n++;
}

static void ctx_free(ctx_list* l) {
    for (int i = 0; i < l->n; i++) free(l->text[i]);
    free(l->text);
    memset(l, 0, sizeof *l);
}

static int is_word_char(char c) { return isalnum((unsigned char)c) || (c & 0x80); }

// Where `word` occurs in `line` as whole words (case-insensitive, ASCII): its offset, or -1.
static long find_word(const char* line, const char* word) {
    size_t lw = strlen(word), ll = strlen(line);
    if (lw == 0 || lw > ll) return -1;
    for (size_t i = 0; i + lw <= ll; i++) {
        if (strncasecmp(line + i, word, lw) != 0) continue;
        if (i > 0 && is_word_char(line[i - 1]) && is_word_char(word[0])) continue;
        if (is_word_char(line[i + lw]) && is_word_char(word[lw - 1])) continue;
        return (long)i;
    }
    return -1;
}

static char* join3(const char* a, size_t la, const char* b, const char* c) {
    size_t lb = strlen(b), lc = strlen(c);
    char* s = malloc(la + lb + lc + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

static int count_tokens(const ds_tokenizer* t, ds_err* e, const char* text, int32_t** ids, int* n) {
    *ids = NULL;
    *n = 0;
    return ds_tokenizer_encode(t, e, text, ids, n);
}

// The word's token span in prompt = prefix + word + suffix, prefix = prompt[0, pre_len): a = 1 +
// tokens(prefix), n = tokens(prefix + word) − tokens(prefix); checked against the whole prompt's tokens
// (a word glued to its neighbours would tokenize differently and has no span of its own).
static int word_span(const ds_tokenizer* t, ds_err* e, const char* prompt, size_t pre_len, const char* word,
                     int* a, int* n) {
    char* pre = join3(prompt, pre_len, "", "");
    char* pw = pre ? join3(prompt, pre_len, word, "") : NULL;
    if (!pre || !pw) { free(pre); free(pw); return ds_errf(e, DS_ERR_OOM, "out of memory"); }
    int32_t *ip = NULL, *iw = NULL, *ifull = NULL;
    int np = 0, nw = 0, nf = 0;
    int rc = count_tokens(t, e, pre, &ip, &np);
    if (!rc) rc = count_tokens(t, e, pw, &iw, &nw);
    if (!rc) rc = count_tokens(t, e, prompt, &ifull, &nf);
    if (!rc && (nw < np || nf < nw || memcmp(ifull, iw, sizeof(int32_t) * (size_t)nw) != 0 ||
                memcmp(iw, ip, sizeof(int32_t) * (size_t)np) != 0))
        rc = ds_errf(e, DS_ERR_ARG, "--context: in '%s', '%s' is not a word of its own (it tokenizes together with its neighbours)",
                     prompt, word);
    *a = 1 + np;
    *n = nw - np;
    free(pre); free(pw); free(ip); free(iw); free(ifull);
    return rc;
}

// line with [at, at + len) replaced by word: the prompt (malloc'd) and its prefix length. An article "a" /
// "an" right before the place agrees with what now follows it ("a {}" + "orange" → "an orange"; the empty
// word: with the next word of the line), so preserved words and guides read as the grammar would have them.
static char* with_word(const char* line, size_t at, size_t len, const char* word, size_t* pre_len) {
    const char* suffix = line + at + len;
    const char* next = word;
    if (!*next) {
        next = suffix;
        while (*next == ' ') next++;
    }
    size_t e = at;
    while (e > 0 && line[e - 1] == ' ') e--;
    size_t b = e;
    while (b > 0 && is_word_char(line[b - 1])) b--;
    int art = (e - b == 1 && (line[b] == 'a' || line[b] == 'A')) ||
              (e - b == 2 && (line[b] == 'a' || line[b] == 'A') && (line[b + 1] == 'n' || line[b + 1] == 'N'));
    char* s;
    if (art && *next && isalpha((unsigned char)*next)) {
        int vowel = strchr("aeiouAEIOU", *next) != NULL;
        char article[3] = {line[b], vowel ? 'n' : 0, 0};
        char* head = join3(line, b, article, line + e);  // ... + "a"/"an" + the spaces before the place
        if (!head) return NULL;
        size_t hl = b + strlen(article) + (at - e);
        head[hl] = 0;
        s = join3(head, hl, word, suffix);
        free(head);
        *pre_len = hl;
    } else {
        s = join3(line, at, word, suffix);
        *pre_len = at;
    }
    return s;
}

typedef struct ctx_pair {   // one erase prompt and its guide prompt, or one preserve prompt (guide = -1)
    int src, dst;           // rows in the prompt list
    int a, n_src, n_dst;    // first position, tokens of the concept / guide (or preserved word)
    int concept;            // index of the concept (erase) or the preserved word (preserve)
} ctx_pair;

int ds_uce_context_keys(ds_edit_model* em, ds_err* e, const ds_uce_params* p, ds_edit_keys* out) {
    const int D = em->m->text_cfg.hidden, L = DS_TOK_CONTEXT;
    const ds_tokenizer* tok = em->m->tok;
    ctx_list prompts = {0}, kept = {0};  // kept: preserve prompts already keyed (a template gives one per concept)
    ctx_pair* pairs = NULL;
    int n_pairs = 0, cap_pairs = 0, rc = DS_OK;
    for (int li = 0; !rc && li < p->n_contexts; li++) {
        const char* line = p->contexts[li];
        const char* ph = strstr(line, "{}");
        if (ph && strstr(ph + 2, "{}")) {
            rc = ds_errf(e, DS_ERR_ARG, "--context line %d '%s' has more than one {} (one place for the concept)", li + 1, line);
            break;
        }
        int used = 0;
        for (int c = 0; !rc && c < p->n_concepts; c++) {
            const char* concept = p->concepts[c];
            size_t at, len;
            if (ph) {
                at = (size_t)(ph - line);
                len = 2;
            } else {
                long f = find_word(line, concept);
                if (f < 0) continue;
                at = (size_t)f;
                len = strlen(concept);
            }
            used = 1;
            const char* guide = p->n_guides == 0 ? "" : p->guides[p->n_guides == 1 ? 0 : c];
            size_t ls = 0, ld = 0;
            char* src = with_word(line, at, len, concept, &ls);
            char* dst = with_word(line, at, len, guide, &ld);
            if (!src || !dst) rc = ds_errf(e, DS_ERR_OOM, "out of memory");
            int a = 0, nc = 0, ag = 0, ng = 0;
            if (!rc) rc = word_span(tok, e, src, ls, concept, &a, &nc);
            if (!rc && guide[0]) rc = word_span(tok, e, dst, ld, guide, &ag, &ng);
            if (!rc && nc < 1)
                rc = ds_errf(e, DS_ERR_ARG, "--context line %d: the concept '%s' has no tokens", li + 1, concept);
            if (!rc && n_pairs + 1 + p->n_preserve > cap_pairs) {
                int cap = 2 * (n_pairs + 1 + p->n_preserve) + 16;
                ctx_pair* np_ = realloc(pairs, sizeof(ctx_pair) * (size_t)cap);
                if (!np_) rc = ds_errf(e, DS_ERR_OOM, "out of memory");
                else { pairs = np_; cap_pairs = cap; }
            }
            if (!rc) {
                int is = ctx_add(&prompts, src), id = ctx_add(&prompts, dst);
                if (is < 0 || id < 0) rc = ds_errf(e, DS_ERR_OOM, "out of memory");
                else pairs[n_pairs++] = (ctx_pair){is, id, a, nc, ng, c};
            }
            for (int q = 0; !rc && q < p->n_preserve; q++) {
                size_t lk = 0;
                char* keep = with_word(line, at, len, p->preserve[q], &lk);
                int ak = 0, nk = 0;
                if (!keep) rc = ds_errf(e, DS_ERR_OOM, "out of memory");
                if (!rc) rc = word_span(tok, e, keep, lk, p->preserve[q], &ak, &nk);
                int before = kept.n, fresh = rc ? -1 : ctx_add(&kept, keep);
                int ik = fresh == before ? ctx_add(&prompts, keep) : 0;
                if (!rc && (fresh < 0 || ik < 0)) rc = ds_errf(e, DS_ERR_OOM, "out of memory");
                if (!rc && fresh == before) pairs[n_pairs++] = (ctx_pair){ik, -1, ak, nk, nk, q};
                free(keep);
            }
            free(src);
            free(dst);
        }
        if (!rc && !used) {
            char names[512];
            size_t k = 0;
            names[0] = 0;
            for (int c = 0; c < p->n_concepts && k < sizeof names; c++)
                k += (size_t)snprintf(names + k, sizeof names - k, "%s'%s'", c ? ", " : "", p->concepts[c]);
            rc = ds_errf(e, DS_ERR_ARG, "--context line %d '%s' names none of the concepts (%s) and has no {} to put one in",
                         li + 1, line, names);
        }
    }
    double* emb = NULL;
    if (!rc && prompts.n > 0) {
        emb = ds_malloc(e, sizeof(double) * (size_t)prompts.n * L * D, "context embeddings");
        if (!emb) rc = DS_ERR_OOM;
        if (!rc) rc = ds_edit_encode(em, e, (const char* const*)prompts.text, prompts.n, L, emb);
    }
    char label[600];
    for (int i = 0; !rc && i < n_pairs; i++) {
        const ctx_pair* pr = &pairs[i];
        const double* S = emb + (size_t)pr->src * L * D;
        if (pr->dst < 0) {
            snprintf(label, sizeof label, "preserve '%s' in '%s'", p->preserve[pr->concept], prompts.text[pr->src]);
            for (int q = pr->a; !rc && q < L; q++)
                rc = ds_edit_keys_add(out, e, S + (size_t)q * D, S + (size_t)q * D, p->preserve_scale, label);
            continue;
        }
        const double* G = emb + (size_t)pr->dst * L * D;
        snprintf(label, sizeof label, "erase '%s' in '%s' → '%s'", p->concepts[pr->concept], prompts.text[pr->src],
                 prompts.text[pr->dst]);
        for (int q = pr->a; !rc && q < L; q++) {
            int t = q < pr->a + pr->n_src ? pr->a + pr->n_dst - 1 : q - pr->n_src + pr->n_dst;
            if (t > L - 1) t = L - 1;
            rc = ds_edit_keys_add(out, e, S + (size_t)q * D, G + (size_t)t * D, p->erase_scale, label);
        }
    }
    free(emb);
    free(pairs);
    ctx_free(&prompts);
    ctx_free(&kept);
    return rc;
}
