/* Generates the per-module glue compiled next to wasm2c's output. */
#include "engine/w2c_codegen.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growable string. Allocation failure is remembered and reported once. */
typedef struct strbuf {
  char *data;
  size_t len, cap;
  bool failed;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
  if (b->failed) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->failed = true;
      return;
    }
    if ((size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap - b->len <= (size_t)n) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
      b->failed = true;
      return;
    }
    b->data = d;
    b->cap = cap;
  }
}

kiln_status kiln_w2c_mangle(const char *name, char **out) {
  size_t n = strlen(name);
  char *s = malloc(2 + n * 3 + 1);
  if (!s) return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  char *p = s;
  *p++ = 'Z';
  *p++ = '_';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                 (c >= 'A' && c <= 'Z');
    if ((alnum && c != 'Z') || c == '_') {
      *p++ = (char)c;
    } else {
      p += sprintf(p, "Z%02X", c);
    }
  }
  *p = 0;
  *out = s;
  return KILN_OK;
}

static const char *c_type(kiln_valtype t) {
  switch (t) {
    case KILN_I32: return "u32";
    case KILN_I64: return "u64";
    case KILN_F32: return "f32";
    case KILN_F64: return "f64";
    case KILN_FUNCREF: return "wasm_rt_funcref_t";
    case KILN_EXTERNREF: return "wasm_rt_externref_t";
    case KILN_V128: return "v128";
  }
  return "?";
}

static const char *val_field(kiln_valtype t) {
  switch (t) {
    case KILN_I32: return "i32";
    case KILN_I64: return "i64";
    case KILN_F32: return "f32";
    case KILN_F64: return "f64";
    default: return "ref";
  }
}

static char multi_letter(kiln_valtype t) {
  switch (t) {
    case KILN_I32: return 'i';
    case KILN_I64: return 'j';
    case KILN_F32: return 'f';
    case KILN_F64: return 'd';
    default: return '?';
  }
}

/* The C return type of a function type; multi-value results are wasm2c's
 * `struct wasm_multi_<letters>`. */
static void result_type(const kiln_functype *t, char *buf, size_t size) {
  if (t->result_count == 0) {
    snprintf(buf, size, "void");
  } else if (t->result_count == 1) {
    snprintf(buf, size, "%s", c_type(t->results[0]));
  } else {
    size_t n = (size_t)snprintf(buf, size, "struct wasm_multi_");
    for (uint32_t i = 0; i < t->result_count && n + 2 < size; i++)
      buf[n++] = multi_letter(t->results[i]);
    buf[n] = 0;
  }
}

static bool functype_supported(const kiln_functype *t) {
  for (uint32_t i = 0; i < t->param_count; i++)
    if (t->params[i] == KILN_V128) return false;
  for (uint32_t i = 0; i < t->result_count; i++) {
    if (t->results[i] == KILN_V128) return false;
    if (t->result_count > 1 && multi_letter(t->results[i]) == '?') return false;
  }
  return true;
}

/* Reads a ref-typed value out of / into a kiln_w2c_val. Funcrefs cross the
 * boundary as a pointer to a heap copy owned by... nothing: kiln exposes
 * them only as "non-null" to the host, so store the function pointer. */
static void emit_arg_from_val(strbuf *b, kiln_valtype t, const char *src) {
  if (t == KILN_FUNCREF)
    sb_printf(b, "kiln_funcref_from_val(%s)", src);
  else if (t == KILN_EXTERNREF)
    sb_printf(b, "(wasm_rt_externref_t)(%s).of.ref", src);
  else
    sb_printf(b, "(%s).of.%s", src, val_field(t));
}

static void emit_store_val(strbuf *b, kiln_valtype t, const char *dst,
                           const char *expr) {
  if (t == KILN_FUNCREF)
    sb_printf(b, "  %s.type = %d; %s.of.ref = (void *)(%s).func;\n", dst,
              (int)t, dst, expr);
  else if (t == KILN_EXTERNREF)
    sb_printf(b, "  %s.type = %d; %s.of.ref = (void *)(%s);\n", dst, (int)t,
              dst, expr);
  else
    sb_printf(b, "  %s.type = %d; %s.of.%s = %s;\n", dst, (int)t, dst,
              val_field(t), expr);
}

/* ---- The instance struct in the generated header ------------------------ */

typedef struct field_list {
  char **mem, **table, **global;
  uint32_t nmem, ntable, nglobal;
} field_list;

static void free_fields(field_list *f) {
  for (uint32_t i = 0; i < f->nmem; i++) free(f->mem[i]);
  for (uint32_t i = 0; i < f->ntable; i++) free(f->table[i]);
  for (uint32_t i = 0; i < f->nglobal; i++) free(f->global[i]);
  free(f->mem);
  free(f->table);
  free(f->global);
}

static bool push(char ***arr, uint32_t *n, const char *s, size_t len) {
  char **a = realloc(*arr, (*n + 1) * sizeof *a);
  if (!a) return false;
  *arr = a;
  a[*n] = strndup(s, len);
  if (!a[*n]) return false;
  (*n)++;
  return true;
}

/* Fields of `typedef struct Z_m_instance_t { ... }`: pointer fields are
 * imports and skipped; of the rest, memories and tables are recognised by
 * type and every other field is a defined global, in index order. */
static kiln_status parse_instance_fields(const char *header, field_list *f) {
  memset(f, 0, sizeof *f);
  const char *open = strstr(header, "typedef struct Z_" KILN_W2C_MODULE_NAME
                                    "_instance_t {");
  if (!open) goto bad;
  const char *p = strchr(open, '\n');
  const char *close = strstr(open, "} Z_" KILN_W2C_MODULE_NAME "_instance_t;");
  if (!p || !close) goto bad;
  while (p && p < close) {
    const char *line = p + 1;
    const char *eol = strchr(line, '\n');
    if (!eol || eol > close) break;
    p = eol;
    while (line < eol && (*line == ' ' || *line == '\t')) line++;
    if (line >= eol || line[0] == '/' || memchr(line, '*', eol - line))
      continue;
    const char *semi = memchr(line, ';', eol - line);
    if (!semi) continue;
    const char *name = semi;
    while (name > line && name[-1] != ' ') name--;
    size_t type_len = (size_t)(name - line);
    /* wasm2c gives an otherwise empty struct `char dummy_member;`. */
    if ((size_t)(semi - name) == 12 && !strncmp(name, "dummy_member", 12))
      continue;
    /* `bool data_segment_dropped_... : 1;` bitfields are not globals. */
    if (memchr(line, ':', semi - line)) continue;
    bool ok;
    if (type_len >= 16 && !strncmp(line, "wasm_rt_memory_t", 16))
      ok = push(&f->mem, &f->nmem, name, semi - name);
    else if (!strncmp(line, "wasm_rt_funcref_table_t", 23) ||
             !strncmp(line, "wasm_rt_externref_table_t", 25))
      ok = push(&f->table, &f->ntable, name, semi - name);
    else
      ok = push(&f->global, &f->nglobal, name, semi - name);
    if (!ok) {
      free_fields(f);
      return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
    }
  }
  return KILN_OK;
bad:
  return kiln_make_status(KILN_CODE_INTERNAL,
                          "wasm2c's header has no instance struct");
}

/* Number of import-module parameters of Z_m_instantiate. */
static int count_instantiate_params(const char *header) {
  const char *p = strstr(header, "void Z_" KILN_W2C_MODULE_NAME "_instantiate(");
  if (!p) return -1;
  const char *end = strchr(p, ';');
  if (!end) return -1;
  int n = 0;
  for (const char *q = p; q < end; q++)
    if (!strncmp(q, "struct ", 7)) n++;
  return n;
}

/* ---- Glue ------------------------------------------------------------------ */

static void emit_import_func(strbuf *b, const char *mod, const char *sym,
                             uint32_t slot, const kiln_functype *t) {
  char rt[96];
  result_type(t, rt, sizeof rt);
  sb_printf(b, "%s %s(struct %s_instance_t *f_", rt, sym, mod);
  for (uint32_t i = 0; i < t->param_count; i++)
    sb_printf(b, ", %s a%u", c_type(t->params[i]), i);
  sb_printf(b, ") {\n  const kiln_w2c_slot *s_ = &(*(kiln_w2c_frame **)f_)"
               "->slots[%u];\n", slot);
  /* Generic path: box the arguments. */
  sb_printf(b, "  if (UNLIKELY(s_->generic != NULL)) {\n");
  sb_printf(b, "    kiln_w2c_val a_[%u], r_[%u];\n",
            t->param_count ? t->param_count : 1,
            t->result_count ? t->result_count : 1);
  for (uint32_t i = 0; i < t->param_count; i++) {
    char dst[32], src[32];
    snprintf(dst, sizeof dst, "a_[%u]", i);
    snprintf(src, sizeof src, "a%u", i);
    sb_printf(b, "  ");
    emit_store_val(b, t->params[i], dst, src);
  }
  sb_printf(b, "    s_->generic(s_->env, a_, r_);\n");
  if (t->result_count == 1) {
    sb_printf(b, "    return ");
    emit_arg_from_val(b, t->results[0], "r_[0]");
    sb_printf(b, ";\n");
  } else if (t->result_count > 1) {
    sb_printf(b, "    %s m_;\n", rt);
    for (uint32_t i = 0; i < t->result_count; i++) {
      char src[32];
      snprintf(src, sizeof src, "r_[%u]", i);
      sb_printf(b, "    m_.%c%u = ", multi_letter(t->results[i]), i);
      emit_arg_from_val(b, t->results[i], src);
      sb_printf(b, ";\n");
    }
    sb_printf(b, "    return m_;\n");
  } else {
    sb_printf(b, "    return;\n");
  }
  sb_printf(b, "  }\n  return ((%s (*)(void *", rt);
  for (uint32_t i = 0; i < t->param_count; i++)
    sb_printf(b, ", %s", c_type(t->params[i]));
  sb_printf(b, "))s_->fn)(s_->env");
  for (uint32_t i = 0; i < t->param_count; i++) sb_printf(b, ", a%u", i);
  sb_printf(b, ");\n}\n\n");
}

static void emit_invoke(strbuf *b, uint32_t idx, const char *sym,
                        const kiln_functype *t) {
  char rt[96];
  result_type(t, rt, sizeof rt);
  sb_printf(b,
            "static void kiln_invoke_%u(void *inst_, const kiln_w2c_val *a_, "
            "kiln_w2c_val *r_) {\n  (void)a_; (void)r_;\n  ",
            idx);
  if (t->result_count) sb_printf(b, "%s v_ = ", rt);
  sb_printf(b, "%s((Z_%s_instance_t *)inst_", sym, KILN_W2C_MODULE_NAME);
  for (uint32_t i = 0; i < t->param_count; i++) {
    char src[32];
    snprintf(src, sizeof src, "a_[%u]", i);
    sb_printf(b, ", ");
    emit_arg_from_val(b, t->params[i], src);
  }
  sb_printf(b, ");\n");
  if (t->result_count == 1) {
    emit_store_val(b, t->results[0], "r_[0]", "v_");
  } else {
    for (uint32_t i = 0; i < t->result_count; i++) {
      char dst[32], src[32];
      snprintf(dst, sizeof dst, "r_[%u]", i);
      snprintf(src, sizeof src, "v_.%c%u", multi_letter(t->results[i]), i);
      emit_store_val(b, t->results[i], dst, src);
    }
  }
  sb_printf(b, "}\n\n");
}

static const char *table_ctype(kiln_valtype elem) {
  return elem == KILN_EXTERNREF ? "wasm_rt_externref_table_t"
                                : "wasm_rt_funcref_table_t";
}

kiln_status kiln_w2c_generate_glue(const kiln_wasm_info *info,
                                   char *const *field_names,
                                   const char *header, char **out_source) {
  *out_source = NULL;
  field_list fields;
  KILN_RETURN_IF_ERROR(parse_instance_fields(header, &fields));
  uint32_t defined_mem = 0, defined_table = 0, defined_global = 0;
  for (uint32_t i = 0; i < info->memory_count; i++)
    defined_mem += !info->memories[i].imported;
  for (uint32_t i = 0; i < info->table_count; i++)
    defined_table += !info->tables[i].imported;
  for (uint32_t i = 0; i < info->global_count; i++)
    defined_global += !info->globals[i].imported;
  int import_modules = count_instantiate_params(header);
  if (fields.nmem != defined_mem || fields.ntable != defined_table ||
      fields.nglobal != defined_global || import_modules < 0) {
    free_fields(&fields);
    return kiln_make_status(
        KILN_CODE_INTERNAL,
        "wasm2c's instance layout does not match the module (%u/%u "
        "memories, %u/%u tables, %u/%u globals)",
        fields.nmem, defined_mem, fields.ntable, defined_table,
        fields.nglobal, defined_global);
  }

  strbuf b = {0};
  const char *M = KILN_W2C_MODULE_NAME;
  sb_printf(&b,
            "/* Generated by kiln. Do not edit. */\n"
            "#include \"%s.h\"\n#include \"kiln_w2c_shim.c\"\n"
            "#include <stddef.h>\n\n"
                        "static inline wasm_rt_funcref_t kiln_funcref_from_val("
            "kiln_w2c_val v) {\n"
            "  wasm_rt_funcref_t r = {0, (wasm_rt_function_ptr_t)v.of.ref, "
            "NULL};\n  return r;\n}\n\n",
            M);

  kiln_status s = KILN_OK;
  /* Imports: one C definition each (their pairs are distinct). */
  for (uint32_t i = 0; i < info->import_count && !s; i++) {
    const kiln_import *im = &info->imports[i];
    const char *field =
        field_names && field_names[i] ? field_names[i] : im->name;
    char *mm = NULL, *mn = NULL;
    s = kiln_w2c_mangle(im->module, &mm);
    if (!s) s = kiln_w2c_mangle(field, &mn);
    if (!s) {
      char sym[4096];
      snprintf(sym, sizeof sym, "%s%s", mm, mn);
      switch (im->type.kind) {
        case KILN_EXTERN_FUNC:
          if (!functype_supported(&im->type.of.func)) {
            s = kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                                 "import '%s' '%s' has a type the wasm2c "
                                 "engine cannot bind",
                                 im->module, im->name);
            break;
          }
          emit_import_func(&b, mm, sym, i, &im->type.of.func);
          break;
        case KILN_EXTERN_MEMORY:
          sb_printf(&b,
                    "wasm_rt_memory_t *%s(struct %s_instance_t *f_) {\n"
                    "  return (wasm_rt_memory_t *)((kiln_w2c_frame *)f_)"
                    "->slots[%u].env;\n}\n\n",
                    sym, mm, i);
          break;
        case KILN_EXTERN_TABLE:
          sb_printf(&b,
                    "%s *%s(struct %s_instance_t *f_) {\n"
                    "  return (%s *)((kiln_w2c_frame *)f_)->slots[%u].env;\n"
                    "}\n\n",
                    table_ctype(im->type.of.table.elem), sym, mm,
                    table_ctype(im->type.of.table.elem), i);
          break;
        case KILN_EXTERN_GLOBAL:
          sb_printf(&b,
                    "%s *%s(struct %s_instance_t *f_) {\n"
                    "  return (%s *)((kiln_w2c_frame *)f_)->slots[%u].env;\n"
                    "}\n\n",
                    c_type(im->type.of.global.type), sym, mm,
                    c_type(im->type.of.global.type), i);
          break;
        default:
          s = kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                               "import '%s' '%s': tags are not supported",
                               im->module, im->name);
      }
    }
    free(mm);
    free(mn);
  }

  /* Exports. */
  char **syms = calloc(info->export_count + 1, sizeof *syms);
  if (!syms && !s)
    s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  for (uint32_t i = 0; i < info->export_count && !s; i++) {
    const kiln_wasm_export *ex = &info->exports[i];
    char *mm = NULL, *mn = NULL;
    s = kiln_w2c_mangle(M, &mm);
    if (!s) s = kiln_w2c_mangle(ex->desc.name, &mn);
    if (!s) {
      size_t n = strlen(mm) + strlen(mn) + 1;
      syms[i] = malloc(n);
      if (syms[i]) snprintf(syms[i], n, "%s%s", mm, mn);
      else s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
    }
    free(mm);
    free(mn);
    if (s) break;
    if (ex->desc.type.kind == KILN_EXTERN_FUNC) {
      if (!functype_supported(&ex->desc.type.of.func)) {
        s = kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                             "export '%s' has a type the wasm2c engine cannot "
                             "call", ex->desc.name);
        break;
      }
      emit_invoke(&b, i, syms[i], &ex->desc.type.of.func);
    } else if (ex->desc.type.kind != KILN_EXTERN_TAG) {
      sb_printf(&b,
                "static void *kiln_get_%u(void *inst_) {\n"
                "  return (void *)%s((Z_%s_instance_t *)inst_);\n}\n\n",
                i, syms[i], M);
    }
  }
  if (!s) {
    sb_printf(&b, "static const kiln_w2c_export kiln_exports[] = {\n");
    for (uint32_t i = 0; i < info->export_count; i++) {
      const kiln_wasm_export *ex = &info->exports[i];
      int kind = (int)ex->desc.type.kind;
      if (kind == KILN_EXTERN_FUNC)
        sb_printf(&b, "  {NULL, %d, (void *)&%s, kiln_invoke_%u, NULL},\n",
                  kind, syms[i], i);
      else
        sb_printf(&b, "  {NULL, %d, NULL, NULL, kiln_get_%u},\n", kind, i);
    }
    sb_printf(&b, "  {NULL, 0, NULL, NULL, NULL}};\n\n");

    sb_printf(&b, "static const size_t kiln_mem_offsets[] = {");
    for (uint32_t i = 0; i < fields.nmem; i++)
      sb_printf(&b, "offsetof(Z_%s_instance_t, %s), ", M, fields.mem[i]);
    sb_printf(&b, "0};\nstatic const size_t kiln_table_offsets[] = {");
    for (uint32_t i = 0; i < fields.ntable; i++)
      sb_printf(&b, "offsetof(Z_%s_instance_t, %s), ", M, fields.table[i]);
    sb_printf(&b, "0};\nstatic const size_t kiln_global_offsets[] = {");
    for (uint32_t i = 0; i < fields.nglobal; i++)
      sb_printf(&b, "offsetof(Z_%s_instance_t, %s), ", M, fields.global[i]);
    sb_printf(&b, "0};\n\n");

    sb_printf(&b, "static void kiln_instantiate(void *inst_, "
                  "kiln_w2c_frame *f_) {\n  (void)f_;\n");
    sb_printf(&b, "  Z_%s_instantiate((Z_%s_instance_t *)inst_", M, M);
    for (int i = 0; i < import_modules; i++) sb_printf(&b, ", (void *)f_");
    sb_printf(&b, ");\n}\n\n");
    sb_printf(&b,
              "static void kiln_free(void *inst_) {\n"
              "  Z_%s_free((Z_%s_instance_t *)inst_);\n}\n\n",
              M, M);
    sb_printf(&b,
              "__attribute__((visibility(\"default\"))) const kiln_w2c_module "
              "*kiln_w2c_describe(void) {\n"
              "  static kiln_w2c_module d_ = {\n"
              "    KILN_W2C_ABI_VERSION, sizeof(Z_%s_instance_t), %uu,\n"
              "    kiln_instantiate, kiln_free, %uu, kiln_exports,\n"
              "    %uu, kiln_mem_offsets, %uu, kiln_table_offsets,\n"
              "    %uu, kiln_global_offsets};\n"
              "  static int inited_;\n"
              "  if (!inited_) { Z_%s_init_module(); inited_ = 1; }\n"
              "  return &d_;\n}\n",
              M, info->import_count, info->export_count, fields.nmem,
              fields.ntable, fields.nglobal, M);
  }
  for (uint32_t i = 0; syms && i < info->export_count; i++) free(syms[i]);
  free(syms);
  free_fields(&fields);
  if (!s && b.failed)
    s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  if (s) {
    free(b.data);
    return s;
  }
  *out_source = b.data;
  return KILN_OK;
}
