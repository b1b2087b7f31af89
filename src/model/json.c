/* Strict, bounded JSON: recursive descent with an explicit depth limit.
 * Children of the container being parsed collect on one scratch stack and
 * are copied into the arena when the container closes, so every container
 * is a single array and the parser does one realloc-amortized pass. */
#include "model/json.h"
#include "model/utf8.h"

#include <stdlib.h>
#include <string.h>

typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  /* data follows, 16-aligned */
} arena_block;

struct km_json_doc {
  km_json root;
  arena_block *blocks;
};

typedef struct parser {
  const unsigned char *p, *begin, *end;
  km_json_doc *doc;
  km_json_member *stack; /* scratch: children of open containers */
  size_t top, cap;
  uint32_t depth, max_depth;
  km_error *err;
} parser;

#define BLOCK_HDR ((sizeof(arena_block) + 15) & ~(size_t)15)

static void *arena_alloc(km_json_doc *d, size_t n) {
  n = (n + 15) & ~(size_t)15;
  arena_block *b = d->blocks;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > 65536 ? n : 65536;
    b = malloc(BLOCK_HDR + cap);
    if (!b) return NULL;
    b->cap = cap;
    b->used = 0;
    b->next = d->blocks;
    d->blocks = b;
  }
  void *r = (char *)b + BLOCK_HDR + b->used;
  b->used += n;
  return r;
}

static km_code fail(parser *ps, km_code c, const char *what) {
  return km_fail(ps->err, c, "JSON: %s at byte %zu", what,
                 (size_t)(ps->p - ps->begin));
}

static void skip_ws(parser *ps) {
  while (ps->p < ps->end &&
         (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static int hex4(const unsigned char *s, uint32_t *out) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return -1;
  }
  *out = v;
  return 0;
}

/* At an opening quote. Decodes into the arena. */
static km_code parse_string(parser *ps, const char **out, uint32_t *out_len) {
  const unsigned char *s = ++ps->p, *q = s;
  while (q < ps->end && *q != '"') {
    if (*q == '\\') q++;
    q++;
  }
  if (q >= ps->end) return fail(ps, KM_ERR_TRUNCATED, "unterminated string");
  if ((size_t)(q - s) >= UINT32_MAX) return fail(ps, KM_ERR_LIMIT, "string too long");
  char *o = arena_alloc(ps->doc, (size_t)(q - s) + 1);
  if (!o) return fail(ps, KM_ERR_NOMEM, "out of memory");
  size_t n = 0;
  while (ps->p < q) {
    unsigned c = *ps->p;
    if (c < 0x20) return fail(ps, KM_ERR_FORMAT, "control character in string");
    if (c == '\\') {
      unsigned e = ps->p[1];
      ps->p += 2;
      switch (e) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
          uint32_t cp, lo;
          if (q - ps->p < 4 || hex4(ps->p, &cp))
            return fail(ps, KM_ERR_FORMAT, "bad \\u escape");
          ps->p += 4;
          if (cp >= 0xDC00 && cp <= 0xDFFF)
            return fail(ps, KM_ERR_FORMAT, "lone low surrogate");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (q - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
                hex4(ps->p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
              return fail(ps, KM_ERR_FORMAT, "lone high surrogate");
            ps->p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          n += km_utf8_put(o + n, cp);
          break;
        }
        default:
          ps->p -= 2;
          return fail(ps, KM_ERR_FORMAT, "bad escape");
      }
    } else if (c < 0x80) {
      o[n++] = (char)c;
      ps->p++;
    } else {
      size_t l = km_utf8_len(ps->p, (size_t)(q - ps->p));
      if (!l) return fail(ps, KM_ERR_FORMAT, "invalid UTF-8 in string");
      memcpy(o + n, ps->p, l);
      n += l;
      ps->p += l;
    }
  }
  o[n] = 0;
  ps->p = q + 1;
  *out = o;
  *out_len = (uint32_t)n;
  return KM_OK;
}

static int is_digit(unsigned c) { return c >= '0' && c <= '9'; }

static km_code parse_number(parser *ps, km_json *v) {
  const unsigned char *s = ps->p, *p = s;
  int is_int = 1;
  if (p < ps->end && *p == '-') p++;
  if (p >= ps->end || !is_digit(*p)) return fail(ps, KM_ERR_FORMAT, "bad number");
  if (*p == '0') {
    p++;
    if (p < ps->end && is_digit(*p)) return fail(ps, KM_ERR_FORMAT, "leading zero");
  } else {
    while (p < ps->end && is_digit(*p)) p++;
  }
  if (p < ps->end && *p == '.') {
    is_int = 0;
    p++;
    if (p >= ps->end || !is_digit(*p)) return fail(ps, KM_ERR_FORMAT, "bad fraction");
    while (p < ps->end && is_digit(*p)) p++;
  }
  if (p < ps->end && (*p == 'e' || *p == 'E')) {
    is_int = 0;
    p++;
    if (p < ps->end && (*p == '+' || *p == '-')) p++;
    if (p >= ps->end || !is_digit(*p)) return fail(ps, KM_ERR_FORMAT, "bad exponent");
    while (p < ps->end && is_digit(*p)) p++;
  }
  size_t n = (size_t)(p - s);
  if (n > 64) return fail(ps, KM_ERR_LIMIT, "number longer than 64 bytes");
  char buf[72];
  memcpy(buf, s, n);
  buf[n] = 0;
  v->type = KM_JSON_NUMBER;
  v->u.num = strtod(buf, NULL);
  v->is_int = 0;
  v->i = 0;
  if (is_int) {
    /* Exact int64 parse; values outside int64 stay doubles only. */
    const char *d = buf + (buf[0] == '-');
    uint64_t acc = 0, lim = buf[0] == '-' ? (uint64_t)INT64_MAX + 1 : INT64_MAX;
    int ok = 1;
    for (; *d; d++) {
      unsigned dig = (unsigned)(*d - '0');
      if (acc > (lim - dig) / 10) { ok = 0; break; }
      acc = acc * 10 + dig;
    }
    if (ok) {
      v->is_int = 1;
      v->i = buf[0] == '-' ? (int64_t)(0 - acc) : (int64_t)acc;
    }
  }
  ps->p = p;
  return KM_OK;
}

static km_code push(parser *ps, km_json_member **out) {
  if (ps->top == ps->cap) {
    size_t cap = ps->cap ? ps->cap * 2 : 256;
    km_json_member *s = realloc(ps->stack, cap * sizeof *s);
    if (!s) return fail(ps, KM_ERR_NOMEM, "out of memory");
    ps->stack = s;
    ps->cap = cap;
  }
  *out = &ps->stack[ps->top++];
  memset(*out, 0, sizeof **out);
  return KM_OK;
}

static uint64_t hash_key(const char *s, uint32_t n) {
  uint64_t h = 1469598103934665603ull;
  for (uint32_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

/* Duplicate keys: linear for small objects, a temporary hash set above. */
static km_code check_duplicates(parser *ps, const km_json_member *m, size_t n) {
  if (n < 2) return KM_OK;
  if (n <= 16) {
    for (size_t i = 1; i < n; i++)
      for (size_t j = 0; j < i; j++)
        if (m[i].key_len == m[j].key_len && !memcmp(m[i].key, m[j].key, m[i].key_len))
          return km_fail(ps->err, KM_ERR_FORMAT, "JSON: duplicate key \"%.64s\"", m[i].key);
    return KM_OK;
  }
  size_t cap = 32;
  while (cap < n * 2) cap *= 2;
  uint32_t *slots = calloc(cap, sizeof *slots); /* index + 1 */
  if (!slots) return fail(ps, KM_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    size_t h = (size_t)hash_key(m[i].key, m[i].key_len) & (cap - 1);
    while (slots[h]) {
      const km_json_member *o = &m[slots[h] - 1];
      if (o->key_len == m[i].key_len && !memcmp(o->key, m[i].key, o->key_len)) {
        free(slots);
        return km_fail(ps->err, KM_ERR_FORMAT, "JSON: duplicate key \"%.64s\"", m[i].key);
      }
      h = (h + 1) & (cap - 1);
    }
    slots[h] = (uint32_t)(i + 1);
  }
  free(slots);
  return KM_OK;
}

static km_code parse_value(parser *ps, km_json *v);

static km_code parse_container(parser *ps, km_json *v, int is_object) {
  if (++ps->depth > ps->max_depth)
    return fail(ps, KM_ERR_LIMIT, "nesting deeper than the limit");
  unsigned char close = is_object ? '}' : ']';
  size_t base = ps->top;
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
  } else {
    for (;;) {
      km_json_member *m;
      km_code c = push(ps, &m);
      if (c) return c;
      size_t idx = ps->top - 1;
      if (is_object) {
        skip_ws(ps);
        if (ps->p >= ps->end) return fail(ps, KM_ERR_TRUNCATED, "unexpected end");
        if (*ps->p != '"') return fail(ps, KM_ERR_FORMAT, "expected a key");
        const char *k;
        uint32_t kl;
        if ((c = parse_string(ps, &k, &kl))) return c;
        ps->stack[idx].key = k;
        ps->stack[idx].key_len = kl;
        skip_ws(ps);
        if (ps->p >= ps->end) return fail(ps, KM_ERR_TRUNCATED, "unexpected end");
        if (*ps->p != ':') return fail(ps, KM_ERR_FORMAT, "expected ':'");
        ps->p++;
      }
      km_json val;
      if ((c = parse_value(ps, &val))) return c;
      ps->stack[idx].value = val; /* the stack may have moved */
      skip_ws(ps);
      if (ps->p >= ps->end) return fail(ps, KM_ERR_TRUNCATED, "unexpected end");
      if (*ps->p == ',') { ps->p++; continue; }
      if (*ps->p == close) { ps->p++; break; }
      return fail(ps, KM_ERR_FORMAT, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
  }
  size_t n = ps->top - base;
  if (n > UINT32_MAX) return fail(ps, KM_ERR_LIMIT, "container too large");
  v->len = (uint32_t)n;
  v->is_int = 0;
  v->i = 0;
  if (is_object) {
    km_code c = check_duplicates(ps, ps->stack + base, n);
    if (c) return c;
    v->type = KM_JSON_OBJECT;
    v->u.members = n ? arena_alloc(ps->doc, n * sizeof(km_json_member)) : NULL;
    if (n && !v->u.members) return fail(ps, KM_ERR_NOMEM, "out of memory");
    if (n) memcpy(v->u.members, ps->stack + base, n * sizeof(km_json_member));
  } else {
    v->type = KM_JSON_ARRAY;
    v->u.items = n ? arena_alloc(ps->doc, n * sizeof(km_json)) : NULL;
    if (n && !v->u.items) return fail(ps, KM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) v->u.items[i] = ps->stack[base + i].value;
  }
  ps->top = base;
  ps->depth--;
  return KM_OK;
}

static km_code literal(parser *ps, const char *word, km_json *v, km_json_type t) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n) {
    if (!memcmp(ps->p, word, (size_t)(ps->end - ps->p)))
      return fail(ps, KM_ERR_TRUNCATED, "unexpected end");
    return fail(ps, KM_ERR_FORMAT, "unexpected character");
  }
  if (memcmp(ps->p, word, n)) return fail(ps, KM_ERR_FORMAT, "unexpected character");
  ps->p += n;
  memset(v, 0, sizeof *v);
  v->type = (uint8_t)t;
  return KM_OK;
}

static km_code parse_value(parser *ps, km_json *v) {
  skip_ws(ps);
  if (ps->p >= ps->end) return fail(ps, KM_ERR_TRUNCATED, "unexpected end");
  switch (*ps->p) {
    case '{': return parse_container(ps, v, 1);
    case '[': return parse_container(ps, v, 0);
    case '"': {
      memset(v, 0, sizeof *v);
      v->type = KM_JSON_STRING;
      return parse_string(ps, &v->u.str, &v->len);
    }
    case 't': return literal(ps, "true", v, KM_JSON_TRUE);
    case 'f': return literal(ps, "false", v, KM_JSON_FALSE);
    case 'n': return literal(ps, "null", v, KM_JSON_NULL);
    default:
      if (*ps->p == '-' || is_digit(*ps->p)) {
        memset(v, 0, sizeof *v);
        return parse_number(ps, v);
      }
      return fail(ps, KM_ERR_FORMAT, "unexpected character");
  }
}

void km_json_free(km_json_doc *doc) {
  if (!doc) return;
  arena_block *b = doc->blocks;
  while (b) {
    arena_block *n = b->next;
    free(b);
    b = n;
  }
  free(doc);
}

km_code km_json_parse(const char *text, size_t len, const km_json_limits *limits,
                      km_json_doc **out, km_error *err) {
  *out = NULL;
  uint32_t max_depth = limits && limits->max_depth ? limits->max_depth : 64;
  uint64_t max_bytes = limits && limits->max_bytes ? limits->max_bytes : (1ull << 30);
  if (!text && len) return km_fail(err, KM_ERR_ARGUMENT, "JSON: NULL text");
  if (len > max_bytes)
    return km_fail(err, KM_ERR_LIMIT, "JSON: %zu bytes exceeds the limit of %llu",
                   len, (unsigned long long)max_bytes);
  km_json_doc *doc = calloc(1, sizeof *doc);
  if (!doc) return km_fail(err, KM_ERR_NOMEM, "JSON: out of memory");
  const unsigned char *t = (const unsigned char *)(text ? text : "");
  parser ps = {t, t, t + len, doc, NULL, 0, 0, 0, max_depth, err};
  km_code c = parse_value(&ps, &doc->root);
  if (!c) {
    skip_ws(&ps);
    if (ps.p != ps.end) c = fail(&ps, KM_ERR_FORMAT, "trailing characters after the value");
  }
  free(ps.stack);
  if (c) {
    km_json_free(doc);
    return c;
  }
  *out = doc;
  return KM_OK;
}

const km_json *km_json_root(const km_json_doc *doc) { return doc ? &doc->root : NULL; }

const km_json *km_json_get(const km_json *o, const char *key) {
  if (!o || o->type != KM_JSON_OBJECT) return NULL;
  size_t kl = strlen(key);
  for (uint32_t i = 0; i < o->len; i++)
    if (o->u.members[i].key_len == kl && !memcmp(o->u.members[i].key, key, kl))
      return &o->u.members[i].value;
  return NULL;
}

const km_json *km_json_at(const km_json *a, size_t i) {
  if (!a || a->type != KM_JSON_ARRAY || i >= a->len) return NULL;
  return &a->u.items[i];
}

bool km_json_is(const km_json *v, km_json_type t) { return v && v->type == t; }

const char *km_json_str(const km_json *v) {
  return v && v->type == KM_JSON_STRING ? v->u.str : NULL;
}

bool km_json_int(const km_json *v, int64_t *out) {
  if (!v || v->type != KM_JSON_NUMBER) return false;
  if (v->is_int) { *out = v->i; return true; }
  double d = v->u.num;
  if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double)(int64_t)d) {
    *out = (int64_t)d;
    return true;
  }
  return false;
}

bool km_json_num(const km_json *v, double *out) {
  if (!v || v->type != KM_JSON_NUMBER) return false;
  *out = v->u.num;
  return true;
}

bool km_json_bool(const km_json *v, bool *out) {
  if (!v || (v->type != KM_JSON_TRUE && v->type != KM_JSON_FALSE)) return false;
  *out = v->type == KM_JSON_TRUE;
  return true;
}
