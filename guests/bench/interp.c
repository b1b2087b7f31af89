/* tl: a tiny scripting language, compiled to bytecode and run on a stack VM.
 *
 * This program is the "~1000-line C program" of kiln's compile-time
 * benchmark (bench/bench_engine.c): it is built for wasm32-wasi with clang,
 * then compiled by kiln (wasm2c + cc). It is written like real code (a
 * single-pass Pratt compiler in the style of clox, a VM with call frames,
 * strings, arrays and a global hash table) so that its compile time says
 * something about programs people write. It also runs: with no arguments it
 * executes a built-in script and prints a checksum; with a file argument it
 * runs that file.
 *
 * Language:
 *   let x = expr;            fn name(a, b) { ... }      return expr;
 *   if (c) { ... } else { ... }     while (c) { ... }   print(expr);
 *   numbers (double), strings "..", true/false/nil, arrays [a, b],
 *   a[i], a[i] = v, + - * / % == != < <= > >= && || ! and unary -.
 *   Builtins: len(x), push(arr, v), str(n), sqrt(n), floor(n).
 * Memory is never freed before exit (no GC): scripts are short-lived. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Values ------------------------------------------------------------- */

typedef enum { V_NIL, V_BOOL, V_NUM, V_STR, V_ARR, V_FN, V_NATIVE } vtype;

typedef struct str {
  uint32_t hash;
  int len;
  char chars[];
} str;

struct arr;
struct func;
struct value;
typedef struct value (*native_fn)(int argc, struct value *args);

typedef struct value {
  vtype type;
  union {
    int b;
    double n;
    str *s;
    struct arr *a;
    struct func *f;
    native_fn native;
  } as;
} value;

typedef struct arr {
  int count, cap;
  value *items;
} arr;

typedef struct chunk {
  int count, cap;
  uint8_t *code;
  int *lines;
  int nconst, capconst;
  value *consts;
} chunk;

typedef struct func {
  int arity;
  str *name;
  chunk code;
} func;

static value nil_val(void) { return (value){.type = V_NIL}; }
static value bool_val(int b) { return (value){.type = V_BOOL, .as.b = !!b}; }
static value num_val(double n) { return (value){.type = V_NUM, .as.n = n}; }
static value str_val(str *s) { return (value){.type = V_STR, .as.s = s}; }
static value arr_val(arr *a) { return (value){.type = V_ARR, .as.a = a}; }
static value fn_val(func *f) { return (value){.type = V_FN, .as.f = f}; }

static void *xalloc(size_t n) {
  void *p = calloc(1, n ? n : 1);
  if (!p) {
    fprintf(stderr, "tl: out of memory\n");
    exit(70);
  }
  return p;
}

static void *xgrow(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) {
    fprintf(stderr, "tl: out of memory\n");
    exit(70);
  }
  return q;
}

/* ---- Strings: FNV-1a hashed, interned so equality is pointer equality ----- */

static uint32_t fnv1a(const char *s, int n) {
  uint32_t h = 2166136261u;
  for (int i = 0; i < n; i++) {
    h ^= (uint8_t)s[i];
    h *= 16777619u;
  }
  return h;
}

typedef struct table_entry {
  str *key;
  value val;
} table_entry;

typedef struct table {
  int count, cap;
  table_entry *entries;
} table;

static table strings; /* interned strings (values unused) */
static table globals;

static table_entry *table_find(table_entry *entries, int cap, str *key) {
  uint32_t i = key->hash & (uint32_t)(cap - 1);
  for (;;) {
    table_entry *e = &entries[i];
    if (e->key == key || e->key == NULL) return e;
    i = (i + 1) & (uint32_t)(cap - 1);
  }
}

static void table_grow(table *t) {
  int cap = t->cap ? t->cap * 2 : 16;
  table_entry *entries = xalloc(sizeof(table_entry) * (size_t)cap);
  for (int i = 0; i < t->cap; i++) {
    table_entry *old = &t->entries[i];
    if (!old->key) continue;
    table_entry *e = table_find(entries, cap, old->key);
    *e = *old;
  }
  free(t->entries);
  t->entries = entries;
  t->cap = cap;
}

static int table_get(table *t, str *key, value *out) {
  if (!t->count) return 0;
  table_entry *e = table_find(t->entries, t->cap, key);
  if (!e->key) return 0;
  *out = e->val;
  return 1;
}

/* Returns 1 if the key is new. */
static int table_set(table *t, str *key, value v) {
  if ((t->count + 1) * 4 > t->cap * 3) table_grow(t);
  table_entry *e = table_find(t->entries, t->cap, key);
  int is_new = e->key == NULL;
  if (is_new) t->count++;
  e->key = key;
  e->val = v;
  return is_new;
}

static str *intern(const char *chars, int len) {
  uint32_t h = fnv1a(chars, len);
  if (strings.count) {
    uint32_t i = h & (uint32_t)(strings.cap - 1);
    for (;;) {
      table_entry *e = &strings.entries[i];
      if (!e->key) break;
      if (e->key->hash == h && e->key->len == len &&
          memcmp(e->key->chars, chars, (size_t)len) == 0)
        return e->key;
      i = (i + 1) & (uint32_t)(strings.cap - 1);
    }
  }
  str *s = xalloc(sizeof(str) + (size_t)len + 1);
  s->hash = h;
  s->len = len;
  memcpy(s->chars, chars, (size_t)len);
  s->chars[len] = 0;
  table_set(&strings, s, nil_val());
  return s;
}

static str *concat(str *a, str *b) {
  int n = a->len + b->len;
  char *buf = xalloc((size_t)n + 1);
  memcpy(buf, a->chars, (size_t)a->len);
  memcpy(buf + a->len, b->chars, (size_t)b->len);
  str *s = intern(buf, n);
  free(buf);
  return s;
}

static str *number_str(double n) {
  char buf[32];
  int len;
  if (n == floor(n) && fabs(n) < 1e15)
    len = snprintf(buf, sizeof buf, "%.0f", n);
  else
    len = snprintf(buf, sizeof buf, "%.6g", n);
  return intern(buf, len);
}

static int truthy(value v) {
  return !(v.type == V_NIL || (v.type == V_BOOL && !v.as.b));
}

static int values_equal(value a, value b) {
  if (a.type != b.type) return 0;
  switch (a.type) {
    case V_NIL: return 1;
    case V_BOOL: return a.as.b == b.as.b;
    case V_NUM: return a.as.n == b.as.n;
    case V_STR: return a.as.s == b.as.s;
    case V_ARR: return a.as.a == b.as.a;
    case V_FN: return a.as.f == b.as.f;
    case V_NATIVE: return a.as.native == b.as.native;
  }
  return 0;
}

static void print_value(FILE *out, value v) {
  switch (v.type) {
    case V_NIL: fputs("nil", out); break;
    case V_BOOL: fputs(v.as.b ? "true" : "false", out); break;
    case V_NUM: fputs(number_str(v.as.n)->chars, out); break;
    case V_STR: fputs(v.as.s->chars, out); break;
    case V_ARR:
      fputc('[', out);
      for (int i = 0; i < v.as.a->count; i++) {
        if (i) fputs(", ", out);
        print_value(out, v.as.a->items[i]);
      }
      fputc(']', out);
      break;
    case V_FN: fprintf(out, "<fn %s>", v.as.f->name ? v.as.f->name->chars : "script"); break;
    case V_NATIVE: fputs("<native>", out); break;
  }
}

static void arr_push(arr *a, value v) {
  if (a->count == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 8;
    a->items = xgrow(a->items, sizeof(value) * (size_t)a->cap);
  }
  a->items[a->count++] = v;
}

/* ---- Bytecode ------------------------------------------------------------- */

typedef enum {
  OP_CONST, OP_NIL, OP_TRUE, OP_FALSE, OP_POP,
  OP_GET_LOCAL, OP_SET_LOCAL, OP_GET_GLOBAL, OP_SET_GLOBAL, OP_DEF_GLOBAL,
  OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MOD, OP_NEG, OP_NOT,
  OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
  OP_JUMP, OP_JUMP_IF_FALSE, OP_LOOP, OP_CALL, OP_RETURN,
  OP_ARRAY, OP_INDEX_GET, OP_INDEX_SET, OP_PRINT,
} opcode;

static const char *const op_names[] = {
    "CONST", "NIL", "TRUE", "FALSE", "POP", "GET_LOCAL", "SET_LOCAL",
    "GET_GLOBAL", "SET_GLOBAL", "DEF_GLOBAL", "ADD", "SUB", "MUL", "DIV",
    "MOD", "NEG", "NOT", "EQ", "NE", "LT", "LE", "GT", "GE", "JUMP",
    "JUMP_IF_FALSE", "LOOP", "CALL", "RETURN", "ARRAY", "INDEX_GET",
    "INDEX_SET", "PRINT"};

static void chunk_write(chunk *c, uint8_t byte, int line) {
  if (c->count == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 64;
    c->code = xgrow(c->code, (size_t)c->cap);
    c->lines = xgrow(c->lines, sizeof(int) * (size_t)c->cap);
  }
  c->code[c->count] = byte;
  c->lines[c->count] = line;
  c->count++;
}

static int chunk_const(chunk *c, value v) {
  for (int i = 0; i < c->nconst; i++)
    if (c->consts[i].type == v.type && values_equal(c->consts[i], v)) return i;
  if (c->nconst == c->capconst) {
    c->capconst = c->capconst ? c->capconst * 2 : 16;
    c->consts = xgrow(c->consts, sizeof(value) * (size_t)c->capconst);
  }
  c->consts[c->nconst] = v;
  return c->nconst++;
}

/* Disassembly, for `tl -d file`. */
static int disasm_op(const chunk *c, int at) {
  uint8_t op = c->code[at];
  printf("%04d %4d %-14s", at, c->lines[at], op <= OP_PRINT ? op_names[op] : "?");
  switch (op) {
    case OP_CONST:
    case OP_GET_GLOBAL:
    case OP_SET_GLOBAL:
    case OP_DEF_GLOBAL:
      printf(" %d (", c->code[at + 1]);
      print_value(stdout, c->consts[c->code[at + 1]]);
      printf(")\n");
      return at + 2;
    case OP_GET_LOCAL:
    case OP_SET_LOCAL:
    case OP_CALL:
    case OP_ARRAY:
      printf(" %d\n", c->code[at + 1]);
      return at + 2;
    case OP_JUMP:
    case OP_JUMP_IF_FALSE:
    case OP_LOOP: {
      int off = (c->code[at + 1] << 8) | c->code[at + 2];
      printf(" -> %d\n", op == OP_LOOP ? at + 3 - off : at + 3 + off);
      return at + 3;
    }
    default:
      printf("\n");
      return at + 1;
  }
}

static void disasm(const func *f) {
  printf("== %s ==\n", f->name ? f->name->chars : "<script>");
  for (int at = 0; at < f->code.count;) at = disasm_op(&f->code, at);
  for (int i = 0; i < f->code.nconst; i++)
    if (f->code.consts[i].type == V_FN) disasm(f->code.consts[i].as.f);
}

/* ---- Lexer ---------------------------------------------------------------- */

typedef enum {
  T_LPAREN, T_RPAREN, T_LBRACE, T_RBRACE, T_LBRACKET, T_RBRACKET,
  T_COMMA, T_SEMI, T_PLUS, T_MINUS, T_STAR, T_SLASH, T_PERCENT,
  T_BANG, T_BANG_EQ, T_EQ, T_EQ_EQ, T_LT, T_LE, T_GT, T_GE,
  T_AND, T_OR, T_IDENT, T_STRING, T_NUMBER,
  T_LET, T_FN, T_IF, T_ELSE, T_WHILE, T_RETURN, T_TRUE, T_FALSE, T_NIL,
  T_PRINT, T_ERROR, T_EOF,
} ttype;

typedef struct token {
  ttype type;
  const char *start;
  int len;
  int line;
} token;

typedef struct lexer {
  const char *start, *cur;
  int line;
} lexer;

static lexer lex;

static int is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_digit(char c) { return c >= '0' && c <= '9'; }

static token make_token(ttype t) {
  return (token){t, lex.start, (int)(lex.cur - lex.start), lex.line};
}

static token error_token(const char *msg) {
  return (token){T_ERROR, msg, (int)strlen(msg), lex.line};
}

static int match_char(char c) {
  if (*lex.cur != c) return 0;
  lex.cur++;
  return 1;
}

static void skip_space(void) {
  for (;;) {
    char c = *lex.cur;
    if (c == ' ' || c == '\t' || c == '\r') {
      lex.cur++;
    } else if (c == '\n') {
      lex.line++;
      lex.cur++;
    } else if (c == '/' && lex.cur[1] == '/') {
      while (*lex.cur && *lex.cur != '\n') lex.cur++;
    } else {
      return;
    }
  }
}

static ttype keyword(const char *s, int n) {
  static const struct {
    const char *word;
    ttype type;
  } words[] = {{"let", T_LET},       {"fn", T_FN},       {"if", T_IF},
               {"else", T_ELSE},     {"while", T_WHILE}, {"return", T_RETURN},
               {"true", T_TRUE},     {"false", T_FALSE}, {"nil", T_NIL},
               {"print", T_PRINT}};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if ((int)strlen(words[i].word) == n && memcmp(words[i].word, s, (size_t)n) == 0)
      return words[i].type;
  return T_IDENT;
}

static token next_token(void) {
  skip_space();
  lex.start = lex.cur;
  char c = *lex.cur;
  if (!c) return make_token(T_EOF);
  lex.cur++;
  if (is_alpha(c)) {
    while (is_alpha(*lex.cur) || is_digit(*lex.cur)) lex.cur++;
    return make_token(keyword(lex.start, (int)(lex.cur - lex.start)));
  }
  if (is_digit(c)) {
    while (is_digit(*lex.cur)) lex.cur++;
    if (*lex.cur == '.' && is_digit(lex.cur[1])) {
      lex.cur++;
      while (is_digit(*lex.cur)) lex.cur++;
    }
    return make_token(T_NUMBER);
  }
  switch (c) {
    case '(': return make_token(T_LPAREN);
    case ')': return make_token(T_RPAREN);
    case '{': return make_token(T_LBRACE);
    case '}': return make_token(T_RBRACE);
    case '[': return make_token(T_LBRACKET);
    case ']': return make_token(T_RBRACKET);
    case ',': return make_token(T_COMMA);
    case ';': return make_token(T_SEMI);
    case '+': return make_token(T_PLUS);
    case '-': return make_token(T_MINUS);
    case '*': return make_token(T_STAR);
    case '/': return make_token(T_SLASH);
    case '%': return make_token(T_PERCENT);
    case '!': return make_token(match_char('=') ? T_BANG_EQ : T_BANG);
    case '=': return make_token(match_char('=') ? T_EQ_EQ : T_EQ);
    case '<': return make_token(match_char('=') ? T_LE : T_LT);
    case '>': return make_token(match_char('=') ? T_GE : T_GT);
    case '&':
      if (match_char('&')) return make_token(T_AND);
      return error_token("expected '&&'");
    case '|':
      if (match_char('|')) return make_token(T_OR);
      return error_token("expected '||'");
    case '"':
      while (*lex.cur && *lex.cur != '"') {
        if (*lex.cur == '\n') lex.line++;
        if (*lex.cur == '\\' && lex.cur[1]) lex.cur++;
        lex.cur++;
      }
      if (!*lex.cur) return error_token("unterminated string");
      lex.cur++;
      return make_token(T_STRING);
  }
  return error_token("unexpected character");
}

/* ---- Compiler: single pass, Pratt parsing straight to bytecode ------------ */

typedef struct local {
  token name;
  int depth;
} local;

typedef struct compiler {
  struct compiler *enclosing;
  func *fn;
  local locals[256];
  int nlocals;
  int depth;
} compiler;

typedef struct parser {
  token cur, prev;
  int had_error, panic;
} parser;

static parser P;
static compiler *C;

typedef enum {
  PREC_NONE, PREC_ASSIGN, PREC_OR, PREC_AND, PREC_EQUALITY,
  PREC_COMPARE, PREC_TERM, PREC_FACTOR, PREC_UNARY, PREC_CALL, PREC_PRIMARY,
} precedence;

typedef void (*parse_fn)(int can_assign);

typedef struct rule {
  parse_fn prefix, infix;
  precedence prec;
} rule;

static void error_at(token *t, const char *msg) {
  if (P.panic) return;
  P.panic = 1;
  P.had_error = 1;
  fprintf(stderr, "line %d: error", t->line);
  if (t->type == T_EOF)
    fprintf(stderr, " at end");
  else if (t->type != T_ERROR)
    fprintf(stderr, " at '%.*s'", t->len, t->start);
  fprintf(stderr, ": %s\n", msg);
}

static void advance(void) {
  P.prev = P.cur;
  for (;;) {
    P.cur = next_token();
    if (P.cur.type != T_ERROR) break;
    error_at(&P.cur, P.cur.start);
  }
}

static void expect(ttype t, const char *msg) {
  if (P.cur.type == t) {
    advance();
    return;
  }
  error_at(&P.cur, msg);
}

static int check(ttype t) { return P.cur.type == t; }

static int match(ttype t) {
  if (!check(t)) return 0;
  advance();
  return 1;
}

static chunk *cur_chunk(void) { return &C->fn->code; }
static void emit(uint8_t b) { chunk_write(cur_chunk(), b, P.prev.line); }
static void emit2(uint8_t a, uint8_t b) {
  emit(a);
  emit(b);
}

static uint8_t make_const(value v) {
  int k = chunk_const(cur_chunk(), v);
  if (k > 255) {
    error_at(&P.prev, "too many constants in one function");
    return 0;
  }
  return (uint8_t)k;
}

static int emit_jump(uint8_t op) {
  emit(op);
  emit(0xff);
  emit(0xff);
  return cur_chunk()->count - 2;
}

static void patch_jump(int at) {
  int off = cur_chunk()->count - at - 2;
  if (off > 0xffff) error_at(&P.prev, "jump too long");
  cur_chunk()->code[at] = (uint8_t)(off >> 8);
  cur_chunk()->code[at + 1] = (uint8_t)off;
}

static void emit_loop(int start) {
  emit(OP_LOOP);
  int off = cur_chunk()->count - start + 2;
  if (off > 0xffff) error_at(&P.prev, "loop too long");
  emit((uint8_t)(off >> 8));
  emit((uint8_t)off);
}

static void compiler_begin(compiler *c, str *name) {
  c->enclosing = C;
  c->fn = xalloc(sizeof(func));
  c->fn->name = name;
  c->nlocals = 1; /* slot 0: the function itself */
  c->locals[0].name.start = "";
  c->locals[0].name.len = 0;
  c->locals[0].depth = 0;
  c->depth = 0;
  C = c;
}

static func *compiler_end(void) {
  emit(OP_NIL);
  emit(OP_RETURN);
  func *f = C->fn;
  C = C->enclosing;
  return f;
}

static void expression(void);
static void statement(void);
static void declaration(void);
static rule *get_rule(ttype t);
static void parse_prec(precedence p);

static uint8_t ident_const(token *name) {
  return make_const(str_val(intern(name->start, name->len)));
}

static int ident_eq(token *a, token *b) {
  return a->len == b->len && memcmp(a->start, b->start, (size_t)a->len) == 0;
}

static int resolve_local(compiler *c, token *name) {
  for (int i = c->nlocals - 1; i >= 0; i--) {
    if (ident_eq(name, &c->locals[i].name)) {
      if (c->locals[i].depth < 0)
        error_at(&P.prev, "a variable cannot be read in its own initializer");
      return i;
    }
  }
  return -1;
}

static void add_local(token name) {
  if (C->nlocals == 256) {
    error_at(&P.prev, "too many local variables");
    return;
  }
  for (int i = C->nlocals - 1; i >= 0 && C->locals[i].depth >= C->depth; i--)
    if (ident_eq(&name, &C->locals[i].name))
      error_at(&P.prev, "variable already declared in this scope");
  C->locals[C->nlocals].name = name;
  C->locals[C->nlocals].depth = -1;
  C->nlocals++;
}

static uint8_t declare_var(const char *msg) {
  expect(T_IDENT, msg);
  if (C->depth > 0) {
    add_local(P.prev);
    return 0;
  }
  return ident_const(&P.prev);
}

static void define_var(uint8_t global) {
  if (C->depth > 0) {
    C->locals[C->nlocals - 1].depth = C->depth;
    return;
  }
  emit2(OP_DEF_GLOBAL, global);
}

static void begin_scope(void) { C->depth++; }

static void end_scope(void) {
  C->depth--;
  while (C->nlocals > 0 && C->locals[C->nlocals - 1].depth > C->depth) {
    emit(OP_POP);
    C->nlocals--;
  }
}

/* Prefix and infix parse functions. */

static void number(int can_assign) {
  (void)can_assign;
  emit2(OP_CONST, make_const(num_val(strtod(P.prev.start, NULL))));
}

static void string(int can_assign) {
  (void)can_assign;
  /* Unescape \n, \t, \", \\ into a temporary buffer. */
  const char *s = P.prev.start + 1;
  int n = P.prev.len - 2;
  char *buf = xalloc((size_t)n + 1);
  int k = 0;
  for (int i = 0; i < n; i++) {
    char c = s[i];
    if (c == '\\' && i + 1 < n) {
      c = s[++i];
      c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
    }
    buf[k++] = c;
  }
  emit2(OP_CONST, make_const(str_val(intern(buf, k))));
  free(buf);
}

static void literal(int can_assign) {
  (void)can_assign;
  switch (P.prev.type) {
    case T_TRUE: emit(OP_TRUE); break;
    case T_FALSE: emit(OP_FALSE); break;
    default: emit(OP_NIL); break;
  }
}

static void grouping(int can_assign) {
  (void)can_assign;
  expression();
  expect(T_RPAREN, "expected ')' after expression");
}

static void variable(int can_assign) {
  token name = P.prev;
  uint8_t get, set;
  int arg = resolve_local(C, &name);
  if (arg >= 0) {
    get = OP_GET_LOCAL;
    set = OP_SET_LOCAL;
  } else {
    arg = ident_const(&name);
    get = OP_GET_GLOBAL;
    set = OP_SET_GLOBAL;
  }
  if (can_assign && match(T_EQ)) {
    expression();
    emit2(set, (uint8_t)arg);
  } else {
    emit2(get, (uint8_t)arg);
  }
}

static void unary(int can_assign) {
  (void)can_assign;
  ttype op = P.prev.type;
  parse_prec(PREC_UNARY);
  emit(op == T_MINUS ? OP_NEG : OP_NOT);
}

static void binary(int can_assign) {
  (void)can_assign;
  ttype op = P.prev.type;
  parse_prec((precedence)(get_rule(op)->prec + 1));
  switch (op) {
    case T_PLUS: emit(OP_ADD); break;
    case T_MINUS: emit(OP_SUB); break;
    case T_STAR: emit(OP_MUL); break;
    case T_SLASH: emit(OP_DIV); break;
    case T_PERCENT: emit(OP_MOD); break;
    case T_EQ_EQ: emit(OP_EQ); break;
    case T_BANG_EQ: emit(OP_NE); break;
    case T_LT: emit(OP_LT); break;
    case T_LE: emit(OP_LE); break;
    case T_GT: emit(OP_GT); break;
    case T_GE: emit(OP_GE); break;
    default: break;
  }
}

static void and_(int can_assign) {
  (void)can_assign;
  int end = emit_jump(OP_JUMP_IF_FALSE);
  emit(OP_POP);
  parse_prec(PREC_AND);
  patch_jump(end);
}

static void or_(int can_assign) {
  (void)can_assign;
  int else_jump = emit_jump(OP_JUMP_IF_FALSE);
  int end = emit_jump(OP_JUMP);
  patch_jump(else_jump);
  emit(OP_POP);
  parse_prec(PREC_OR);
  patch_jump(end);
}

static void call(int can_assign) {
  (void)can_assign;
  int argc = 0;
  if (!check(T_RPAREN)) {
    do {
      expression();
      if (++argc > 255) error_at(&P.prev, "too many arguments");
    } while (match(T_COMMA));
  }
  expect(T_RPAREN, "expected ')' after arguments");
  emit2(OP_CALL, (uint8_t)argc);
}

static void array_lit(int can_assign) {
  (void)can_assign;
  int n = 0;
  if (!check(T_RBRACKET)) {
    do {
      expression();
      if (++n > 255) error_at(&P.prev, "too many array elements");
    } while (match(T_COMMA));
  }
  expect(T_RBRACKET, "expected ']' after array elements");
  emit2(OP_ARRAY, (uint8_t)n);
}

static void index_(int can_assign) {
  expression();
  expect(T_RBRACKET, "expected ']' after index");
  if (can_assign && match(T_EQ)) {
    expression();
    emit(OP_INDEX_SET);
  } else {
    emit(OP_INDEX_GET);
  }
}

static rule rules[] = {
    [T_LPAREN] = {grouping, call, PREC_CALL},
    [T_LBRACKET] = {array_lit, index_, PREC_CALL},
    [T_MINUS] = {unary, binary, PREC_TERM},
    [T_PLUS] = {NULL, binary, PREC_TERM},
    [T_STAR] = {NULL, binary, PREC_FACTOR},
    [T_SLASH] = {NULL, binary, PREC_FACTOR},
    [T_PERCENT] = {NULL, binary, PREC_FACTOR},
    [T_BANG] = {unary, NULL, PREC_NONE},
    [T_BANG_EQ] = {NULL, binary, PREC_EQUALITY},
    [T_EQ_EQ] = {NULL, binary, PREC_EQUALITY},
    [T_LT] = {NULL, binary, PREC_COMPARE},
    [T_LE] = {NULL, binary, PREC_COMPARE},
    [T_GT] = {NULL, binary, PREC_COMPARE},
    [T_GE] = {NULL, binary, PREC_COMPARE},
    [T_AND] = {NULL, and_, PREC_AND},
    [T_OR] = {NULL, or_, PREC_OR},
    [T_IDENT] = {variable, NULL, PREC_NONE},
    [T_STRING] = {string, NULL, PREC_NONE},
    [T_NUMBER] = {number, NULL, PREC_NONE},
    [T_TRUE] = {literal, NULL, PREC_NONE},
    [T_FALSE] = {literal, NULL, PREC_NONE},
    [T_NIL] = {literal, NULL, PREC_NONE},
    [T_EOF] = {NULL, NULL, PREC_NONE},
};

static rule *get_rule(ttype t) { return &rules[t]; }

static void parse_prec(precedence p) {
  advance();
  parse_fn prefix = get_rule(P.prev.type)->prefix;
  if (!prefix) {
    error_at(&P.prev, "expected an expression");
    return;
  }
  int can_assign = p <= PREC_ASSIGN;
  prefix(can_assign);
  while (p <= get_rule(P.cur.type)->prec) {
    advance();
    get_rule(P.prev.type)->infix(can_assign);
  }
  if (can_assign && match(T_EQ)) error_at(&P.prev, "invalid assignment target");
}

static void expression(void) { parse_prec(PREC_ASSIGN); }

static void block(void) {
  while (!check(T_RBRACE) && !check(T_EOF)) declaration();
  expect(T_RBRACE, "expected '}' after block");
}

static void function(str *name) {
  compiler c;
  compiler_begin(&c, name);
  begin_scope();
  expect(T_LPAREN, "expected '(' after function name");
  if (!check(T_RPAREN)) {
    do {
      if (++C->fn->arity > 255) error_at(&P.cur, "too many parameters");
      uint8_t k = declare_var("expected a parameter name");
      define_var(k);
    } while (match(T_COMMA));
  }
  expect(T_RPAREN, "expected ')' after parameters");
  expect(T_LBRACE, "expected '{' before function body");
  block();
  func *f = compiler_end();
  emit2(OP_CONST, make_const(fn_val(f)));
}

static void fn_decl(void) {
  uint8_t global = declare_var("expected a function name");
  str *name = intern(P.prev.start, P.prev.len);
  if (C->depth > 0) C->locals[C->nlocals - 1].depth = C->depth;
  function(name);
  define_var(global);
}

static void let_decl(void) {
  uint8_t global = declare_var("expected a variable name");
  if (match(T_EQ))
    expression();
  else
    emit(OP_NIL);
  expect(T_SEMI, "expected ';' after variable declaration");
  define_var(global);
}

static void if_stmt(void) {
  expect(T_LPAREN, "expected '(' after 'if'");
  expression();
  expect(T_RPAREN, "expected ')' after condition");
  int then_jump = emit_jump(OP_JUMP_IF_FALSE);
  emit(OP_POP);
  statement();
  int else_jump = emit_jump(OP_JUMP);
  patch_jump(then_jump);
  emit(OP_POP);
  if (match(T_ELSE)) statement();
  patch_jump(else_jump);
}

static void while_stmt(void) {
  int start = cur_chunk()->count;
  expect(T_LPAREN, "expected '(' after 'while'");
  expression();
  expect(T_RPAREN, "expected ')' after condition");
  int exit_jump = emit_jump(OP_JUMP_IF_FALSE);
  emit(OP_POP);
  statement();
  emit_loop(start);
  patch_jump(exit_jump);
  emit(OP_POP);
}

static void return_stmt(void) {
  if (C->enclosing == NULL) error_at(&P.prev, "'return' outside a function");
  if (match(T_SEMI)) {
    emit(OP_NIL);
  } else {
    expression();
    expect(T_SEMI, "expected ';' after return value");
  }
  emit(OP_RETURN);
}

static void synchronize(void) {
  P.panic = 0;
  while (P.cur.type != T_EOF) {
    if (P.prev.type == T_SEMI) return;
    switch (P.cur.type) {
      case T_LET: case T_FN: case T_IF: case T_WHILE: case T_RETURN:
      case T_PRINT:
        return;
      default:
        advance();
    }
  }
}

static void statement(void) {
  if (match(T_PRINT)) {
    expect(T_LPAREN, "expected '(' after 'print'");
    expression();
    expect(T_RPAREN, "expected ')'");
    expect(T_SEMI, "expected ';' after print");
    emit(OP_PRINT);
  } else if (match(T_IF)) {
    if_stmt();
  } else if (match(T_WHILE)) {
    while_stmt();
  } else if (match(T_RETURN)) {
    return_stmt();
  } else if (match(T_LBRACE)) {
    begin_scope();
    block();
    end_scope();
  } else {
    expression();
    expect(T_SEMI, "expected ';' after expression");
    emit(OP_POP);
  }
}

static void declaration(void) {
  if (match(T_FN))
    fn_decl();
  else if (match(T_LET))
    let_decl();
  else
    statement();
  if (P.panic) synchronize();
}

static func *compile(const char *source) {
  lex.start = lex.cur = source;
  lex.line = 1;
  P.had_error = P.panic = 0;
  compiler c;
  C = NULL;
  compiler_begin(&c, NULL);
  advance();
  while (!match(T_EOF)) declaration();
  func *f = compiler_end();
  return P.had_error ? NULL : f;
}

/* ---- VM -------------------------------------------------------------------- */

#define STACK_MAX 16384
#define FRAMES_MAX 256

typedef struct frame {
  func *fn;
  uint8_t *ip;
  value *slots;
} frame;

typedef struct vm {
  value stack[STACK_MAX];
  value *sp;
  frame frames[FRAMES_MAX];
  int nframes;
  uint64_t steps;
} vm;

static vm V;

static void push(value v) { *V.sp++ = v; }
static value pop(void) { return *--V.sp; }
static value peek(int d) { return V.sp[-1 - d]; }

static int runtime_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("runtime error: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  for (int i = V.nframes - 1; i >= 0; i--) {
    frame *f = &V.frames[i];
    int at = (int)(f->ip - f->fn->code.code) - 1;
    fprintf(stderr, "  line %d in %s\n", f->fn->code.lines[at],
            f->fn->name ? f->fn->name->chars : "script");
  }
  return 0;
}

static int call_value(value callee, int argc) {
  if (callee.type == V_NATIVE) {
    value r = callee.as.native(argc, V.sp - argc);
    V.sp -= argc + 1;
    push(r);
    return 1;
  }
  if (callee.type != V_FN) return runtime_error("can only call functions");
  func *f = callee.as.f;
  if (argc != f->arity)
    return runtime_error("%s expects %d arguments, got %d",
                         f->name ? f->name->chars : "function", f->arity, argc);
  if (V.nframes == FRAMES_MAX) return runtime_error("stack overflow");
  frame *fr = &V.frames[V.nframes++];
  fr->fn = f;
  fr->ip = f->code.code;
  fr->slots = V.sp - argc - 1;
  return 1;
}

static int index_check(value a, value i, int *out) {
  if (i.type != V_NUM) return runtime_error("index must be a number");
  int k = (int)i.as.n;
  int n = a.type == V_ARR ? a.as.a->count : a.as.s->len;
  if (k < 0 || k >= n) return runtime_error("index %d out of range (length %d)", k, n);
  *out = k;
  return 1;
}

#define NUM_BINARY(op)                                                 \
  do {                                                                 \
    if (peek(0).type != V_NUM || peek(1).type != V_NUM)                \
      return runtime_error("operands must be numbers");                \
    double b_ = pop().as.n;                                            \
    double a_ = pop().as.n;                                            \
    push(op);                                                          \
  } while (0)

static int run(void) {
  frame *fr = &V.frames[V.nframes - 1];
#define READ_BYTE() (*fr->ip++)
#define READ_SHORT() (fr->ip += 2, (uint16_t)((fr->ip[-2] << 8) | fr->ip[-1]))
#define READ_CONST() (fr->fn->code.consts[READ_BYTE()])
  for (;;) {
    V.steps++;
    uint8_t op = READ_BYTE();
    switch (op) {
      case OP_CONST: push(READ_CONST()); break;
      case OP_NIL: push(nil_val()); break;
      case OP_TRUE: push(bool_val(1)); break;
      case OP_FALSE: push(bool_val(0)); break;
      case OP_POP: pop(); break;
      case OP_GET_LOCAL: push(fr->slots[READ_BYTE()]); break;
      case OP_SET_LOCAL: fr->slots[READ_BYTE()] = peek(0); break;
      case OP_GET_GLOBAL: {
        str *name = READ_CONST().as.s;
        value v;
        if (!table_get(&globals, name, &v))
          return runtime_error("undefined variable '%s'", name->chars);
        push(v);
        break;
      }
      case OP_SET_GLOBAL: {
        str *name = READ_CONST().as.s;
        if (table_set(&globals, name, peek(0)))
          return runtime_error("undefined variable '%s'", name->chars);
        break;
      }
      case OP_DEF_GLOBAL:
        table_set(&globals, READ_CONST().as.s, peek(0));
        pop();
        break;
      case OP_ADD:
        if (peek(0).type == V_STR && peek(1).type == V_STR) {
          str *b = pop().as.s;
          str *a = pop().as.s;
          push(str_val(concat(a, b)));
        } else if (peek(1).type == V_STR && peek(0).type == V_NUM) {
          str *b = number_str(pop().as.n);
          str *a = pop().as.s;
          push(str_val(concat(a, b)));
        } else {
          NUM_BINARY(num_val(a_ + b_));
        }
        break;
      case OP_SUB: NUM_BINARY(num_val(a_ - b_)); break;
      case OP_MUL: NUM_BINARY(num_val(a_ * b_)); break;
      case OP_DIV: NUM_BINARY(num_val(a_ / b_)); break;
      case OP_MOD: NUM_BINARY(num_val(fmod(a_, b_))); break;
      case OP_LT: NUM_BINARY(bool_val(a_ < b_)); break;
      case OP_LE: NUM_BINARY(bool_val(a_ <= b_)); break;
      case OP_GT: NUM_BINARY(bool_val(a_ > b_)); break;
      case OP_GE: NUM_BINARY(bool_val(a_ >= b_)); break;
      case OP_NEG:
        if (peek(0).type != V_NUM) return runtime_error("operand must be a number");
        push(num_val(-pop().as.n));
        break;
      case OP_NOT: push(bool_val(!truthy(pop()))); break;
      case OP_EQ: {
        value b = pop(), a = pop();
        push(bool_val(values_equal(a, b)));
        break;
      }
      case OP_NE: {
        value b = pop(), a = pop();
        push(bool_val(!values_equal(a, b)));
        break;
      }
      case OP_JUMP: {
        uint16_t off = READ_SHORT();
        fr->ip += off;
        break;
      }
      case OP_JUMP_IF_FALSE: {
        uint16_t off = READ_SHORT();
        if (!truthy(peek(0))) fr->ip += off;
        break;
      }
      case OP_LOOP: {
        uint16_t off = READ_SHORT();
        fr->ip -= off;
        break;
      }
      case OP_CALL: {
        int argc = READ_BYTE();
        if (!call_value(peek(argc), argc)) return 0;
        fr = &V.frames[V.nframes - 1];
        break;
      }
      case OP_RETURN: {
        value r = pop();
        V.nframes--;
        if (V.nframes == 0) {
          pop();
          return 1;
        }
        V.sp = fr->slots;
        push(r);
        fr = &V.frames[V.nframes - 1];
        break;
      }
      case OP_ARRAY: {
        int n = READ_BYTE();
        arr *a = xalloc(sizeof(arr));
        for (int i = 0; i < n; i++) arr_push(a, V.sp[i - n]);
        V.sp -= n;
        push(arr_val(a));
        break;
      }
      case OP_INDEX_GET: {
        value i = pop(), a = pop();
        int k;
        if (a.type == V_ARR) {
          if (!index_check(a, i, &k)) return 0;
          push(a.as.a->items[k]);
        } else if (a.type == V_STR) {
          if (!index_check(a, i, &k)) return 0;
          push(str_val(intern(&a.as.s->chars[k], 1)));
        } else {
          return runtime_error("only arrays and strings can be indexed");
        }
        break;
      }
      case OP_INDEX_SET: {
        value v = pop(), i = pop(), a = pop();
        int k;
        if (a.type != V_ARR) return runtime_error("only arrays support index assignment");
        if (!index_check(a, i, &k)) return 0;
        a.as.a->items[k] = v;
        push(v);
        break;
      }
      case OP_PRINT:
        print_value(stdout, pop());
        fputc('\n', stdout);
        break;
      default:
        return runtime_error("bad opcode %d", op);
    }
  }
#undef READ_BYTE
#undef READ_SHORT
#undef READ_CONST
}

/* ---- Builtins -------------------------------------------------------------- */

static value nat_len(int argc, value *args) {
  if (argc != 1) return nil_val();
  if (args[0].type == V_ARR) return num_val(args[0].as.a->count);
  if (args[0].type == V_STR) return num_val(args[0].as.s->len);
  return nil_val();
}

static value nat_push(int argc, value *args) {
  if (argc != 2 || args[0].type != V_ARR) return nil_val();
  arr_push(args[0].as.a, args[1]);
  return args[1];
}

static value nat_str(int argc, value *args) {
  if (argc != 1) return nil_val();
  if (args[0].type == V_STR) return args[0];
  if (args[0].type == V_NUM) return str_val(number_str(args[0].as.n));
  return str_val(intern(args[0].type == V_BOOL && args[0].as.b ? "true"
                        : args[0].type == V_BOOL              ? "false"
                                                              : "nil",
                        args[0].type == V_BOOL && args[0].as.b ? 4
                        : args[0].type == V_BOOL               ? 5
                                                               : 3));
}

static value nat_sqrt(int argc, value *args) {
  return argc == 1 && args[0].type == V_NUM ? num_val(sqrt(args[0].as.n)) : nil_val();
}

static value nat_floor(int argc, value *args) {
  return argc == 1 && args[0].type == V_NUM ? num_val(floor(args[0].as.n)) : nil_val();
}

static void define_native(const char *name, native_fn fn) {
  value v = {.type = V_NATIVE, .as.native = fn};
  table_set(&globals, intern(name, (int)strlen(name)), v);
}

static int interpret(const char *source, int dump) {
  func *f = compile(source);
  if (!f) return 65;
  if (dump) disasm(f);
  V.sp = V.stack;
  V.nframes = 0;
  push(fn_val(f));
  call_value(fn_val(f), 0);
  return run() ? 0 : 70;
}

/* ---- The built-in script: a little of everything ---------------------------- */

static const char demo_script[] =
    "fn fib(n) { if (n < 2) { return n; } return fib(n - 1) + fib(n - 2); }\n"
    "fn sieve(n) {\n"
    "  let flags = [];\n"
    "  let i = 0;\n"
    "  while (i <= n) { push(flags, true); i = i + 1; }\n"
    "  let count = 0;\n"
    "  i = 2;\n"
    "  while (i <= n) {\n"
    "    if (flags[i]) {\n"
    "      count = count + 1;\n"
    "      let j = i * i;\n"
    "      while (j <= n) { flags[j] = false; j = j + i; }\n"
    "    }\n"
    "    i = i + 1;\n"
    "  }\n"
    "  return count;\n"
    "}\n"
    "fn sort(a) {\n"
    "  let i = 1;\n"
    "  while (i < len(a)) {\n"
    "    let v = a[i];\n"
    "    let j = i - 1;\n"
    "    while (j >= 0 && a[j] > v) { a[j + 1] = a[j]; j = j - 1; }\n"
    "    a[j + 1] = v;\n"
    "    i = i + 1;\n"
    "  }\n"
    "  return a;\n"
    "}\n"
    "fn lcg(state) { return (state * 1103515245 + 12345) % 2147483648; }\n"
    "let seed = 42;\n"
    "let nums = [];\n"
    "let k = 0;\n"
    "while (k < 300) { seed = lcg(seed); push(nums, seed % 1000); k = k + 1; }\n"
    "sort(nums);\n"
    "let ok = true;\n"
    "k = 1;\n"
    "while (k < len(nums)) { if (nums[k - 1] > nums[k]) { ok = false; } k = k + 1; }\n"
    "let s = \"\";\n"
    "k = 0;\n"
    "while (k < 20) { s = s + str(k % 10); k = k + 1; }\n"
    "print(\"fib(22) = \" + fib(22));\n"
    "print(\"primes below 20000: \" + sieve(20000));\n"
    "print(\"sorted: \" + str(ok) + \", min \" + nums[0] + \", max \" + nums[299]);\n"
    "print(\"string: \" + s + \" (\" + len(s) + \" chars)\");\n"
    "print(\"sqrt(2) = \" + sqrt(2));\n";

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = xalloc(cap);
  for (;;) {
    if (n + 1 >= cap) buf = xgrow(buf, cap *= 2);
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    if (!got) break;
    n += got;
  }
  fclose(f);
  buf[n] = 0;
  return buf;
}

int main(int argc, char **argv) {
  define_native("len", nat_len);
  define_native("push", nat_push);
  define_native("str", nat_str);
  define_native("sqrt", nat_sqrt);
  define_native("floor", nat_floor);
  int dump = 0;
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-d") == 0)
      dump = 1;
    else
      path = argv[i];
  }
  if (!path) {
    int rc = interpret(demo_script, dump);
    printf("vm steps: %llu\n", (unsigned long long)V.steps);
    return rc;
  }
  char *source = read_all(path);
  if (!source) {
    fprintf(stderr, "tl: cannot read '%s'\n", path);
    return 66;
  }
  return interpret(source, dump);
}
