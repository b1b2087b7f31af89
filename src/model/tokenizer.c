/* BPE tokenizers matching Hugging Face `tokenizers` (see tokenizer.h).
 *
 * The pieces follow tokenizers' own pipeline, in its order:
 *   added-token split -> normalizer -> pre-tokenizer -> BPE model
 *   -> post-processor template,
 * and for decode: ids -> token strings -> decoder chain.
 * Where this file mirrors a particular function of tokenizers (the merge
 * loop, the regexes, the decoders) the comment names it, so a difference
 * can be checked against the source. */
#include "model/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "model/json.h"
#include "model/utf8.h"
#include "model/unicode_tables.h"

#define MAX_VOCAB (1 << 22)
#define MAX_MERGES (1 << 23)
#define MAX_TOKEN_BYTES 65536
#define MAX_OPS 8
#define MAX_TEMPLATE 8

/* ---- small containers ---------------------------------------------------- */

typedef struct tstr {
  char *s; /* NUL-terminated; NULL for an id without a token */
  uint32_t len;
} tstr;

static uint64_t fnv(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

/* string -> id, open addressing over the tokens array (keys not copied). */
typedef struct strmap {
  int32_t *slots; /* id + 1, 0 = empty */
  size_t cap;
  const tstr *tokens;
} strmap;

static int strmap_init(strmap *m, size_t n, const tstr *tokens) {
  m->cap = 16;
  while (m->cap < n * 2) m->cap *= 2;
  m->slots = calloc(m->cap, sizeof *m->slots);
  m->tokens = tokens;
  return m->slots ? 0 : -1;
}

static int32_t strmap_get(const strmap *m, const char *s, size_t n) {
  if (!m->slots) return -1;
  size_t h = (size_t)fnv(s, n) & (m->cap - 1);
  while (m->slots[h]) {
    const tstr *t = &m->tokens[m->slots[h] - 1];
    if (t->len == n && !memcmp(t->s, s, n)) return m->slots[h] - 1;
    h = (h + 1) & (m->cap - 1);
  }
  return -1;
}

/* Inserts id under its token string; returns the id already there, or -1. */
static int32_t strmap_put(strmap *m, int32_t id) {
  const tstr *k = &m->tokens[id];
  size_t h = (size_t)fnv(k->s, k->len) & (m->cap - 1);
  while (m->slots[h]) {
    const tstr *t = &m->tokens[m->slots[h] - 1];
    if (t->len == k->len && !memcmp(t->s, k->s, k->len)) return m->slots[h] - 1;
    h = (h + 1) & (m->cap - 1);
  }
  m->slots[h] = id + 1;
  return -1;
}

/* (left id, right id) -> (rank, merged id). */
typedef struct pair_entry {
  uint64_t key; /* (left+1) << 32 | (right+1); 0 = empty */
  int32_t rank, id;
} pair_entry;

typedef struct pairmap {
  pair_entry *e;
  size_t cap;
} pairmap;

static uint64_t pair_key(int32_t a, int32_t b) {
  return ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
}

static size_t pair_hash(uint64_t k, size_t cap) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return (size_t)k & (cap - 1);
}

static int pairmap_init(pairmap *m, size_t n) {
  m->cap = 16;
  while (m->cap < n * 2) m->cap *= 2;
  m->e = calloc(m->cap, sizeof *m->e);
  return m->e ? 0 : -1;
}

static const pair_entry *pairmap_get(const pairmap *m, int32_t a, int32_t b) {
  if (!m->e) return NULL;
  uint64_t k = pair_key(a, b);
  size_t h = pair_hash(k, m->cap);
  while (m->e[h].key) {
    if (m->e[h].key == k) return &m->e[h];
    h = (h + 1) & (m->cap - 1);
  }
  return NULL;
}

/* Sets the entry for a pair, replacing an earlier one (see add_merge). */
static void pairmap_put(pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
  uint64_t k = pair_key(a, b);
  size_t h = pair_hash(k, m->cap);
  while (m->e[h].key && m->e[h].key != k) h = (h + 1) & (m->cap - 1);
  m->e[h].key = k;
  m->e[h].rank = rank;
  m->e[h].id = id;
}

/* A growable byte buffer and int buffer. */
typedef struct buf {
  char *p;
  size_t n, cap;
} buf;

static int buf_reserve(buf *b, size_t extra) {
  if (b->cap - b->n > extra) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap - b->n <= extra) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int buf_add(buf *b, const void *s, size_t n) {
  if (buf_reserve(b, n)) return -1;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
  return 0;
}

typedef struct ibuf {
  int32_t *p;
  size_t n, cap;
} ibuf;

static int ibuf_add(ibuf *b, int32_t v) {
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    int32_t *p = realloc(b->p, cap * sizeof *p);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
  }
  b->p[b->n++] = v;
  return 0;
}

/* ---- UTF-8 and Unicode classes ------------------------------------------- */

/* Decodes one code point of valid UTF-8; returns its length. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned c = s[0];
  if (c < 0x80 || n < 2) { *cp = c; return 1; }
  if (c < 0xE0) { *cp = ((c & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
  if (c < 0xF0 || n < 4) {
    *cp = ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    return 3;
  }
  *cp = ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
  return 4;
}

static int utf8_check(const char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t l = km_utf8_len((const unsigned char *)s + i, n - i);
    if (!l) return -1;
    i += l;
  }
  return 0;
}

/* Appends s with invalid sequences replaced by U+FFFD, one per maximal
 * invalid subpart, as Rust's String::from_utf8_lossy does. */
static int utf8_lossy(buf *out, const unsigned char *s, size_t n) {
  static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
  for (size_t i = 0; i < n;) {
    size_t fit;
    const size_t l = km_utf8_scan(s + i, n - i, &fit);
    if (l && fit == l) {
      if (buf_add(out, s + i, l)) return -1;
    } else if (buf_add(out, fffd, 3)) {
      return -1;
    }
    i += fit;
  }
  return 0;
}

enum { CL_OTHER = 0, CL_LETTER = 1, CL_NUMBER = 2 };

static int uclass(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CL_LETTER;
    if (cp >= '0' && cp <= '9') return CL_NUMBER;
    return CL_OTHER;
  }
  size_t lo = 0, hi = km_unicode_n_ranges;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < km_unicode_ranges[mid][0]) hi = mid;
    else if (cp > km_unicode_ranges[mid][1]) lo = mid + 1;
    else return (int)km_unicode_ranges[mid][2];
  }
  return CL_OTHER;
}

/* Unicode White_Space: Oniguruma's \s and Rust's char::is_whitespace. */
static int is_space(uint32_t cp) {
  return (cp >= 9 && cp <= 13) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

/* ---- the tokenizer ------------------------------------------------------- */

enum { PRE_NONE = 0, PRE_GPT2, PRE_LLAMA3 };
enum { PREPEND_NEVER = 0, PREPEND_FIRST, PREPEND_ALWAYS };
enum { NORM_PREPEND = 1, NORM_REPLACE };
enum { DEC_BYTELEVEL = 1, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE };
enum { F_ADDED = 1, F_SPECIAL = 2 };

typedef struct op {
  int kind;
  char *a, *b; /* NORM_PREPEND: a; REPLACE: a -> b; STRIP: a = content char */
  size_t alen, blen;
  int start, stop; /* STRIP; METASPACE: start = prepend scheme */
} op;

typedef struct added_tok {
  int32_t id;
  bool special, lstrip, rstrip, single_word;
} added_tok;

struct km_tokenizer {
  int32_t n_ids;
  tstr *tokens;  /* by id */
  uint8_t *flags;
  strmap vocab;  /* model vocabulary */
  pairmap merges;
  int32_t n_added;
  added_tok *added;
  uint8_t added_first[32]; /* bitmap of the first bytes of added tokens */
  int32_t unk_id; /* -1 if none */
  bool byte_fallback, fuse_unk, ignore_merges;
  int n_norm;
  op norm[MAX_OPS];
  int pre;             /* regex split */
  bool byte_level;     /* map bytes to GPT-2's alphabet */
  bool add_prefix_space;
  bool metaspace;
  char meta_repl[8];
  size_t meta_repl_len;
  int meta_prepend;
  bool meta_split;
  int n_prefix, n_suffix;
  int32_t prefix[MAX_TEMPLATE], suffix[MAX_TEMPLATE];
  int n_dec;
  op dec[MAX_OPS];
  uint32_t byte_to_cp[256];
  int16_t cp_to_byte[324]; /* -1 if not a byte char */
};

/* GPT-2's bytes_to_unicode. */
static void init_byte_map(km_tokenizer *t) {
  int n = 0;
  for (int i = 0; i < 324; i++) t->cp_to_byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    t->byte_to_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    t->cp_to_byte[t->byte_to_cp[b]] = (int16_t)b;
  }
}

static void free_ops(op *o, int n) {
  for (int i = 0; i < n; i++) {
    free(o[i].a);
    free(o[i].b);
  }
}

void km_tokenizer_free(km_tokenizer *t) {
  if (!t) return;
  for (int32_t i = 0; i < t->n_ids; i++) free(t->tokens[i].s);
  free(t->tokens);
  free(t->flags);
  free(t->vocab.slots);
  free(t->merges.e);
  free(t->added);
  free_ops(t->norm, t->n_norm);
  free_ops(t->dec, t->n_dec);
  free(t);
}

int32_t km_tokenizer_vocab_size(const km_tokenizer *t) { return t->n_ids; }

const char *km_tokenizer_token(const km_tokenizer *t, int32_t id, size_t *len) {
  if (id < 0 || id >= t->n_ids || !t->tokens[id].s) return NULL;
  if (len) *len = t->tokens[id].len;
  return t->tokens[id].s;
}

int32_t km_tokenizer_find(const km_tokenizer *t, const char *s, size_t len) {
  int32_t id = strmap_get(&t->vocab, s, len);
  if (id >= 0) return id;
  for (int32_t i = 0; i < t->n_added; i++) {
    const tstr *k = &t->tokens[t->added[i].id];
    if (k->len == len && !memcmp(k->s, s, len)) return t->added[i].id;
  }
  return -1;
}

bool km_tokenizer_is_special(const km_tokenizer *t, int32_t id) {
  return id >= 0 && id < t->n_ids && (t->flags[id] & F_SPECIAL);
}

bool km_tokenizer_strips_first_space(const km_tokenizer *t) {
  for (int i = 0; i < t->n_dec; i++)
    if ((t->dec[i].kind == DEC_STRIP && t->dec[i].start > 0) ||
        (t->dec[i].kind == DEC_METASPACE && t->dec[i].start != PREPEND_NEVER))
      return true;
  return false;
}

/* ---- pre-tokenizer regexes ----------------------------------------------- */

typedef struct span {
  size_t a, b;
} span;

static size_t cp_at(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
  if (i >= n) { *cp = 0xFFFFFFFF; return 0; }
  return utf8_next(s + i, n - i, cp);
}

static bool is_other(uint32_t cp) { return !is_space(cp) && uclass(cp) == CL_OTHER; }

/* 's|'t|'re|'ve|'m|'ll|'d, case-insensitive for Llama 3 ((?i:...)); with
 * Unicode simple case folding, 's' also matches U+017F (long s). */
static size_t match_contraction(const unsigned char *s, size_t n, size_t i, bool icase) {
  if (s[i] != '\'') return 0;
  static const char *const alts[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  for (int k = 0; k < 7; k++) {
    size_t j = i + 1;
    const char *a = alts[k];
    bool ok = true;
    for (; *a; a++) {
      uint32_t cp;
      size_t l = cp_at(s, n, j, &cp);
      if (!l) { ok = false; break; }
      bool m = cp == (uint32_t)*a ||
               (icase && (cp == (uint32_t)(*a - 32) || (*a == 's' && cp == 0x17F)));
      if (!m) { ok = false; break; }
      j += l;
    }
    if (ok) return j;
  }
  return 0;
}

/* End of the whitespace run starting at i. */
static size_t space_run(const unsigned char *s, size_t n, size_t i) {
  uint32_t cp;
  size_t l;
  while ((l = cp_at(s, n, i, &cp)) && is_space(cp)) i += l;
  return i;
}

/* \s*[\r\n]+ | \s+(?!\S) | \s+ at i (s[i] is whitespace); returns the end. */
static size_t match_spaces(const unsigned char *s, size_t n, size_t i, bool newline_alt) {
  size_t j = space_run(s, n, i);
  if (newline_alt) {
    size_t last_nl = 0;
    bool any = false;
    for (size_t k = i; k < j; k++)
      if (s[k] == '\r' || s[k] == '\n') { last_nl = k; any = true; }
    if (any) return last_nl + 1;
  }
  if (j == n) return j;
  /* \s+(?!\S): give back the last whitespace char if that leaves one. */
  size_t last = j - 1;
  while (last > i && (s[last] & 0xC0) == 0x80) last--;
  if (last > i) return last;
  return j; /* \s+ */
}

/* One match of the GPT-4 / Llama 3 pattern at i:
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const unsigned char *s, size_t n, size_t i) {
  size_t e = match_contraction(s, n, i, true);
  if (e) return e;
  uint32_t c0, c1;
  size_t l0 = cp_at(s, n, i, &c0);
  int k0 = uclass(c0);
  /* [^\r\n\p{L}\p{N}]?\p{L}+ */
  size_t j = i;
  if (c0 != '\r' && c0 != '\n' && k0 == CL_OTHER) {
    size_t l1 = cp_at(s, n, i + l0, &c1);
    if (l1 && uclass(c1) == CL_LETTER) j = i + l0;
  }
  {
    uint32_t c;
    size_t l, k = j;
    while ((l = cp_at(s, n, k, &c)) && uclass(c) == CL_LETTER) k += l;
    if (k > j) return k;
  }
  /* \p{N}{1,3} */
  if (k0 == CL_NUMBER) {
    size_t k = i;
    uint32_t c;
    size_t l;
    for (int r = 0; r < 3 && (l = cp_at(s, n, k, &c)) && uclass(c) == CL_NUMBER; r++) k += l;
    return k;
  }
  /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
  j = i + (c0 == ' ' ? 1 : 0);
  {
    uint32_t c;
    size_t l, k = j;
    while ((l = cp_at(s, n, k, &c)) && is_other(c)) k += l;
    if (k > j) {
      while (k < n && (s[k] == '\r' || s[k] == '\n')) k++;
      return k;
    }
  }
  if (is_space(c0)) return match_spaces(s, n, i, true);
  return i + l0; /* not reached: every code point is covered above */
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const unsigned char *s, size_t n, size_t i) {
  size_t e = match_contraction(s, n, i, false);
  if (e) return e;
  uint32_t c0, c;
  size_t l0 = cp_at(s, n, i, &c0), l;
  size_t j = i + (c0 == ' ' ? 1 : 0);
  size_t lj = cp_at(s, n, j, &c);
  if (lj) {
    int kj = is_space(c) ? -1 : uclass(c);
    if (kj >= 0) {
      size_t k = j;
      while ((l = cp_at(s, n, k, &c)) && !is_space(c) && uclass(c) == kj) k += l;
      return k;
    }
  }
  if (is_space(c0)) return match_spaces(s, n, i, false);
  return i + l0;
}

/* ---- BPE (tokenizers models/bpe/word.rs merge_all) ----------------------- */

typedef struct sym {
  int32_t id;
  int32_t prev, next; /* indices, -1 at the ends */
  uint32_t len;       /* bytes; 0 once merged away */
} sym;

typedef struct heap_item {
  int32_t rank, pos, id;
} heap_item;

typedef struct scratch {
  sym *syms;
  size_t syms_cap;
  heap_item *heap;
  size_t heap_n, heap_cap;
  buf piece; /* byte-level mapped text */
  buf norm;  /* normalized segment */
} scratch;

static bool heap_less(const heap_item *a, const heap_item *b) {
  return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(scratch *w, heap_item it) {
  if (w->heap_n == w->heap_cap) {
    size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
    heap_item *h = realloc(w->heap, cap * sizeof *h);
    if (!h) return -1;
    w->heap = h;
    w->heap_cap = cap;
  }
  size_t i = w->heap_n++;
  w->heap[i] = it;
  while (i && heap_less(&w->heap[i], &w->heap[(i - 1) / 2])) {
    heap_item t = w->heap[i];
    w->heap[i] = w->heap[(i - 1) / 2];
    w->heap[(i - 1) / 2] = t;
    i = (i - 1) / 2;
  }
  return 0;
}

static heap_item heap_pop(scratch *w) {
  heap_item top = w->heap[0];
  w->heap[0] = w->heap[--w->heap_n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < w->heap_n && heap_less(&w->heap[l], &w->heap[m])) m = l;
    if (r < w->heap_n && heap_less(&w->heap[r], &w->heap[m])) m = r;
    if (m == i) break;
    heap_item t = w->heap[i];
    w->heap[i] = w->heap[m];
    w->heap[m] = t;
    i = m;
  }
  return top;
}

static int add_sym(scratch *w, size_t *n, int32_t id, uint32_t len) {
  if (*n == w->syms_cap) {
    size_t cap = w->syms_cap ? w->syms_cap * 2 : 64;
    sym *s = realloc(w->syms, cap * sizeof *s);
    if (!s) return -1;
    w->syms = s;
    w->syms_cap = cap;
  }
  w->syms[*n] = (sym){id, (int32_t)*n - 1, (int32_t)*n + 1, len};
  (*n)++;
  return 0;
}

/* BPE::merge_word + Word::merge_all for one pre-tokenized piece. */
static km_code bpe_word(const km_tokenizer *t, scratch *w, const char *p, size_t n, ibuf *out,
                        km_error *err) {
  if (!n) return KM_OK;
  if (t->ignore_merges) {
    int32_t id = strmap_get(&t->vocab, p, n);
    if (id >= 0) return ibuf_add(out, id) ? km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory") : KM_OK;
  }
  size_t ns = 0;
  int32_t unk = -1;
  uint32_t unk_len = 0;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    size_t l = utf8_next((const unsigned char *)p + i, n - i, &cp);
    int32_t id = strmap_get(&t->vocab, p + i, l);
    if (id >= 0) {
      if (unk >= 0) {
        if (add_sym(w, &ns, unk, unk_len)) goto nomem;
        unk = -1;
      }
      if (add_sym(w, &ns, id, (uint32_t)l)) goto nomem;
    } else {
      bool done = false;
      if (t->byte_fallback) {
        int32_t ids[4];
        size_t k;
        for (k = 0; k < l; k++) {
          static const char hex[] = "0123456789ABCDEF";
          unsigned char b = (unsigned char)p[i + k];
          char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
          if ((ids[k] = strmap_get(&t->vocab, name, 6)) < 0) break;
        }
        if (k == l) {
          /* As tokenizers does: a pending unk is not flushed first. */
          for (k = 0; k < l; k++)
            if (add_sym(w, &ns, ids[k], 1)) goto nomem;
          done = true;
        }
      }
      if (!done && t->unk_id >= 0) {
        if (unk >= 0 && t->fuse_unk) {
          unk_len += (uint32_t)l;
        } else {
          if (unk >= 0 && add_sym(w, &ns, unk, unk_len)) goto nomem;
          unk = t->unk_id;
          unk_len = (uint32_t)l;
        }
      }
    }
    i += l;
  }
  if (unk >= 0 && add_sym(w, &ns, unk, unk_len)) goto nomem;
  if (!ns) return KM_OK;
  w->syms[ns - 1].next = -1;
  w->heap_n = 0;
  for (size_t i = 0; i + 1 < ns; i++) {
    const pair_entry *m = pairmap_get(&t->merges, w->syms[i].id, w->syms[i + 1].id);
    if (m && heap_push(w, (heap_item){m->rank, (int32_t)i, m->id})) goto nomem;
  }
  while (w->heap_n) {
    heap_item top = heap_pop(w);
    sym *cur = &w->syms[top.pos];
    if (cur->len == 0 || cur->next < 0) continue;
    int32_t np = cur->next;
    sym right = w->syms[np];
    const pair_entry *m = pairmap_get(&t->merges, cur->id, right.id);
    if (!m || m->id != top.id) continue;
    cur->id = top.id;
    cur->len += right.len;
    cur->next = right.next;
    w->syms[np].len = 0;
    if (right.next >= 0) w->syms[right.next].prev = top.pos;
    if (cur->prev >= 0) {
      const pair_entry *pm = pairmap_get(&t->merges, w->syms[cur->prev].id, cur->id);
      if (pm && heap_push(w, (heap_item){pm->rank, cur->prev, pm->id})) goto nomem;
      cur = &w->syms[top.pos];
    }
    if (cur->next >= 0) {
      const pair_entry *nm = pairmap_get(&t->merges, cur->id, w->syms[cur->next].id);
      if (nm && heap_push(w, (heap_item){nm->rank, top.pos, nm->id})) goto nomem;
    }
  }
  for (size_t i = 0; i < ns; i++)
    if (w->syms[i].len && ibuf_add(out, w->syms[i].id)) goto nomem;
  return KM_OK;
nomem:
  return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
}

/* Byte-level mapping of a piece, then BPE. */
static km_code model_piece(const km_tokenizer *t, scratch *w, const char *p, size_t n,
                           ibuf *out, km_error *err) {
  if (!t->byte_level) return bpe_word(t, w, p, n, out, err);
  w->piece.n = 0;
  if (buf_reserve(&w->piece, n * 2 + 1)) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  for (size_t i = 0; i < n; i++)
    w->piece.n += km_utf8_put(w->piece.p + w->piece.n, t->byte_to_cp[(unsigned char)p[i]]);
  return bpe_word(t, w, w->piece.p, w->piece.n, out, err);
}

/* Pre-tokenizes one normalized segment and runs the model on each piece. */
static km_code pre_and_model(const km_tokenizer *t, scratch *w, const char *s, size_t n,
                             bool first, ibuf *out, km_error *err) {
  km_code c;
  buf tmp = {0};
  if (t->metaspace) {
    /* Metaspace: ' ' -> replacement, prepend by scheme, optional split. */
    /* Replace first, then prepend unless the result starts with the
     * replacement (a leading space counts). */
    bool pre = t->meta_prepend == PREPEND_ALWAYS || (t->meta_prepend == PREPEND_FIRST && first);
    if (pre && n && s[0] == ' ') pre = false;
    if (pre && n >= t->meta_repl_len && !memcmp(s, t->meta_repl, t->meta_repl_len)) pre = false;
    if (pre && buf_add(&tmp, t->meta_repl, t->meta_repl_len)) goto nomem;
    for (size_t i = 0; i < n; i++) {
      if (s[i] == ' ' ? buf_add(&tmp, t->meta_repl, t->meta_repl_len) : buf_add(&tmp, s + i, 1))
        goto nomem;
    }
    s = tmp.p ? tmp.p : "";
    n = tmp.n;
    if (t->meta_split) {
      size_t a = 0;
      for (size_t i = 1; i <= n; i++) {
        if (i == n || (n - i >= t->meta_repl_len && !memcmp(s + i, t->meta_repl, t->meta_repl_len))) {
          if ((c = model_piece(t, w, s + a, i - a, out, err))) goto done;
          a = i;
        }
      }
      c = KM_OK;
      goto done;
    }
  }
  if (t->add_prefix_space && n && s[0] != ' ') {
    if (buf_add(&tmp, " ", 1) || buf_add(&tmp, s, n)) goto nomem;
    s = tmp.p;
    n = tmp.n;
  }
  if (t->pre == PRE_NONE) {
    c = model_piece(t, w, s, n, out, err);
    goto done;
  }
  for (size_t i = 0; i < n;) {
    size_t e = t->pre == PRE_LLAMA3 ? match_llama3((const unsigned char *)s, n, i)
                                    : match_gpt2((const unsigned char *)s, n, i);
    if (e <= i) e = i + 1; /* cannot happen; keeps the loop finite */
    if ((c = model_piece(t, w, s + i, e - i, out, err))) goto done;
    i = e;
  }
  c = KM_OK;
done:
  free(tmp.p);
  return c;
nomem:
  free(tmp.p);
  return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
}

/* Normalizer ops on a segment, into w->norm. */
static int normalize(const km_tokenizer *t, scratch *w, const char *s, size_t n,
                     const char **out, size_t *out_n) {
  if (!t->n_norm) {
    *out = s;
    *out_n = n;
    return 0;
  }
  buf a = {0}, b = {0};
  if (buf_add(&a, s, n)) return -1;
  for (int k = 0; k < t->n_norm; k++) {
    const op *o = &t->norm[k];
    b.n = 0;
    if (o->kind == NORM_PREPEND) {
      if (a.n && (buf_add(&b, o->a, o->alen) || buf_add(&b, a.p, a.n))) goto fail;
    } else {
      for (size_t i = 0; i < a.n;) {
        if (o->alen && a.n - i >= o->alen && !memcmp(a.p + i, o->a, o->alen)) {
          if (buf_add(&b, o->b, o->blen)) goto fail;
          i += o->alen;
        } else {
          if (buf_add(&b, a.p + i, 1)) goto fail;
          i++;
        }
      }
    }
    buf x = a;
    a = b;
    b = x;
  }
  free(b.p);
  free(w->norm.p);
  w->norm = a;
  *out = a.p ? a.p : "";
  *out_n = a.n;
  return 0;
fail:
  free(a.p);
  free(b.p);
  return -1;
}

static bool word_char(uint32_t cp) { return uclass(cp) != CL_OTHER; }

km_code km_tokenizer_encode(const km_tokenizer *t, const char *text, size_t len,
                            bool add_special, int32_t **ids, size_t *n_ids, km_error *err) {
  *ids = NULL;
  *n_ids = 0;
  if (!text && len) return km_fail(err, KM_ERR_ARGUMENT, "tokenizer: NULL text");
  if (utf8_check(text, len)) return km_fail(err, KM_ERR_FORMAT, "tokenizer: text is not valid UTF-8");
  ibuf out = {0};
  scratch w = {0};
  km_code c = KM_OK;
  const unsigned char *s = (const unsigned char *)text;
  if (add_special)
    for (int i = 0; i < t->n_prefix; i++)
      if (ibuf_add(&out, t->prefix[i])) goto nomem;
  size_t seg = 0; /* start of the pending plain segment */
  size_t i = 0;
  while (i <= len) {
    /* Leftmost-longest added token at i. */
    int32_t best = -1;
    size_t best_len = 0;
    if (i < len && (t->added_first[s[i] >> 3] >> (s[i] & 7) & 1))
      for (int32_t k = 0; k < t->n_added; k++) {
        const tstr *a = &t->tokens[t->added[k].id];
        if (a->len > best_len && a->len <= len - i && (unsigned char)a->s[0] == s[i] &&
            !memcmp(a->s, s + i, a->len)) {
          best = k;
          best_len = a->len;
        }
      }
    if (best >= 0) {
      const added_tok *at = &t->added[best];
      size_t start = i, stop = i + best_len;
      if (at->single_word) {
        uint32_t cp;
        bool before = false, after = false;
        if (start > 0) {
          size_t p = start - 1;
          while (p > 0 && (s[p] & 0xC0) == 0x80) p--;
          utf8_next(s + p, len - p, &cp);
          before = word_char(cp);
        }
        if (stop < len) {
          utf8_next(s + stop, len - stop, &cp);
          after = word_char(cp);
        }
        if (before || after) best = -1;
      }
      if (best >= 0) {
        if (at->lstrip) {
          size_t p = start;
          while (p > seg) {
            size_t q = p - 1;
            uint32_t cp;
            while (q > seg && (s[q] & 0xC0) == 0x80) q--;
            utf8_next(s + q, len - q, &cp);
            if (!is_space(cp)) break;
            p = q;
          }
          start = p;
        }
        size_t next = stop;
        if (at->rstrip) {
          uint32_t cp;
          size_t l;
          while (stop < len && (l = utf8_next(s + stop, len - stop, &cp)) && is_space(cp)) stop += l;
        }
        if (start > seg) {
          const char *ns;
          size_t nn;
          if (normalize(t, &w, text + seg, start - seg, &ns, &nn)) goto nomem;
          if ((c = pre_and_model(t, &w, ns, nn, seg == 0, &out, err))) goto done;
        }
        if (ibuf_add(&out, at->id)) goto nomem;
        seg = stop;
        i = next > stop ? next : stop;
        /* tokenizers resumes the search after the match itself; with
         * rstrip the next match cannot start inside the stripped
         * whitespace unless an added token is whitespace. */
        continue;
      }
    }
    if (i == len) break;
    i++;
  }
  if (seg < len) {
    const char *ns;
    size_t nn;
    if (normalize(t, &w, text + seg, len - seg, &ns, &nn)) goto nomem;
    if ((c = pre_and_model(t, &w, ns, nn, seg == 0, &out, err))) goto done;
  }
  if (add_special)
    for (int k = 0; k < t->n_suffix; k++)
      if (ibuf_add(&out, t->suffix[k])) goto nomem;
  goto done;
nomem:
  c = km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
done:
  free(w.syms);
  free(w.heap);
  free(w.piece.p);
  free(w.norm.p);
  if (c) {
    free(out.p);
    return c;
  }
  *ids = out.p ? out.p : malloc(sizeof(int32_t));
  if (!*ids) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  *n_ids = out.n;
  return KM_OK;
}

/* ---- decode (tokenizers decoders) ---------------------------------------- */

typedef struct slist {
  buf *v;
  size_t n;
} slist;

static void slist_free(slist *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i].p);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* "<0xNN>" (uppercase hex) -> the byte, else -1. */
static int byte_token(const char *s, size_t n) {
  if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
  int h = hexval(s[3]), l = hexval(s[4]);
  return h < 0 || l < 0 ? -1 : h * 16 + l;
}

static int apply_decoder(const km_tokenizer *t, const op *o, slist *in) {
  slist out = {calloc(in->n ? in->n : 1, sizeof(buf)), 0};
  if (!out.v) return -1;
  switch (o->kind) {
    case DEC_BYTELEVEL: {
      buf bytes = {0};
      for (size_t i = 0; i < in->n; i++) {
        const unsigned char *p = (const unsigned char *)in->v[i].p;
        size_t n = in->v[i].n, start = bytes.n;
        bool all = true;
        for (size_t k = 0; k < n;) {
          uint32_t cp;
          size_t l = utf8_next(p + k, n - k, &cp);
          if (cp >= 324 || t->cp_to_byte[cp] < 0) { all = false; break; }
          char b = (char)t->cp_to_byte[cp];
          if (buf_add(&bytes, &b, 1)) goto fail_bytes;
          k += l;
        }
        if (!all) {
          bytes.n = start;
          if (n && buf_add(&bytes, p, n)) goto fail_bytes;
        }
      }
      out.n = 1;
      if (buf_add(&out.v[0], "", 0) || utf8_lossy(&out.v[0], (const unsigned char *)bytes.p, bytes.n)) {
      fail_bytes:
        free(bytes.p);
        out.n = out.n ? out.n : 1;
        slist_free(&out);
        return -1;
      }
      free(bytes.p);
      break;
    }
    case DEC_REPLACE:
      for (size_t i = 0; i < in->n; i++) {
        buf *b = &out.v[out.n++];
        if (buf_add(b, "", 0)) goto fail;
        const char *p = in->v[i].p;
        size_t n = in->v[i].n;
        for (size_t k = 0; k < n;) {
          if (o->alen && n - k >= o->alen && !memcmp(p + k, o->a, o->alen)) {
            if (buf_add(b, o->b, o->blen)) goto fail;
            k += o->alen;
          } else {
            if (buf_add(b, p + k, 1)) goto fail;
            k++;
          }
        }
      }
      break;
    case DEC_BYTEFALLBACK: {
      /* Runs of <0xNN> tokens become their bytes if valid UTF-8, else one
       * U+FFFD per byte. */
      for (size_t i = 0; i < in->n;) {
        if (byte_token(in->v[i].p, in->v[i].n) < 0) {
          buf *b = &out.v[out.n++];
          if (buf_add(b, in->v[i].p ? in->v[i].p : "", in->v[i].n)) goto fail;
          i++;
          continue;
        }
        buf bytes = {0};
        size_t j = i;
        int v;
        while (j < in->n && (v = byte_token(in->v[j].p, in->v[j].n)) >= 0) {
          char c = (char)v;
          if (buf_add(&bytes, &c, 1)) { free(bytes.p); goto fail; }
          j++;
        }
        buf *b = &out.v[out.n++];
        int bad = utf8_check(bytes.p, bytes.n) ? 1 : 0;
        if (buf_add(b, "", 0)) { free(bytes.p); goto fail; }
        if (!bad) {
          if (buf_add(b, bytes.p, bytes.n)) { free(bytes.p); goto fail; }
        } else {
          for (size_t k = 0; k < bytes.n; k++)
            if (buf_add(b, "\xEF\xBF\xBD", 3)) { free(bytes.p); goto fail; }
        }
        free(bytes.p);
        i = j;
      }
      break;
    }
    case DEC_FUSE: {
      buf *b = &out.v[out.n++];
      if (buf_add(b, "", 0)) goto fail;
      for (size_t i = 0; i < in->n; i++)
        if (buf_add(b, in->v[i].p ? in->v[i].p : "", in->v[i].n)) goto fail;
      break;
    }
    case DEC_STRIP:
      for (size_t i = 0; i < in->n; i++) {
        const char *p = in->v[i].p ? in->v[i].p : "";
        size_t n = in->v[i].n, a = 0, e = n;
        for (int k = 0; k < o->start && e - a >= o->alen && !memcmp(p + a, o->a, o->alen); k++)
          a += o->alen;
        for (int k = 0; k < o->stop && e - a >= o->alen && !memcmp(p + e - o->alen, o->a, o->alen); k++)
          e -= o->alen;
        buf *b = &out.v[out.n++];
        if (buf_add(b, p + a, e - a)) goto fail;
      }
      break;
    case DEC_METASPACE:
      /* Each replacement char becomes ' ', except in the first token,
       * where they are dropped unless the prepend scheme is "never". */
      for (size_t i = 0; i < in->n; i++) {
        buf *b = &out.v[out.n++];
        if (buf_add(b, "", 0)) goto fail;
        const char *p = in->v[i].p ? in->v[i].p : "";
        size_t n = in->v[i].n;
        for (size_t k = 0; k < n;) {
          if (o->alen && n - k >= o->alen && !memcmp(p + k, o->a, o->alen)) {
            if (!(i == 0 && o->start != PREPEND_NEVER) && buf_add(b, " ", 1)) goto fail;
            k += o->alen;
          } else {
            if (buf_add(b, p + k, 1)) goto fail;
            k++;
          }
        }
      }
      break;
  }
  slist_free(in);
  *in = out;
  return 0;
fail:
  slist_free(&out);
  return -1;
}

km_code km_tokenizer_decode(const km_tokenizer *t, const int32_t *ids, size_t n,
                            bool skip_special, char **text, size_t *len, km_error *err) {
  *text = NULL;
  if (len) *len = 0;
  slist l = {calloc(n ? n : 1, sizeof(buf)), 0};
  if (!l.v) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= t->n_ids || !t->tokens[id].s) continue;
    if (skip_special && (t->flags[id] & F_SPECIAL)) continue;
    if (buf_add(&l.v[l.n++], t->tokens[id].s, t->tokens[id].len)) goto nomem;
  }
  for (int k = 0; k < t->n_dec; k++)
    if (apply_decoder(t, &t->dec[k], &l)) goto nomem;
  buf out = {0};
  if (buf_add(&out, "", 0)) goto nomem;
  for (size_t i = 0; i < l.n; i++) {
    if (t->n_dec == 0 && i && buf_add(&out, " ", 1)) { free(out.p); goto nomem; }
    if (buf_add(&out, l.v[i].p ? l.v[i].p : "", l.v[i].n)) { free(out.p); goto nomem; }
  }
  slist_free(&l);
  *text = out.p;
  if (len) *len = out.n;
  return KM_OK;
nomem:
  slist_free(&l);
  return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
}

int km_tokenizer_token_bytes(const km_tokenizer *t, int32_t id, char *out, size_t cap) {
  if (id < 0 || id >= t->n_ids || !t->tokens[id].s) return -1;
  const tstr *k = &t->tokens[id];
  buf b = {0};
  int r = -1;
  bool has_byte_level = false, has_fallback = false;
  const op *repl = NULL;
  for (int i = 0; i < t->n_dec; i++) {
    if (t->dec[i].kind == DEC_BYTELEVEL) has_byte_level = true;
    if (t->dec[i].kind == DEC_BYTEFALLBACK) has_fallback = true;
    if (t->dec[i].kind == DEC_REPLACE || t->dec[i].kind == DEC_METASPACE) repl = &t->dec[i];
  }
  int bt = byte_token(k->s, k->len);
  if (has_fallback && bt >= 0) {
    char c = (char)bt;
    if (buf_add(&b, &c, 1)) goto done;
  } else if (has_byte_level) {
    const unsigned char *p = (const unsigned char *)k->s;
    bool all = true;
    for (size_t i = 0; i < k->len;) {
      uint32_t cp;
      size_t l = utf8_next(p + i, k->len - i, &cp);
      if (cp >= 324 || t->cp_to_byte[cp] < 0) { all = false; break; }
      char c = (char)t->cp_to_byte[cp];
      if (buf_add(&b, &c, 1)) goto done;
      i += l;
    }
    if (!all) {
      b.n = 0;
      if (buf_add(&b, k->s, k->len)) goto done;
    }
  } else if (repl) {
    const char *to = repl->kind == DEC_METASPACE ? " " : repl->b;
    size_t tolen = repl->kind == DEC_METASPACE ? 1 : repl->blen;
    for (size_t i = 0; i < k->len;) {
      if (repl->alen && k->len - i >= repl->alen && !memcmp(k->s + i, repl->a, repl->alen)) {
        if (buf_add(&b, to, tolen)) goto done;
        i += repl->alen;
      } else {
        if (buf_add(&b, k->s + i, 1)) goto done;
        i++;
      }
    }
  } else {
    if (buf_add(&b, k->s, k->len)) goto done;
  }
  if (out && cap) memcpy(out, b.p ? b.p : "", b.n < cap ? b.n : cap);
  r = (int)b.n;
done:
  free(b.p);
  return r;
}

/* ---- loading ------------------------------------------------------------- */

static void index_added(km_tokenizer *t) {
  memset(t->added_first, 0, sizeof t->added_first);
  for (int32_t k = 0; k < t->n_added; k++) {
    unsigned char b = (unsigned char)t->tokens[t->added[k].id].s[0];
    t->added_first[b >> 3] |= (uint8_t)(1u << (b & 7));
  }
}

static km_code alloc_ids(km_tokenizer *t, int64_t n, km_error *err) {
  if (n <= 0 || n > MAX_VOCAB) return km_fail(err, KM_ERR_LIMIT, "tokenizer: %lld ids", (long long)n);
  t->n_ids = (int32_t)n;
  t->tokens = calloc((size_t)n, sizeof *t->tokens);
  t->flags = calloc((size_t)n, 1);
  if (!t->tokens || !t->flags) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  return KM_OK;
}

static km_code set_token(km_tokenizer *t, int64_t id, const char *s, size_t len, km_error *err) {
  if (id < 0 || id >= t->n_ids) return km_fail(err, KM_ERR_RANGE, "tokenizer: id %lld out of range", (long long)id);
  if (len > MAX_TOKEN_BYTES) return km_fail(err, KM_ERR_LIMIT, "tokenizer: token %lld too long", (long long)id);
  if (utf8_check(s, len)) return km_fail(err, KM_ERR_FORMAT, "tokenizer: token %lld is not UTF-8", (long long)id);
  tstr *k = &t->tokens[id];
  if (k->s) {
    if (k->len == len && !memcmp(k->s, s, len)) return KM_OK;
    return km_fail(err, KM_ERR_FORMAT, "tokenizer: id %lld has two different tokens", (long long)id);
  }
  k->s = malloc(len + 1);
  if (!k->s) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  memcpy(k->s, s, len);
  k->s[len] = 0;
  k->len = (uint32_t)len;
  return KM_OK;
}

static km_code add_merge(km_tokenizer *t, const char *l, size_t ll, const char *r, size_t rl,
                         int32_t rank, km_error *err) {
  int32_t a = strmap_get(&t->vocab, l, ll), b = strmap_get(&t->vocab, r, rl);
  if (a < 0 || b < 0)
    return km_fail(err, KM_ERR_FORMAT, "tokenizer: merge %d names a token not in the vocab", rank);
  char tmp[512], *cat = ll + rl <= sizeof tmp ? tmp : malloc(ll + rl);
  if (!cat) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  memcpy(cat, l, ll);
  memcpy(cat + ll, r, rl);
  int32_t id = strmap_get(&t->vocab, cat, ll + rl);
  if (cat != tmp) free(cat);
  if (id < 0)
    return km_fail(err, KM_ERR_FORMAT, "tokenizer: merge %d makes a token not in the vocab", rank);
  /* tokenizers builds a HashMap from the merge list: a repeated pair keeps
   * the later rank. */
  pairmap_put(&t->merges, a, b, rank, id);
  return KM_OK;
}

static char *dup_n(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = 0;
  }
  return d;
}

static km_code parse_normalizer(km_tokenizer *t, const km_json *n, km_error *err) {
  if (!n || km_json_is(n, KM_JSON_NULL)) return KM_OK;
  const char *type = km_json_str(km_json_get(n, "type"));
  if (!type) return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: normalizer without a type");
  if (!strcmp(type, "Sequence")) {
    const km_json *list = km_json_get(n, "normalizers");
    if (!km_json_is(list, KM_JSON_ARRAY))
      return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: bad normalizer sequence");
    for (uint32_t i = 0; i < list->len; i++) {
      km_code c = parse_normalizer(t, &list->u.items[i], err);
      if (c) return c;
    }
    return KM_OK;
  }
  if (t->n_norm == MAX_OPS) return km_fail(err, KM_ERR_LIMIT, "tokenizer.json: too many normalizers");
  op *o = &t->norm[t->n_norm];
  if (!strcmp(type, "Prepend")) {
    const km_json *p = km_json_get(n, "prepend");
    if (!km_json_is(p, KM_JSON_STRING)) return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: Prepend");
    o->kind = NORM_PREPEND;
    if (!(o->a = dup_n(p->u.str, p->len))) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
    o->alen = p->len;
  } else if (!strcmp(type, "Replace")) {
    const km_json *pat = km_json_get(km_json_get(n, "pattern"), "String");
    const km_json *to = km_json_get(n, "content");
    if (!km_json_is(pat, KM_JSON_STRING) || !km_json_is(to, KM_JSON_STRING) || !pat->len)
      return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: Replace normalizer needs a String pattern");
    o->kind = NORM_REPLACE;
    o->a = dup_n(pat->u.str, pat->len);
    o->b = dup_n(to->u.str, to->len);
    o->alen = pat->len;
    o->blen = to->len;
    if (!o->a || !o->b) {
      t->n_norm++;
      return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
    }
  } else {
    return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: normalizer %.32s is not supported", type);
  }
  t->n_norm++;
  return KM_OK;
}

static const char LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int prepend_scheme(const km_json *o) {
  const char *s = km_json_str(km_json_get(o, "prepend_scheme"));
  bool b;
  if (s) return !strcmp(s, "never") ? PREPEND_NEVER : !strcmp(s, "first") ? PREPEND_FIRST : PREPEND_ALWAYS;
  if (km_json_bool(km_json_get(o, "add_prefix_space"), &b)) return b ? PREPEND_ALWAYS : PREPEND_NEVER;
  return PREPEND_ALWAYS;
}

static km_code parse_pre(km_tokenizer *t, const km_json *p, int depth, km_error *err) {
  if (!p || km_json_is(p, KM_JSON_NULL)) return KM_OK;
  const char *type = km_json_str(km_json_get(p, "type"));
  if (!type) return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: pre_tokenizer without a type");
  bool b;
  if (!strcmp(type, "Sequence") && depth == 0) {
    const km_json *list = km_json_get(p, "pretokenizers");
    if (!km_json_is(list, KM_JSON_ARRAY))
      return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: bad pre_tokenizer sequence");
    for (uint32_t i = 0; i < list->len; i++) {
      km_code c = parse_pre(t, &list->u.items[i], depth + 1, err);
      if (c) return c;
    }
    return KM_OK;
  }
  if (!strcmp(type, "ByteLevel")) {
    if (t->byte_level) return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: two ByteLevel pre-tokenizers");
    t->byte_level = true;
    bool regex = true;
    km_json_bool(km_json_get(p, "use_regex"), &regex);
    if (km_json_bool(km_json_get(p, "add_prefix_space"), &b) && b) {
      if (t->pre != PRE_NONE)
        return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: add_prefix_space after a Split");
      t->add_prefix_space = true;
    }
    if (regex) {
      if (t->pre != PRE_NONE)
        return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: ByteLevel regex after a Split");
      t->pre = PRE_GPT2;
    }
    return KM_OK;
  }
  if (!strcmp(type, "Split")) {
    const char *beh = km_json_str(km_json_get(p, "behavior"));
    const km_json *pat = km_json_get(km_json_get(p, "pattern"), "Regex");
    bool inv = false;
    km_json_bool(km_json_get(p, "invert"), &inv);
    if (t->pre != PRE_NONE || t->byte_level || !beh || strcmp(beh, "Isolated") || inv || !pat)
      return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: only an Isolated regex Split "
                     "before ByteLevel is supported");
    const char *s = km_json_str(pat);
    if (s && !strcmp(s, LLAMA3_PATTERN)) t->pre = PRE_LLAMA3;
    else if (s && !strcmp(s, GPT2_PATTERN)) t->pre = PRE_GPT2;
    else return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: unknown Split regex %.60s", s ? s : "?");
    return KM_OK;
  }
  if (!strcmp(type, "Metaspace")) {
    const km_json *r = km_json_get(p, "replacement");
    if (!km_json_is(r, KM_JSON_STRING) || !r->len || r->len >= sizeof t->meta_repl)
      return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: Metaspace replacement");
    if (t->metaspace || t->pre != PRE_NONE || t->byte_level)
      return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: Metaspace combined with other pre-tokenizers");
    t->metaspace = true;
    memcpy(t->meta_repl, r->u.str, r->len);
    t->meta_repl_len = r->len;
    t->meta_prepend = prepend_scheme(p);
    t->meta_split = true;
    km_json_bool(km_json_get(p, "split"), &t->meta_split);
    return KM_OK;
  }
  return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: pre_tokenizer %.32s is not supported", type);
}

static km_code parse_decoder(km_tokenizer *t, const km_json *d, int depth, km_error *err) {
  if (!d || km_json_is(d, KM_JSON_NULL)) return KM_OK;
  const char *type = km_json_str(km_json_get(d, "type"));
  if (!type) return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: decoder without a type");
  if (!strcmp(type, "Sequence") && depth == 0) {
    const km_json *list = km_json_get(d, "decoders");
    if (!km_json_is(list, KM_JSON_ARRAY))
      return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: bad decoder sequence");
    for (uint32_t i = 0; i < list->len; i++) {
      km_code c = parse_decoder(t, &list->u.items[i], depth + 1, err);
      if (c) return c;
    }
    return KM_OK;
  }
  if (t->n_dec == MAX_OPS) return km_fail(err, KM_ERR_LIMIT, "tokenizer.json: too many decoders");
  op *o = &t->dec[t->n_dec];
  memset(o, 0, sizeof *o);
  if (!strcmp(type, "ByteLevel")) {
    o->kind = DEC_BYTELEVEL;
  } else if (!strcmp(type, "ByteFallback")) {
    o->kind = DEC_BYTEFALLBACK;
  } else if (!strcmp(type, "Fuse")) {
    o->kind = DEC_FUSE;
  } else if (!strcmp(type, "Replace")) {
    const km_json *pat = km_json_get(km_json_get(d, "pattern"), "String");
    const km_json *to = km_json_get(d, "content");
    if (!km_json_is(pat, KM_JSON_STRING) || !km_json_is(to, KM_JSON_STRING) || !pat->len)
      return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: Replace decoder needs a String pattern");
    o->kind = DEC_REPLACE;
    o->a = dup_n(pat->u.str, pat->len);
    o->b = dup_n(to->u.str, to->len);
    o->alen = pat->len;
    o->blen = to->len;
  } else if (!strcmp(type, "Strip")) {
    const km_json *c = km_json_get(d, "content");
    int64_t a, b;
    if (!km_json_is(c, KM_JSON_STRING) || !c->len || !km_json_int(km_json_get(d, "start"), &a) ||
        !km_json_int(km_json_get(d, "stop"), &b) || a < 0 || b < 0 || a > 1 << 20 || b > 1 << 20)
      return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: bad Strip decoder");
    o->kind = DEC_STRIP;
    o->a = dup_n(c->u.str, c->len);
    o->alen = c->len;
    o->start = (int)a;
    o->stop = (int)b;
  } else if (!strcmp(type, "Metaspace")) {
    const km_json *r = km_json_get(d, "replacement");
    if (!km_json_is(r, KM_JSON_STRING) || !r->len)
      return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: Metaspace decoder replacement");
    o->kind = DEC_METASPACE;
    o->a = dup_n(r->u.str, r->len);
    o->alen = r->len;
    o->start = prepend_scheme(d);
  } else {
    return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: decoder %.32s is not supported", type);
  }
  t->n_dec++;
  if ((o->kind == DEC_REPLACE && (!o->a || !o->b)) ||
      ((o->kind == DEC_STRIP || o->kind == DEC_METASPACE) && !o->a))
    return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  return KM_OK;
}

/* TemplateProcessing "single": SpecialToken ids before and after $A. */
static km_code parse_post(km_tokenizer *t, const km_json *p, int depth, km_error *err) {
  if (!p || km_json_is(p, KM_JSON_NULL)) return KM_OK;
  const char *type = km_json_str(km_json_get(p, "type"));
  if (!type) return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: post_processor without a type");
  if (!strcmp(type, "ByteLevel")) return KM_OK; /* offsets only */
  if (!strcmp(type, "Sequence") && depth == 0) {
    const km_json *list = km_json_get(p, "processors");
    if (!km_json_is(list, KM_JSON_ARRAY))
      return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: bad post_processor sequence");
    for (uint32_t i = 0; i < list->len; i++) {
      km_code c = parse_post(t, &list->u.items[i], depth + 1, err);
      if (c) return c;
    }
    return KM_OK;
  }
  if (strcmp(type, "TemplateProcessing"))
    return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: post_processor %.32s is not supported", type);
  const km_json *single = km_json_get(p, "single"), *specials = km_json_get(p, "special_tokens");
  if (!km_json_is(single, KM_JSON_ARRAY))
    return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: TemplateProcessing without single");
  bool seen_a = false;
  for (uint32_t i = 0; i < single->len; i++) {
    const km_json *it = &single->u.items[i];
    const km_json *st = km_json_get(it, "SpecialToken");
    if (km_json_get(it, "Sequence")) {
      if (seen_a) return km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: template with two sequences");
      seen_a = true;
      continue;
    }
    const char *name = km_json_str(km_json_get(st, "id"));
    const km_json *ids = km_json_get(km_json_get(specials, name ? name : ""), "ids");
    if (!name || !km_json_is(ids, KM_JSON_ARRAY))
      return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: bad template piece");
    for (uint32_t k = 0; k < ids->len; k++) {
      int64_t id;
      if (!km_json_int(&ids->u.items[k], &id) || id < 0 || id >= t->n_ids)
        return km_fail(err, KM_ERR_FORMAT, "tokenizer.json: template id out of range");
      int *n = seen_a ? &t->n_suffix : &t->n_prefix;
      int32_t *arr = seen_a ? t->suffix : t->prefix;
      if (*n == MAX_TEMPLATE) return km_fail(err, KM_ERR_LIMIT, "tokenizer.json: template too long");
      arr[(*n)++] = (int32_t)id;
    }
  }
  return KM_OK;
}

static km_code finish_vocab(km_tokenizer *t, int32_t n_model, const int32_t *model_ids,
                            km_error *err) {
  if (strmap_init(&t->vocab, (size_t)n_model, t->tokens))
    return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  for (int32_t i = 0; i < n_model; i++) {
    int32_t id = model_ids ? model_ids[i] : i;
    if (!t->tokens[id].s) continue;
    if (strmap_put(&t->vocab, id) >= 0)
      return km_fail(err, KM_ERR_FORMAT, "tokenizer: token \"%.40s\" appears twice", t->tokens[id].s);
  }
  return KM_OK;
}

km_code km_tokenizer_from_json(const char *json, size_t len, km_tokenizer **out, km_error *err) {
  *out = NULL;
  km_json_doc *doc;
  km_error jerr;
  km_json_limits lim = {64, 1ull << 30};
  km_code c = km_json_parse(json, len, &lim, &doc, &jerr);
  if (c) return km_fail(err, c, "tokenizer.json: %s", jerr.message);
  km_tokenizer *t = calloc(1, sizeof *t);
  int32_t *model_ids = NULL;
  if (!t) {
    km_json_free(doc);
    return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  }
  init_byte_map(t);
  t->unk_id = -1;
  const km_json *root = km_json_root(doc);
  const km_json *model = km_json_get(root, "model");
  const km_json *vocab = km_json_get(model, "vocab");
  const km_json *merges = km_json_get(model, "merges");
  const km_json *added = km_json_get(root, "added_tokens");
  const char *mtype = km_json_str(km_json_get(model, "type"));
  if (!km_json_is(root, KM_JSON_OBJECT) || !km_json_is(model, KM_JSON_OBJECT)) {
    c = km_fail(err, KM_ERR_FORMAT, "tokenizer.json: no model");
    goto done;
  }
  if (mtype && strcmp(mtype, "BPE")) {
    c = km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: model type %.32s (only BPE)", mtype);
    goto done;
  }
  if (!km_json_is(vocab, KM_JSON_OBJECT) || !km_json_is(merges, KM_JSON_ARRAY)) {
    c = km_fail(err, KM_ERR_FORMAT, "tokenizer.json: BPE model without vocab or merges");
    goto done;
  }
  if (added && !km_json_is(added, KM_JSON_ARRAY) && !km_json_is(added, KM_JSON_NULL)) {
    c = km_fail(err, KM_ERR_FORMAT, "tokenizer.json: added_tokens is not an array");
    goto done;
  }
  const km_json *v;
  if (((v = km_json_get(model, "continuing_subword_prefix")) && !km_json_is(v, KM_JSON_NULL) &&
       !(km_json_is(v, KM_JSON_STRING) && v->len == 0)) ||
      ((v = km_json_get(model, "end_of_word_suffix")) && !km_json_is(v, KM_JSON_NULL) &&
       !(km_json_is(v, KM_JSON_STRING) && v->len == 0))) {
    c = km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: subword prefix/suffix");
    goto done;
  }
  double dropout;
  if (km_json_num(km_json_get(model, "dropout"), &dropout) && dropout != 0) {
    c = km_fail(err, KM_ERR_UNSUPPORTED, "tokenizer.json: BPE dropout");
    goto done;
  }
  km_json_bool(km_json_get(model, "byte_fallback"), &t->byte_fallback);
  km_json_bool(km_json_get(model, "fuse_unk"), &t->fuse_unk);
  km_json_bool(km_json_get(model, "ignore_merges"), &t->ignore_merges);
  /* Ids: the largest of vocab and added tokens, plus one. */
  int64_t max_id = -1, id;
  for (uint32_t i = 0; i < vocab->len; i++) {
    if (!km_json_int(&vocab->u.members[i].value, &id) || id < 0 || id >= MAX_VOCAB) {
      c = km_fail(err, KM_ERR_FORMAT, "tokenizer.json: bad id for \"%.40s\"", vocab->u.members[i].key);
      goto done;
    }
    if (id > max_id) max_id = id;
  }
  uint32_t n_added = added && km_json_is(added, KM_JSON_ARRAY) ? added->len : 0;
  for (uint32_t i = 0; i < n_added; i++) {
    if (!km_json_int(km_json_get(&added->u.items[i], "id"), &id) || id < 0 || id >= MAX_VOCAB ||
        !km_json_is(km_json_get(&added->u.items[i], "content"), KM_JSON_STRING)) {
      c = km_fail(err, KM_ERR_FORMAT, "tokenizer.json: bad added token %u", i);
      goto done;
    }
    if (id > max_id) max_id = id;
  }
  if ((c = alloc_ids(t, max_id + 1, err))) goto done;
  model_ids = malloc((vocab->len ? vocab->len : 1) * sizeof *model_ids);
  if (!model_ids) {
    c = km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < vocab->len; i++) {
    const km_json_member *m = &vocab->u.members[i];
    km_json_int(&m->value, &id);
    model_ids[i] = (int32_t)id;
    if ((c = set_token(t, id, m->key, m->key_len, err))) goto done;
  }
  if ((c = finish_vocab(t, (int32_t)vocab->len, model_ids, err))) goto done;
  const char *unk = km_json_str(km_json_get(model, "unk_token"));
  if (unk && (t->unk_id = strmap_get(&t->vocab, unk, strlen(unk))) < 0) {
    c = km_fail(err, KM_ERR_FORMAT, "tokenizer.json: unk_token not in the vocab");
    goto done;
  }
  if (merges->len > MAX_MERGES) {
    c = km_fail(err, KM_ERR_LIMIT, "tokenizer.json: %u merges", merges->len);
    goto done;
  }
  if (pairmap_init(&t->merges, merges->len)) {
    c = km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < merges->len; i++) {
    const km_json *m = &merges->u.items[i];
    const char *l, *r;
    size_t ll, rl;
    if (km_json_is(m, KM_JSON_STRING)) {
      /* "left right": split at the first space, as tokenizers does. */
      const char *sp = memchr(m->u.str, ' ', m->len);
      if (!sp) {
        c = km_fail(err, KM_ERR_FORMAT, "tokenizer.json: merge %u has no space", i);
        goto done;
      }
      l = m->u.str;
      ll = (size_t)(sp - l);
      r = sp + 1;
      rl = m->len - ll - 1;
    } else if (km_json_is(m, KM_JSON_ARRAY) && m->len == 2 &&
               km_json_is(&m->u.items[0], KM_JSON_STRING) && km_json_is(&m->u.items[1], KM_JSON_STRING)) {
      l = m->u.items[0].u.str;
      ll = m->u.items[0].len;
      r = m->u.items[1].u.str;
      rl = m->u.items[1].len;
    } else {
      c = km_fail(err, KM_ERR_FORMAT, "tokenizer.json: merge %u is malformed", i);
      goto done;
    }
    if ((c = add_merge(t, l, ll, r, rl, (int32_t)i, err))) goto done;
  }
  t->added = calloc(n_added ? n_added : 1, sizeof *t->added);
  if (!t->added) {
    c = km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < n_added; i++) {
    const km_json *a = &added->u.items[i];
    const km_json *content = km_json_get(a, "content");
    km_json_int(km_json_get(a, "id"), &id);
    if (!content->len) {
      c = km_fail(err, KM_ERR_FORMAT, "tokenizer.json: empty added token");
      goto done;
    }
    if ((c = set_token(t, id, content->u.str, content->len, err))) goto done;
    added_tok *at = &t->added[t->n_added++];
    at->id = (int32_t)id;
    km_json_bool(km_json_get(a, "special"), &at->special);
    km_json_bool(km_json_get(a, "lstrip"), &at->lstrip);
    km_json_bool(km_json_get(a, "rstrip"), &at->rstrip);
    km_json_bool(km_json_get(a, "single_word"), &at->single_word);
    t->flags[id] |= F_ADDED | (at->special ? F_SPECIAL : 0);
  }
  if ((c = parse_normalizer(t, km_json_get(root, "normalizer"), err)) ||
      (c = parse_pre(t, km_json_get(root, "pre_tokenizer"), 0, err)) ||
      (c = parse_post(t, km_json_get(root, "post_processor"), 0, err)) ||
      (c = parse_decoder(t, km_json_get(root, "decoder"), 0, err)))
    goto done;
done:
  free(model_ids);
  km_json_free(doc);
  if (c) {
    km_tokenizer_free(t);
    return c;
  }
  index_added(t);
  *out = t;
  return KM_OK;
}

/* ---- GGUF ---------------------------------------------------------------- */

typedef struct spm_merge {
  float score;
  int32_t id, l, r;
} spm_merge;

static int cmp_spm(const void *a, const void *b) {
  const spm_merge *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  if (x->id != y->id) return x->id < y->id ? -1 : 1;
  if (x->l != y->l) return x->l < y->l ? -1 : 1;
  return x->r < y->r ? -1 : x->r > y->r;
}

/* transformers' SentencePieceExtractor.extract: for every piece, every
 * split into two pieces of the vocab (at code point boundaries) is a merge
 * ranked by the piece's score, highest first; ties in vocab order, then by
 * the ids of the left and right parts. */
static km_code spm_merges(km_tokenizer *t, const km_gguf_value *scores, km_error *err) {
  size_t cap = 1024, n = 0;
  spm_merge *m = malloc(cap * sizeof *m);
  if (!m) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  for (int32_t id = 0; id < t->n_ids; id++) {
    const tstr *k = &t->tokens[id];
    for (size_t i = 0; i < k->len;) {
      uint32_t cp;
      i += utf8_next((const unsigned char *)k->s + i, k->len - i, &cp);
      if (i >= k->len) break;
      int32_t l = strmap_get(&t->vocab, k->s, i), r = strmap_get(&t->vocab, k->s + i, k->len - i);
      if (l < 0 || r < 0) continue;
      if (n == cap) {
        spm_merge *g = cap > MAX_MERGES ? NULL : realloc(m, (cap *= 2) * sizeof *m);
        if (!g) {
          free(m);
          return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
        }
        m = g;
      }
      m[n++] = (spm_merge){(float)km_gguf_array_f64(scores, (uint64_t)id), id, l, r};
    }
  }
  qsort(m, n, sizeof *m, cmp_spm);
  if (pairmap_init(&t->merges, n)) {
    free(m);
    return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  }
  for (size_t i = 0; i < n; i++)
    if (!pairmap_get(&t->merges, m[i].l, m[i].r)) pairmap_put(&t->merges, m[i].l, m[i].r, (int32_t)i, m[i].id);
  free(m);
  return KM_OK;
}

static km_code add_op(op *ops, int *n, int kind, const char *a, const char *b, int start,
                      km_error *err) {
  op *o = &ops[(*n)++];
  memset(o, 0, sizeof *o);
  o->kind = kind;
  o->start = start;
  if (a && !(o->a = dup_n(a, o->alen = strlen(a)))) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  if (b && !(o->b = dup_n(b, o->blen = strlen(b)))) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  return KM_OK;
}

km_code km_tokenizer_from_gguf(const km_gguf *g, km_tokenizer **out, km_error *err) {
  *out = NULL;
  const km_gguf_str *model = km_gguf_get_str(g, "tokenizer.ggml.model");
  const km_gguf_value *toks = km_gguf_get_array(g, "tokenizer.ggml.tokens", KM_GGUF_STRING);
  if (!model || !toks) return km_fail(err, KM_ERR_NOT_FOUND, "GGUF: no tokenizer.ggml.model/tokens");
  bool gpt2 = !strcmp(model->ptr, "gpt2"), llama = !strcmp(model->ptr, "llama");
  if (!gpt2 && !llama)
    return km_fail(err, KM_ERR_UNSUPPORTED, "GGUF: tokenizer model \"%.32s\" (gpt2, llama)", model->ptr);
  const km_gguf_value *types = km_gguf_get(g, "tokenizer.ggml.token_type");
  if (types && (types->type != KM_GGUF_ARRAY || types->v.arr.n != toks->v.arr.n ||
                types->v.arr.type == KM_GGUF_STRING || types->v.arr.type == KM_GGUF_ARRAY))
    return km_fail(err, KM_ERR_FORMAT, "GGUF: tokenizer.ggml.token_type does not match the tokens");
  const km_gguf_value *scores = km_gguf_get_array(g, "tokenizer.ggml.scores", KM_GGUF_FLOAT32);
  if (llama && (!scores || scores->v.arr.n != toks->v.arr.n))
    return km_fail(err, KM_ERR_FORMAT, "GGUF: llama tokenizer needs one score per token");
  const km_gguf_value *merges = km_gguf_get_array(g, "tokenizer.ggml.merges", KM_GGUF_STRING);
  if (gpt2 && !merges) return km_fail(err, KM_ERR_NOT_FOUND, "GGUF: gpt2 tokenizer without merges");
  km_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
  init_byte_map(t);
  t->unk_id = -1;
  km_code c = alloc_ids(t, (int64_t)toks->v.arr.n, err);
  if (c) goto done;
  const km_gguf_str *ts = toks->v.arr.data;
  for (int32_t i = 0; i < t->n_ids; i++)
    if ((c = set_token(t, i, ts[i].ptr, ts[i].len, err))) goto done;
  if ((c = finish_vocab(t, t->n_ids, NULL, err))) goto done;
  t->added = calloc((size_t)t->n_ids, sizeof *t->added);
  if (!t->added) {
    c = km_fail(err, KM_ERR_NOMEM, "tokenizer: out of memory");
    goto done;
  }
  /* token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
   * 6 byte. Control (and unknown, for llama) tokens are special added
   * tokens; user-defined ones are plain added tokens. */
  for (int32_t i = 0; types && i < t->n_ids; i++) {
    int64_t ty = km_gguf_array_i64(types, (uint64_t)i);
    bool special = ty == 3 || (llama && ty == 2);
    if (!special && ty != 4) continue;
    t->added[t->n_added++] = (added_tok){i, special, false, false, false};
    t->flags[i] |= F_ADDED | (special ? F_SPECIAL : 0);
  }
  uint64_t u;
  bool add_bos = true, add_eos = false, add_space = true;
  km_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos);
  km_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos);
  km_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &add_space);
  if (add_bos && km_gguf_get_u64(g, "tokenizer.ggml.bos_token_id", &u) && u < (uint64_t)t->n_ids)
    t->prefix[t->n_prefix++] = (int32_t)u;
  if (add_eos && km_gguf_get_u64(g, "tokenizer.ggml.eos_token_id", &u) && u < (uint64_t)t->n_ids)
    t->suffix[t->n_suffix++] = (int32_t)u;
  if (gpt2) {
    const km_gguf_str *pre = km_gguf_get_str(g, "tokenizer.ggml.pre");
    t->byte_level = true;
    if (!pre || !strcmp(pre->ptr, "default") || !strcmp(pre->ptr, "gpt2")) {
      t->pre = PRE_GPT2;
    } else if (!strcmp(pre->ptr, "llama-bpe") || !strcmp(pre->ptr, "llama3")) {
      t->pre = PRE_LLAMA3;
      t->ignore_merges = true;
    } else {
      c = km_fail(err, KM_ERR_UNSUPPORTED, "GGUF: pre-tokenizer \"%.32s\"", pre->ptr);
      goto done;
    }
    if (merges->v.arr.n > MAX_MERGES || pairmap_init(&t->merges, merges->v.arr.n)) {
      c = km_fail(err, KM_ERR_LIMIT, "GGUF: too many merges");
      goto done;
    }
    const km_gguf_str *ms = merges->v.arr.data;
    for (uint64_t i = 0; i < merges->v.arr.n; i++) {
      const char *sp = memchr(ms[i].ptr, ' ', ms[i].len);
      if (!sp) {
        c = km_fail(err, KM_ERR_FORMAT, "GGUF: merge %llu has no space", (unsigned long long)i);
        goto done;
      }
      size_t ll = (size_t)(sp - ms[i].ptr);
      if ((c = add_merge(t, ms[i].ptr, ll, sp + 1, ms[i].len - ll - 1, (int32_t)i, err))) goto done;
    }
    if ((c = add_op(t->dec, &t->n_dec, DEC_BYTELEVEL, NULL, NULL, 0, err))) goto done;
  } else {
    /* Llama 2 sentencepiece BPE, as transformers converts it. */
    t->byte_fallback = true;
    t->fuse_unk = true;
    if (km_gguf_get_u64(g, "tokenizer.ggml.unknown_token_id", &u) && u < (uint64_t)t->n_ids)
      t->unk_id = (int32_t)u;
    if ((c = spm_merges(t, scores, err))) goto done;
    if ((add_space && (c = add_op(t->norm, &t->n_norm, NORM_PREPEND, "\xE2\x96\x81", NULL, 0, err))) ||
        (c = add_op(t->norm, &t->n_norm, NORM_REPLACE, " ", "\xE2\x96\x81", 0, err)) ||
        (c = add_op(t->dec, &t->n_dec, DEC_REPLACE, "\xE2\x96\x81", " ", 0, err)) ||
        (c = add_op(t->dec, &t->n_dec, DEC_BYTEFALLBACK, NULL, NULL, 0, err)) ||
        (c = add_op(t->dec, &t->n_dec, DEC_FUSE, NULL, NULL, 0, err)))
      goto done;
    if (add_space) {
      if ((c = add_op(t->dec, &t->n_dec, DEC_STRIP, " ", NULL, 1, err))) goto done;
      t->dec[t->n_dec - 1].stop = 0;
    }
  }
done:
  if (c) {
    km_tokenizer_free(t);
    return c;
  }
  index_added(t);
  *out = t;
  return KM_OK;
}
