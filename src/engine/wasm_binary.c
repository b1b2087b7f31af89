/* Parser and structural validator for the WebAssembly binary format; the
 * contract is in wasm_binary.h.
 *
 * Shape: a `reader` walks a byte range [pos, end) and every read checks the
 * bytes left before it touches them. A `parser` holds what the module has
 * declared so far (the info being filled, plus counts the info does not
 * keep). Each section, function body and name subsection gets its own reader
 * bounded by its declared size, so no part can read into the next one;
 * bytes it leaves over are "section size mismatch".
 *
 * Ownership while parsing: every allocation is stored in the info at once,
 * with counts that cover only zeroed or fully built entries, so on any error
 * kiln_wasm_info_free() releases exactly what exists. */
#include "engine/wasm_binary.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Limits that are kiln's (and the major engines') rather than the spec's:
 * params plus declared locals of one function. The spec only says 2^32-1;
 * 50000 is what V8 and wabt-based engines accept, and it keeps generated C
 * compilable. */
enum { KILN_WASM_MAX_LOCALS = 50000 };
enum { KILN_WASM_MAX_PAGES32 = 65536 };
#define KILN_WASM_MAX_PAGES64 (UINT64_C(1) << 48)

enum {
  OP_END = 0x0b,
  OP_GLOBAL_GET = 0x23,
  OP_I32_CONST = 0x41,
  OP_I64_CONST = 0x42,
  OP_F32_CONST = 0x43,
  OP_F64_CONST = 0x44,
  OP_REF_NULL = 0xd0,
  OP_REF_FUNC = 0xd2,
  OP_PREFIX_MISC = 0xfc,
  OP_PREFIX_SIMD = 0xfd,
  OP_PREFIX_ATOMIC = 0xfe,
  SIMD_V128_CONST = 12,
};

/* ---- Reader ------------------------------------------------------------- */

typedef struct reader {
  const uint8_t *base; /* start of the module: error offsets count from it */
  const uint8_t *pos;
  const uint8_t *end; /* one past the last byte this reader may read */
} reader;

static uint64_t left(const reader *r) { return (uint64_t)(r->end - r->pos); }

/* An INVALID_MODULE status: "at byte 0x<offset of at>: <reason>". */
__attribute__((format(printf, 3, 4))) static kiln_status malformed(
    const reader *r, const uint8_t *at, const char *fmt, ...) {
  char reason[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  return kiln_make_status(KILN_CODE_INVALID_MODULE, "at byte 0x%zx: %s",
                          (size_t)(at - r->base), reason);
}

static kiln_status no_memory(const char *what) {
  return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                          "out of memory while reading a module's %s", what);
}

/* Readers set *out on failure too (0 / NULL): callers return on failure
 * before looking, and this lets the compiler see that as well. */
static kiln_status read_u8(reader *r, uint8_t *out) {
  *out = 0;
  if (r->pos >= r->end) return malformed(r, r->pos, "unexpected end");
  *out = *r->pos++;
  return KILN_OK;
}

/* Points *out at the next n bytes (no copy) and steps over them. */
static kiln_status read_bytes(reader *r, uint64_t n, const uint8_t **out) {
  *out = NULL;
  if (n > left(r)) {
    return malformed(
        r, r->pos, "unexpected end: %" PRIu64 " bytes needed, %" PRIu64 " left",
        n, left(r));
  }
  *out = r->pos;
  r->pos += n;
  return KILN_OK;
}

/* LEB128 of an integer `bits` wide (32, 33 or 64). The encoding may be
 * longer than needed (the spec allows padding) but not longer than
 * ceil(bits/7) bytes, and the bits of the last byte beyond `bits` must be
 * zero (unsigned) or copies of the sign bit (signed). Signed values come
 * back sign-extended to 64 bits. */
static kiln_status read_leb(reader *r, unsigned bits, bool is_signed,
                            uint64_t *out) {
  *out = 0;
  const uint8_t *start = r->pos;
  const unsigned max_bytes = (bits + 6) / 7;
  uint64_t value = 0;
  unsigned shift = 0;
  for (unsigned i = 0;; i++) {
    uint8_t b;
    KILN_RETURN_IF_ERROR(read_u8(r, &b));
    if (i + 1 == max_bytes) {
      const unsigned used = bits - shift; /* value bits in this byte: 1..7 */
      if (b & 0x80) {
        return malformed(r, start, "integer representation too long");
      }
      uint8_t high = (uint8_t)((b & 0x7f) >> used);
      uint8_t allowed = 0;
      if (is_signed && ((b >> (used - 1)) & 1)) allowed = 0x7f >> used;
      if (high != allowed) return malformed(r, start, "integer too large");
      value |= (uint64_t)(b & ((1u << used) - 1)) << shift;
      shift += used;
      break;
    }
    value |= (uint64_t)(b & 0x7f) << shift;
    shift += 7;
    if (!(b & 0x80)) break;
  }
  if (is_signed && shift < 64 && ((value >> (shift - 1)) & 1)) {
    value |= ~UINT64_C(0) << shift;
  }
  *out = value;
  return KILN_OK;
}

static kiln_status read_u32(reader *r, uint32_t *out) {
  uint64_t v = 0;
  *out = 0;
  KILN_RETURN_IF_ERROR(read_leb(r, 32, false, &v));
  *out = (uint32_t)v;
  return KILN_OK;
}

static kiln_status read_u64(reader *r, uint64_t *out) {
  return read_leb(r, 64, false, out);
}

/* A vector length. Every vector element takes at least one byte, so a count
 * above the bytes left is malformed; checking here bounds every allocation
 * sized from a count by the input size. */
static kiln_status read_count(reader *r, uint32_t *out) {
  const uint8_t *at = r->pos;
  KILN_RETURN_IF_ERROR(read_u32(r, out));
  if (*out > left(r)) {
    return malformed(r, at,
                     "unexpected end: count %" PRIu32
                     " is more than the %" PRIu64 " bytes left",
                     *out, left(r));
  }
  return KILN_OK;
}

/* Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing
 * above U+10FFFF. */
static bool utf8_valid(const uint8_t *s, uint64_t n) {
  uint64_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    unsigned len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (unsigned k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

/* A name: length-prefixed UTF-8. Points into the module (no copy). */
static kiln_status read_name(reader *r, const uint8_t **bytes, uint32_t *len) {
  KILN_RETURN_IF_ERROR(read_u32(r, len));
  const uint8_t *at = r->pos;
  KILN_RETURN_IF_ERROR(read_bytes(r, *len, bytes));
  if (!utf8_valid(*bytes, *len)) {
    return malformed(r, at, "malformed UTF-8 encoding");
  }
  return KILN_OK;
}

/* A name copied as a C string. A name may contain U+0000; the C string then
 * ends there (comparisons that must be exact use the bytes, not this). */
static kiln_status read_name_dup(reader *r, char **out) {
  const uint8_t *bytes;
  uint32_t len;
  KILN_RETURN_IF_ERROR(read_name(r, &bytes, &len));
  char *s = malloc((size_t)len + 1);
  if (!s) return no_memory("names");
  memcpy(s, bytes, len);
  s[len] = '\0';
  *out = s;
  return KILN_OK;
}

/* ---- Parser state ------------------------------------------------------- */

typedef struct parser {
  kiln_wasm_info *info;
  bool multi_memory_ok;
  uint32_t global_import_count; /* the globals a constant expression sees */
  uint32_t defined_func_count;  /* entries in the function section */
  uint32_t code_count;          /* entries in the code section */
  uint32_t tag_count;           /* imported + defined (exceptions) */
  bool has_data_count;
  uint32_t data_count; /* value of the data count section */
  int last_rank;       /* rank of the last non-custom section */
  const uint8_t *section_at; /* id byte of the section being parsed */
  bool seen[14];       /* non-custom section ids seen */
  /* Payload of the first "name" custom section, read after all others so
   * that the function and global counts are final. */
  const uint8_t *names;
  const uint8_t *names_end;
} parser;

/* Resizes *arr from old_count to count elements, zeroing the new ones. */
static kiln_status resize_array(void **arr, uint64_t old_count, uint64_t count,
                                size_t elem_size, const char *what) {
  if (count == 0) return KILN_OK;
  if (count > SIZE_MAX / elem_size) return no_memory(what);
  void *p = realloc(*arr, (size_t)count * elem_size);
  if (!p) return no_memory(what);
  if (count > old_count) {
    memset((char *)p + old_count * elem_size, 0,
           (size_t)(count - old_count) * elem_size);
  }
  *arr = p;
  return KILN_OK;
}

/* Room for `more` entries after `have` in an index space of at most 2^32-1
 * entries, as every index is a u32. */
static kiln_status check_index_space(const reader *r, const uint8_t *at,
                                     uint32_t have, uint32_t more,
                                     const char *what) {
  if ((uint64_t)have + more > UINT32_MAX) {
    return malformed(r, at, "too many %s", what);
  }
  return KILN_OK;
}

/* A section's entry count n for an index space that holds `have` entries
 * already (its imports), with *arr grown to have + n entries. */
static kiln_status read_section_count(reader *r, uint32_t have, void **arr,
                                      size_t elem_size, const char *what,
                                      uint32_t *n) {
  const uint8_t *at = r->pos;
  KILN_RETURN_IF_ERROR(read_count(r, n));
  KILN_RETURN_IF_ERROR(check_index_space(r, at, have, *n, what));
  return resize_array(arr, have, (uint64_t)have + *n, elem_size, what);
}

static const char *valtype_name(kiln_valtype t) {
  switch (t) {
    case KILN_I32:
      return "i32";
    case KILN_I64:
      return "i64";
    case KILN_F32:
      return "f32";
    case KILN_F64:
      return "f64";
    case KILN_V128:
      return "v128";
    case KILN_FUNCREF:
      return "funcref";
    case KILN_EXTERNREF:
      return "externref";
  }
  return "?";
}

/* ---- Types -------------------------------------------------------------- */

static kiln_status read_valtype(parser *p, reader *r, kiln_valtype *out) {
  const uint8_t *at = r->pos;
  uint8_t b;
  KILN_RETURN_IF_ERROR(read_u8(r, &b));
  switch (b) {
    case 0x7f:
      *out = KILN_I32;
      return KILN_OK;
    case 0x7e:
      *out = KILN_I64;
      return KILN_OK;
    case 0x7d:
      *out = KILN_F32;
      return KILN_OK;
    case 0x7c:
      *out = KILN_F64;
      return KILN_OK;
    case 0x7b:
      *out = KILN_V128;
      p->info->features.simd = true;
      return KILN_OK;
    case 0x70:
      *out = KILN_FUNCREF;
      return KILN_OK;
    case 0x6f:
      *out = KILN_EXTERNREF;
      return KILN_OK;
    default:
      return malformed(r, at, "malformed value type 0x%02x", b);
  }
}

static kiln_status read_reftype(reader *r, kiln_valtype *out) {
  const uint8_t *at = r->pos;
  uint8_t b;
  KILN_RETURN_IF_ERROR(read_u8(r, &b));
  if (b == 0x70) {
    *out = KILN_FUNCREF;
  } else if (b == 0x6f) {
    *out = KILN_EXTERNREF;
  } else {
    return malformed(r, at, "malformed reference type 0x%02x", b);
  }
  return KILN_OK;
}

/* A vector of value types into a new array (NULL when empty). */
static kiln_status read_valtypes(parser *p, reader *r, uint32_t *count,
                                 const kiln_valtype **out) {
  KILN_RETURN_IF_ERROR(read_count(r, count));
  if (*count == 0) return KILN_OK;
  kiln_valtype *types = calloc(*count, sizeof *types);
  if (!types) return no_memory("types");
  *out = types; /* owned by the functype from here on, even on error */
  for (uint32_t i = 0; i < *count; i++) {
    KILN_RETURN_IF_ERROR(read_valtype(p, r, &types[i]));
  }
  return KILN_OK;
}

/* An index into a space of `count` entries: "unknown <what> N" past its
 * end. */
static kiln_status read_index(reader *r, uint32_t count, const char *what,
                              uint32_t *out) {
  const uint8_t *at = r->pos;
  KILN_RETURN_IF_ERROR(read_u32(r, out));
  if (*out >= count) {
    return malformed(r, at,
                     "unknown %s %" PRIu32 " (the module has %" PRIu32 ")",
                     what, *out, count);
  }
  return KILN_OK;
}

static kiln_status read_type_index(parser *p, reader *r, uint32_t *out) {
  return read_index(r, p->info->type_count, "type", out);
}

/* Limits of a table (is_memory false) or memory. The flags byte: bit 0 a
 * maximum follows, bit 1 shared (threads; needs a maximum), bit 2 64-bit
 * indices (memory64). Tables know only bit 0 at this spec revision. */
static kiln_status read_limits(parser *p, reader *r, bool is_memory,
                               kiln_limits *out) {
  const uint8_t *at = r->pos;
  uint8_t flags;
  KILN_RETURN_IF_ERROR(read_u8(r, &flags));
  const uint8_t known = is_memory ? 0x07 : 0x01;
  if (flags & ~known) {
    return malformed(r, at, "malformed limits flags 0x%02x (integer too large)",
                     flags);
  }
  if ((flags & 0x02) && !(flags & 0x01)) {
    return malformed(r, at,
                     "malformed limits flags 0x%02x: a shared memory "
                     "must have a maximum",
                     flags);
  }
  *out = (kiln_limits){
      .has_max = flags & 0x01, .shared = flags & 0x02, .is64 = flags & 0x04};
  const uint8_t *min_at = r->pos;
  if (out->is64) {
    KILN_RETURN_IF_ERROR(read_u64(r, &out->min));
    if (out->has_max) KILN_RETURN_IF_ERROR(read_u64(r, &out->max));
  } else {
    uint32_t v;
    KILN_RETURN_IF_ERROR(read_u32(r, &v));
    out->min = v;
    if (out->has_max) {
      KILN_RETURN_IF_ERROR(read_u32(r, &v));
      out->max = v;
    }
  }
  if (out->has_max && out->min > out->max) {
    return malformed(r, min_at,
                     "size minimum must not be greater than "
                     "maximum (%" PRIu64 " > %" PRIu64 ")",
                     out->min, out->max);
  }
  if (is_memory) {
    uint64_t cap = out->is64 ? KILN_WASM_MAX_PAGES64 : KILN_WASM_MAX_PAGES32;
    if (out->min > cap || (out->has_max && out->max > cap)) {
      return malformed(r, min_at,
                       out->is64
                           ? "memory size must be at most 2^48 pages"
                           : "memory size must be at most 65536 pages (4GiB)");
    }
    if (out->shared) p->info->features.threads = true;
    if (out->is64) p->info->features.memory64 = true;
  }
  return KILN_OK;
}

static kiln_status read_mutability(reader *r, bool *out) {
  const uint8_t *at = r->pos;
  uint8_t b;
  KILN_RETURN_IF_ERROR(read_u8(r, &b));
  if (b > 1) return malformed(r, at, "malformed mutability 0x%02x", b);
  *out = b == 1;
  return KILN_OK;
}

/* A tag type (exceptions proposal): attribute 0 (exception) and a function
 * type with no results. */
static kiln_status read_tag_type(parser *p, reader *r) {
  const uint8_t *at = r->pos;
  uint8_t attribute;
  KILN_RETURN_IF_ERROR(read_u8(r, &attribute));
  if (attribute != 0) {
    return malformed(r, at, "malformed tag attribute 0x%02x", attribute);
  }
  uint32_t type;
  at = r->pos;
  KILN_RETURN_IF_ERROR(read_type_index(p, r, &type));
  if (p->info->types[type].result_count != 0) {
    return malformed(r, at, "non-empty tag result type");
  }
  p->info->features.exceptions = true;
  p->tag_count++;
  return KILN_OK;
}

/* Appends a memory; the caller has made room. */
static kiln_status add_memory(parser *p, const reader *r, const uint8_t *at,
                              kiln_limits limits, bool imported) {
  kiln_wasm_info *info = p->info;
  if (info->memory_count >= 1 && !p->multi_memory_ok) {
    return malformed(r, at, "multiple memories (multi-memory is disabled)");
  }
  info->memories[info->memory_count++] =
      (kiln_wasm_memory){.limits = limits, .imported = imported};
  if (info->memory_count > 1) info->features.multi_memory = true;
  return KILN_OK;
}

/* ---- Constant expressions ----------------------------------------------- */

/* One instruction of a constant expression (opcode `op` already read). */
static kiln_status read_const_instr(parser *p, reader *r, uint8_t op,
                                    const uint8_t *at, kiln_wasm_const *c) {
  kiln_wasm_info *info = p->info;
  uint64_t v;
  const uint8_t *bytes;
  switch (op) {
    case OP_I32_CONST:
      KILN_RETURN_IF_ERROR(read_leb(r, 32, true, &v));
      *c = (kiln_wasm_const){KILN_CONST_I32, KILN_I32, {.i32 = (uint32_t)v}};
      return KILN_OK;
    case OP_I64_CONST:
      KILN_RETURN_IF_ERROR(read_leb(r, 64, true, &v));
      *c = (kiln_wasm_const){KILN_CONST_I64, KILN_I64, {.i64 = v}};
      return KILN_OK;
    case OP_F32_CONST: {
      KILN_RETURN_IF_ERROR(read_bytes(r, 4, &bytes));
      uint32_t bits = 0;
      for (int i = 3; i >= 0; i--) bits = bits << 8 | bytes[i];
      *c = (kiln_wasm_const){KILN_CONST_F32, KILN_F32, {.f32_bits = bits}};
      return KILN_OK;
    }
    case OP_F64_CONST: {
      KILN_RETURN_IF_ERROR(read_bytes(r, 8, &bytes));
      uint64_t bits = 0;
      for (int i = 7; i >= 0; i--) bits = bits << 8 | bytes[i];
      *c = (kiln_wasm_const){KILN_CONST_F64, KILN_F64, {.f64_bits = bits}};
      return KILN_OK;
    }
    case OP_REF_NULL: {
      kiln_valtype t;
      KILN_RETURN_IF_ERROR(read_reftype(r, &t));
      *c = (kiln_wasm_const){KILN_CONST_REF_NULL, t, {.index = 0}};
      return KILN_OK;
    }
    case OP_REF_FUNC: {
      uint32_t f;
      KILN_RETURN_IF_ERROR(read_index(r, info->func_count, "function", &f));
      *c = (kiln_wasm_const){KILN_CONST_REF_FUNC, KILN_FUNCREF, {.index = f}};
      return KILN_OK;
    }
    case OP_GLOBAL_GET: {
      /* At this spec revision only imported globals are visible here, and
       * only immutable ones are constant. */
      uint32_t g;
      const uint8_t *idx_at = r->pos;
      KILN_RETURN_IF_ERROR(read_u32(r, &g));
      if (g >= p->global_import_count) {
        return malformed(r, idx_at,
                         "unknown global %" PRIu32
                         " (constant expressions see only the %" PRIu32
                         " imported globals)",
                         g, p->global_import_count);
      }
      if (info->globals[g].is_mutable) {
        return malformed(r, at,
                         "constant expression required: global.get "
                         "of mutable global %" PRIu32,
                         g);
      }
      *c = (kiln_wasm_const){
          KILN_CONST_GLOBAL_GET, info->globals[g].type, {.index = g}};
      return KILN_OK;
    }
    case OP_PREFIX_SIMD: {
      uint32_t sub;
      KILN_RETURN_IF_ERROR(read_u32(r, &sub));
      if (sub != SIMD_V128_CONST) break;
      KILN_RETURN_IF_ERROR(read_bytes(r, 16, &bytes));
      *c = (kiln_wasm_const){KILN_CONST_V128, KILN_V128, {.index = 0}};
      memcpy(c->value.v128, bytes, 16);
      info->features.simd = true;
      return KILN_OK;
    }
    default:
      break;
  }
  return malformed(r, at, "constant expression required (opcode 0x%02x)", op);
}

/* A constant expression up to its END: exactly one instruction producing
 * one value of type `expected`. An empty expression is a type mismatch
 * (there is no value), which wasm2c 1.0.32 does not catch. */
static kiln_status read_const_expr(parser *p, reader *r, kiln_valtype expected,
                                   kiln_wasm_const *out) {
  const uint8_t *start = r->pos;
  uint32_t values = 0;
  kiln_wasm_const first = {0};
  for (;;) {
    const uint8_t *at = r->pos;
    uint8_t op;
    KILN_RETURN_IF_ERROR(read_u8(r, &op));
    if (op == OP_END) break;
    kiln_wasm_const c;
    KILN_RETURN_IF_ERROR(read_const_instr(p, r, op, at, &c));
    if (values++ == 0) first = c;
  }
  if (values == 0) {
    return malformed(r, start,
                     "type mismatch: empty constant expression, "
                     "expected one %s",
                     valtype_name(expected));
  }
  if (values > 1) {
    return malformed(r, start,
                     "type mismatch: constant expression produces "
                     "%" PRIu32 " values, expected one %s",
                     values, valtype_name(expected));
  }
  if (first.type != expected) {
    return malformed(r, start,
                     "type mismatch: constant expression produces "
                     "%s, expected %s",
                     valtype_name(first.type), valtype_name(expected));
  }
  *out = first;
  return KILN_OK;
}

/* ---- Sections before the code ------------------------------------------- */

static kiln_status parse_type_section(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_count(r, &n));
  KILN_RETURN_IF_ERROR(
      resize_array((void **)&info->types, 0, n, sizeof *info->types, "types"));
  info->type_count = n; /* zeroed entries free cleanly */
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *at = r->pos;
    uint8_t form;
    KILN_RETURN_IF_ERROR(read_u8(r, &form));
    if (form != 0x60) {
      return malformed(
          r, at, "malformed function type: form 0x%02x, expected 0x60", form);
    }
    kiln_functype *t = &info->types[i];
    KILN_RETURN_IF_ERROR(read_valtypes(p, r, &t->param_count, &t->params));
    KILN_RETURN_IF_ERROR(read_valtypes(p, r, &t->result_count, &t->results));
  }
  return KILN_OK;
}

/* One import. Its kind byte (0 func, 1 table, 2 memory, 3 global, 4 tag)
 * is the kiln_extern_kind value; exports use the same bytes. */
static kiln_status parse_import(parser *p, reader *r, uint32_t i) {
  kiln_wasm_info *info = p->info;
  kiln_import *imp = &info->imports[i];
  KILN_RETURN_IF_ERROR(read_name_dup(r, (char **)&imp->module));
  info->import_field_at[i] = (uint64_t)(r->pos - r->base);
  KILN_RETURN_IF_ERROR(read_name_dup(r, (char **)&imp->name));
  info->import_field_end[i] = (uint64_t)(r->pos - r->base);
  const uint8_t *at = r->pos;
  uint8_t kind;
  KILN_RETURN_IF_ERROR(read_u8(r, &kind));
  switch (kind) {
    case KILN_EXTERN_FUNC: {
      uint32_t type;
      KILN_RETURN_IF_ERROR(read_type_index(p, r, &type));
      imp->type.kind = KILN_EXTERN_FUNC;
      imp->type.of.func = info->types[type]; /* arrays owned by types */
      info->import_index[i] = info->func_count;
      info->func_types[info->func_count++] = type;
      info->func_import_count++;
      return KILN_OK;
    }
    case KILN_EXTERN_TABLE: {
      kiln_wasm_table *t = &info->tables[info->table_count];
      KILN_RETURN_IF_ERROR(read_reftype(r, &t->elem));
      KILN_RETURN_IF_ERROR(read_limits(p, r, false, &t->limits));
      t->imported = true;
      imp->type.kind = KILN_EXTERN_TABLE;
      imp->type.of.table.elem = t->elem;
      imp->type.of.table.limits = t->limits;
      info->import_index[i] = info->table_count++;
      return KILN_OK;
    }
    case KILN_EXTERN_MEMORY: {
      kiln_limits limits;
      KILN_RETURN_IF_ERROR(read_limits(p, r, true, &limits));
      info->import_index[i] = info->memory_count;
      KILN_RETURN_IF_ERROR(add_memory(p, r, at, limits, true));
      imp->type.kind = KILN_EXTERN_MEMORY;
      imp->type.of.memory = limits;
      return KILN_OK;
    }
    case KILN_EXTERN_GLOBAL: {
      kiln_wasm_global *g = &info->globals[info->global_count];
      KILN_RETURN_IF_ERROR(read_valtype(p, r, &g->type));
      KILN_RETURN_IF_ERROR(read_mutability(r, &g->is_mutable));
      g->imported = true;
      imp->type.kind = KILN_EXTERN_GLOBAL;
      imp->type.of.global.type = g->type;
      imp->type.of.global.is_mutable = g->is_mutable;
      info->import_index[i] = info->global_count++;
      p->global_import_count++;
      return KILN_OK;
    }
    case KILN_EXTERN_TAG:
      imp->type.kind = KILN_EXTERN_TAG;
      info->import_index[i] = p->tag_count;
      return read_tag_type(p, r);
    default:
      return malformed(r, at, "malformed import kind 0x%02x", kind);
  }
}

static kiln_status parse_import_section(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  uint32_t n;
  info->import_section_at = (uint64_t)(p->section_at - r->base);
  info->import_section_body = (uint64_t)(r->pos - r->base);
  info->import_section_end = (uint64_t)(r->end - r->base);
  KILN_RETURN_IF_ERROR(read_count(r, &n));
  /* Per-import arrays, and room for n imports of any one kind in each index
   * space (later sections grow these). */
  const struct {
    void **arr;
    size_t elem_size;
    const char *what;
  } arrays[] = {
      {(void **)&info->imports, sizeof *info->imports, "imports"},
      {(void **)&info->import_index, sizeof *info->import_index, "imports"},
      {(void **)&info->import_field_at, sizeof *info->import_field_at,
       "imports"},
      {(void **)&info->import_field_end, sizeof *info->import_field_end,
       "imports"},
      {(void **)&info->func_types, sizeof *info->func_types, "functions"},
      {(void **)&info->tables, sizeof *info->tables, "tables"},
      {(void **)&info->memories, sizeof *info->memories, "memories"},
      {(void **)&info->globals, sizeof *info->globals, "globals"},
  };
  for (size_t k = 0; k < sizeof arrays / sizeof arrays[0]; k++)
    KILN_RETURN_IF_ERROR(resize_array(arrays[k].arr, 0, n,
                                      arrays[k].elem_size, arrays[k].what));
  info->import_count = n;
  for (uint32_t i = 0; i < n; i++) {
    KILN_RETURN_IF_ERROR(parse_import(p, r, i));
  }
  return KILN_OK;
}

static kiln_status parse_function_section(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_section_count(r, info->func_count,
                                          (void **)&info->func_types,
                                          sizeof *info->func_types,
                                          "functions", &n));
  for (uint32_t i = 0; i < n; i++) {
    KILN_RETURN_IF_ERROR(
        read_type_index(p, r, &info->func_types[info->func_count]));
    info->func_count++;
  }
  p->defined_func_count = n;
  return KILN_OK;
}

static kiln_status parse_table_section(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_section_count(r, info->table_count,
                                          (void **)&info->tables,
                                          sizeof *info->tables, "tables", &n));
  for (uint32_t i = 0; i < n; i++) {
    kiln_wasm_table *t = &info->tables[info->table_count];
    KILN_RETURN_IF_ERROR(read_reftype(r, &t->elem));
    KILN_RETURN_IF_ERROR(read_limits(p, r, false, &t->limits));
    info->table_count++;
  }
  return KILN_OK;
}

static kiln_status parse_memory_section(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_section_count(r, info->memory_count,
                                          (void **)&info->memories,
                                          sizeof *info->memories, "memories",
                                          &n));
  for (uint32_t i = 0; i < n; i++) {
    kiln_limits limits;
    const uint8_t *at = r->pos;
    KILN_RETURN_IF_ERROR(read_limits(p, r, true, &limits));
    KILN_RETURN_IF_ERROR(add_memory(p, r, at, limits, false));
  }
  return KILN_OK;
}

static kiln_status parse_tag_section(parser *p, reader *r) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_count(r, &n));
  p->info->features.exceptions = true;
  for (uint32_t i = 0; i < n; i++) {
    KILN_RETURN_IF_ERROR(read_tag_type(p, r));
  }
  return KILN_OK;
}

static kiln_status parse_global_section(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_section_count(r, info->global_count,
                                          (void **)&info->globals,
                                          sizeof *info->globals, "globals",
                                          &n));
  for (uint32_t i = 0; i < n; i++) {
    kiln_wasm_global *g = &info->globals[info->global_count];
    KILN_RETURN_IF_ERROR(read_valtype(p, r, &g->type));
    KILN_RETURN_IF_ERROR(read_mutability(r, &g->is_mutable));
    KILN_RETURN_IF_ERROR(read_const_expr(p, r, g->type, &g->init));
    info->global_count++;
  }
  return KILN_OK;
}

/* ---- Exports and start -------------------------------------------------- */

/* An export name as bytes: names may hold U+0000, so C strings could make
 * distinct names look equal. */
typedef struct name_ref {
  const uint8_t *bytes;
  uint32_t len;
  const uint8_t *at; /* where the export starts, for the message */
} name_ref;

static int name_ref_compare(const void *a, const void *b) {
  const name_ref *x = a, *y = b;
  uint32_t n = x->len < y->len ? x->len : y->len;
  int c = n ? memcmp(x->bytes, y->bytes, n) : 0;
  if (c) return c;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  return x->at < y->at ? -1 : x->at > y->at;
}

/* The export's kind and index, with its type taken from what it names. */
static kiln_status resolve_export(parser *p, reader *r, kiln_wasm_export *e) {
  kiln_wasm_info *info = p->info;
  const uint8_t *at = r->pos;
  uint8_t kind;
  KILN_RETURN_IF_ERROR(read_u8(r, &kind));
  const uint8_t *idx_at = r->pos;
  KILN_RETURN_IF_ERROR(read_u32(r, &e->index));
  uint32_t x = e->index;
  kiln_externtype *t = &e->desc.type;
  switch (kind) {
    case KILN_EXTERN_FUNC:
      if (x >= info->func_count) break;
      t->kind = KILN_EXTERN_FUNC;
      t->of.func = info->types[info->func_types[x]]; /* arrays owned by types */
      return KILN_OK;
    case KILN_EXTERN_TABLE:
      if (x >= info->table_count) break;
      t->kind = KILN_EXTERN_TABLE;
      t->of.table.elem = info->tables[x].elem;
      t->of.table.limits = info->tables[x].limits;
      return KILN_OK;
    case KILN_EXTERN_MEMORY:
      if (x >= info->memory_count) break;
      t->kind = KILN_EXTERN_MEMORY;
      t->of.memory = info->memories[x].limits;
      return KILN_OK;
    case KILN_EXTERN_GLOBAL:
      if (x >= info->global_count) break;
      t->kind = KILN_EXTERN_GLOBAL;
      t->of.global.type = info->globals[x].type;
      t->of.global.is_mutable = info->globals[x].is_mutable;
      return KILN_OK;
    case KILN_EXTERN_TAG:
      if (x >= p->tag_count) break;
      t->kind = KILN_EXTERN_TAG;
      info->features.exceptions = true;
      return KILN_OK;
    default:
      return malformed(r, at, "malformed export kind 0x%02x", kind);
  }
  static const char *const kind_names[] = {"function", "table", "memory",
                                           "global", "tag"};
  return malformed(r, idx_at, "unknown %s %" PRIu32, kind_names[kind], x);
}

static kiln_status check_unique_export_names(const reader *r, name_ref *names,
                                             uint32_t n) {
  if (n < 2) return KILN_OK;
  qsort(names, n, sizeof *names, name_ref_compare);
  for (uint32_t i = 1; i < n; i++) {
    if (names[i].len == names[i - 1].len &&
        (names[i].len == 0 ||
         memcmp(names[i].bytes, names[i - 1].bytes, names[i].len) == 0)) {
      return malformed(r, names[i].at, "duplicate export name \"%.*s\"",
                       (int)(names[i].len > 64 ? 64 : names[i].len),
                       (const char *)names[i].bytes);
    }
  }
  return KILN_OK;
}

static kiln_status parse_export_section(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_count(r, &n));
  KILN_RETURN_IF_ERROR(resize_array((void **)&info->exports, 0, n,
                                    sizeof *info->exports, "exports"));
  info->export_count = n;
  name_ref *names = NULL;
  kiln_status s =
      resize_array((void **)&names, 0, n, sizeof *names, "export names");
  for (uint32_t i = 0; !s && i < n; i++) {
    name_ref *nr = &names[i];
    nr->at = r->pos;
    s = read_name(r, &nr->bytes, &nr->len);
    if (s) break;
    char *copy = malloc((size_t)nr->len + 1);
    if (!copy) {
      s = no_memory("export names");
      break;
    }
    memcpy(copy, nr->bytes, nr->len);
    copy[nr->len] = '\0';
    info->exports[i].desc.name = copy;
    s = resolve_export(p, r, &info->exports[i]);
  }
  if (!s) s = check_unique_export_names(r, names, n);
  free(names);
  return s;
}

static kiln_status parse_start_section(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  const uint8_t *at = r->pos;
  uint32_t f;
  KILN_RETURN_IF_ERROR(read_u32(r, &f));
  if (f >= info->func_count) {
    return malformed(r, at, "unknown function %" PRIu32 " (start)", f);
  }
  const kiln_functype *t = &info->types[info->func_types[f]];
  if (t->param_count != 0 || t->result_count != 0) {
    return malformed(r, at,
                     "start function %" PRIu32 " must have type [] -> []", f);
  }
  info->has_start = true;
  info->start_func = f;
  return KILN_OK;
}

/* ---- Element and data segments ------------------------------------------ */

/* One element segment in any of the eight encodings of the bulk-memory and
 * reference-types proposals. The flags: bit 0 passive or declarative (else
 * active); bit 1 with bit 0 clear: explicit table index, with bit 0 set:
 * declarative; bit 2: items are constant expressions, not function indices.
 * Encodings 0 and 4 imply table 0 and funcref. */
static kiln_status parse_elem_segment(parser *p, reader *r) {
  const uint8_t *at = r->pos;
  uint32_t flags;
  KILN_RETURN_IF_ERROR(read_u32(r, &flags));
  if (flags > 7) {
    return malformed(r, at, "malformed elements segment kind %" PRIu32, flags);
  }
  const bool active = !(flags & 1);
  const bool exprs = flags & 4;
  uint32_t table = 0;
  const uint8_t *table_at = r->pos;
  if (active) {
    if (flags & 2) {
      KILN_RETURN_IF_ERROR(
          read_index(r, p->info->table_count, "table", &table));
    } else if (p->info->table_count == 0) {
      return malformed(r, table_at, "unknown table 0");
    }
    kiln_wasm_const offset;
    KILN_RETURN_IF_ERROR(read_const_expr(p, r, KILN_I32, &offset));
  }
  kiln_valtype type = KILN_FUNCREF;
  if (flags & 3) {
    const uint8_t *kind_at = r->pos;
    if (exprs) {
      KILN_RETURN_IF_ERROR(read_reftype(r, &type));
    } else {
      uint8_t kind;
      KILN_RETURN_IF_ERROR(read_u8(r, &kind));
      if (kind != 0) {
        return malformed(r, kind_at, "malformed element kind 0x%02x", kind);
      }
    }
  }
  if (active && p->info->tables[table].elem != type) {
    return malformed(r, table_at, "type mismatch: %s segment for a %s table",
                     valtype_name(type),
                     valtype_name(p->info->tables[table].elem));
  }
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_count(r, &n));
  for (uint32_t i = 0; i < n; i++) {
    if (exprs) {
      kiln_wasm_const item;
      KILN_RETURN_IF_ERROR(read_const_expr(p, r, type, &item));
    } else {
      uint32_t f;
      KILN_RETURN_IF_ERROR(
          read_index(r, p->info->func_count, "function", &f));
    }
  }
  return KILN_OK;
}

static kiln_status parse_element_section(parser *p, reader *r) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_count(r, &n));
  p->info->elem_count = n;
  for (uint32_t i = 0; i < n; i++) {
    KILN_RETURN_IF_ERROR(parse_elem_segment(p, r));
  }
  return KILN_OK;
}

static kiln_status parse_data_count_section(parser *p, reader *r) {
  KILN_RETURN_IF_ERROR(read_u32(r, &p->data_count));
  p->has_data_count = true;
  return KILN_OK;
}

/* One data segment: flags 0 (active, memory 0), 1 (passive) or 2 (active,
 * explicit memory); active ones have an offset of the memory's index type. */
static kiln_status parse_data_segment(parser *p, reader *r,
                                      kiln_wasm_data_segment *seg) {
  kiln_wasm_info *info = p->info;
  const uint8_t *at = r->pos;
  uint32_t flags;
  KILN_RETURN_IF_ERROR(read_u32(r, &flags));
  if (flags > 2) {
    return malformed(r, at, "malformed data segment kind %" PRIu32, flags);
  }
  seg->active = flags != 1;
  if (seg->active) {
    const uint8_t *mem_at = r->pos;
    if (flags == 2) KILN_RETURN_IF_ERROR(read_u32(r, &seg->memory));
    if (seg->memory >= info->memory_count) {
      return malformed(r, mem_at, "unknown memory %" PRIu32, seg->memory);
    }
    kiln_valtype index_type =
        info->memories[seg->memory].limits.is64 ? KILN_I64 : KILN_I32;
    KILN_RETURN_IF_ERROR(read_const_expr(p, r, index_type, &seg->offset));
  }
  uint32_t size;
  KILN_RETURN_IF_ERROR(read_u32(r, &size));
  const uint8_t *bytes;
  KILN_RETURN_IF_ERROR(read_bytes(r, size, &bytes));
  seg->file_offset = (uint64_t)(bytes - r->base);
  seg->size = size;
  return KILN_OK;
}

static kiln_status parse_data_section(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  const uint8_t *at = r->pos;
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_count(r, &n));
  if (p->has_data_count && n != p->data_count) {
    return malformed(r, at,
                     "data count and data section have inconsistent "
                     "lengths (%" PRIu32 " and %" PRIu32 ")",
                     p->data_count, n);
  }
  KILN_RETURN_IF_ERROR(resize_array((void **)&info->data, 0, n,
                                    sizeof *info->data, "data segments"));
  info->data_count = n;
  for (uint32_t i = 0; i < n; i++) {
    KILN_RETURN_IF_ERROR(parse_data_segment(p, r, &info->data[i]));
  }
  return KILN_OK;
}

/* ---- Code --------------------------------------------------------------- */

/* A body the walk cannot follow further (it met an opcode of a proposal
 * whose immediates it does not decode; the engine refuses those modules by
 * feature) is only checked for its final END. */
static kiln_status end_walk_early(reader *r) {
  if (r->end[-1] != OP_END) {
    return malformed(r, r->end - 1, "END opcode expected");
  }
  r->pos = r->end;
  return KILN_OK;
}

static kiln_status skip_u32s(reader *r, uint64_t n) {
  uint32_t unused;
  for (uint64_t i = 0; i < n; i++) KILN_RETURN_IF_ERROR(read_u32(r, &unused));
  return KILN_OK;
}

/* A memory index immediate: a u32 under multi-memory, otherwise a reserved
 * single zero byte (this spec revision). */
static kiln_status skip_memory_index(parser *p, reader *r) {
  if (p->multi_memory_ok) return skip_u32s(r, 1);
  const uint8_t *at = r->pos;
  uint8_t b;
  KILN_RETURN_IF_ERROR(read_u8(r, &b));
  if (b != 0) return malformed(r, at, "zero byte expected");
  return KILN_OK;
}

/* The immediates of a load or store: alignment (with bit 6 announcing a
 * memory index under multi-memory), then the offset, 64-bit for memory64. */
static kiln_status skip_memarg(parser *p, reader *r) {
  uint32_t align;
  KILN_RETURN_IF_ERROR(read_u32(r, &align));
  if ((align & 0x40) && p->multi_memory_ok) {
    KILN_RETURN_IF_ERROR(skip_u32s(r, 1));
  }
  uint64_t offset;
  if (p->info->features.memory64) return read_u64(r, &offset);
  return skip_u32s(r, 1);
}

static kiln_status require_data_count(parser *p, reader *r, const uint8_t *at) {
  if (p->has_data_count) return KILN_OK;
  return malformed(r, at,
                   "data count section required (memory.init or "
                   "data.drop is used)");
}

/* The 0xFC-prefixed instructions: saturating truncations, bulk memory and
 * table operations. */
static kiln_status skip_misc_op(parser *p, reader *r, const uint8_t *at) {
  uint32_t sub;
  KILN_RETURN_IF_ERROR(read_u32(r, &sub));
  switch (sub) {
    case 0 ... 7: /* i32/i64.trunc_sat_f32/f64_s/u */
      return KILN_OK;
    case 8: /* memory.init data memory */
      KILN_RETURN_IF_ERROR(require_data_count(p, r, at));
      KILN_RETURN_IF_ERROR(skip_u32s(r, 1));
      return skip_memory_index(p, r);
    case 9: /* data.drop data */
      KILN_RETURN_IF_ERROR(require_data_count(p, r, at));
      return skip_u32s(r, 1);
    case 10: /* memory.copy dst src */
      KILN_RETURN_IF_ERROR(skip_memory_index(p, r));
      return skip_memory_index(p, r);
    case 11: /* memory.fill memory */
      return skip_memory_index(p, r);
    case 12: /* table.init elem table */
    case 14: /* table.copy dst src */
      return skip_u32s(r, 2);
    case 13: /* elem.drop elem */
    case 15: /* table.grow table */
    case 16: /* table.size table */
    case 17: /* table.fill table */
      return skip_u32s(r, 1);
    default:
      return malformed(r, at, "illegal opcode 0xfc %" PRIu32, sub);
  }
}

/* The immediates of one instruction of the core spec (MVP, sign extension,
 * saturating truncation, multi-value, bulk memory, reference types) and of
 * tail calls. Sets *stop for opcodes of proposals the walk does not follow
 * (SIMD, threads, exceptions), after noting the feature. */
static kiln_status skip_instr(parser *p, reader *r, uint8_t op,
                              const uint8_t *at, uint64_t *depth, bool *stop) {
  uint64_t unused64;
  kiln_wasm_features *features = &p->info->features;
  switch (op) {
    case 0x00:          /* unreachable */
    case 0x01:          /* nop */
    case 0x05:          /* else */
    case 0x0f:          /* return */
    case 0x1a:          /* drop */
    case 0x1b:          /* select */
    case 0x45 ... 0xc4: /* numeric instructions */
    case 0xd1:          /* ref.is_null */
      return KILN_OK;
    case 0x02: /* block bt (bt: an s33) */
    case 0x03: /* loop bt */
    case 0x04: /* if bt */
      (*depth)++;
      return read_leb(r, 33, true, &unused64);
    case 0x0c:          /* br label */
    case 0x0d:          /* br_if label */
    case 0x10:          /* call func */
    case 0x12:          /* return_call func */
    case 0x20 ... 0x24: /* local.get/set/tee, global.get/set */
    case 0x25:          /* table.get table */
    case 0x26:          /* table.set table */
    case 0xd2:          /* ref.func func */
      return skip_u32s(r, 1);
    case 0x11: /* call_indirect type table */
    case 0x13: /* return_call_indirect type table */
      return skip_u32s(r, 2);
    case 0x0e: { /* br_table label* label */
      uint32_t n;
      KILN_RETURN_IF_ERROR(read_count(r, &n));
      return skip_u32s(r, (uint64_t)n + 1);
    }
    case 0x1c: { /* select t* */
      uint32_t n;
      kiln_valtype t;
      KILN_RETURN_IF_ERROR(read_count(r, &n));
      for (uint32_t i = 0; i < n; i++) {
        KILN_RETURN_IF_ERROR(read_valtype(p, r, &t));
      }
      return KILN_OK;
    }
    case 0x28 ... 0x3e: /* loads and stores */
      return skip_memarg(p, r);
    case 0x3f: /* memory.size memory */
    case 0x40: /* memory.grow memory */
      return skip_memory_index(p, r);
    case OP_I32_CONST:
      return read_leb(r, 32, true, &unused64);
    case OP_I64_CONST:
      return read_leb(r, 64, true, &unused64);
    case OP_F32_CONST:
      return read_bytes(r, 4, &(const uint8_t *){0});
    case OP_F64_CONST:
      return read_bytes(r, 8, &(const uint8_t *){0});
    case OP_REF_NULL:
      return read_reftype(r, &(kiln_valtype){0});
    case OP_PREFIX_MISC:
      return skip_misc_op(p, r, at);
    case 0x06: /* try */
    case 0x07: /* catch */
    case 0x08: /* throw */
    case 0x09: /* rethrow */
    case 0x18: /* delegate */
    case 0x19: /* catch_all */
      features->exceptions = true;
      *stop = true;
      return KILN_OK;
    case OP_PREFIX_SIMD:
      features->simd = true;
      *stop = true;
      return KILN_OK;
    case OP_PREFIX_ATOMIC:
      features->threads = true;
      *stop = true;
      return KILN_OK;
    default:
      return malformed(r, at, "illegal opcode 0x%02x", op);
  }
}

/* Walks the instructions of one body knowing only how long each opcode's
 * immediates are: enough to find the END that closes the function, to spot
 * opcodes of proposals kiln cannot run, and to require the data count
 * section where the spec does. Types and stack heights are left to the
 * code generator, which validates bodies fully. */
static kiln_status walk_body(parser *p, reader *r) {
  uint64_t depth = 0; /* open blocks inside the function's own block */
  while (r->pos < r->end) {
    const uint8_t *at = r->pos;
    uint8_t op = *r->pos++;
    if (op == OP_END) {
      if (depth > 0) {
        depth--;
        continue;
      }
      if (r->pos != r->end) {
        return malformed(r, r->pos,
                         "operators remaining after the end of "
                         "the function body");
      }
      return KILN_OK;
    }
    bool stop = false;
    KILN_RETURN_IF_ERROR(skip_instr(p, r, op, at, &depth, &stop));
    if (stop) return end_walk_early(r);
  }
  return malformed(r, r->pos,
                   "unexpected end of function: END opcode expected");
}

/* Local declarations: groups of (count, type). Params count too. */
static kiln_status read_locals(parser *p, reader *r, uint32_t func) {
  const kiln_wasm_info *info = p->info;
  uint64_t total = info->types[info->func_types[func]].param_count;
  uint32_t groups;
  KILN_RETURN_IF_ERROR(read_count(r, &groups));
  for (uint32_t i = 0; i < groups; i++) {
    const uint8_t *at = r->pos;
    uint32_t n;
    kiln_valtype t;
    KILN_RETURN_IF_ERROR(read_u32(r, &n));
    total += n; /* at most 2^32 groups of at most 2^32-1: no overflow */
    if (total > KILN_WASM_MAX_LOCALS) {
      return malformed(r, at,
                       "too many locals (more than %d in function %" PRIu32 ")",
                       KILN_WASM_MAX_LOCALS, func);
    }
    KILN_RETURN_IF_ERROR(read_valtype(p, r, &t));
  }
  return KILN_OK;
}

static kiln_status parse_body(parser *p, reader *r, uint32_t func) {
  const uint8_t *at = r->pos;
  uint32_t size;
  KILN_RETURN_IF_ERROR(read_u32(r, &size));
  if (size > left(r)) {
    return malformed(r, at,
                     "unexpected end: function body size %" PRIu32
                     " runs past the code section",
                     size);
  }
  reader body = {r->base, r->pos, r->pos + size};
  r->pos += size;
  KILN_RETURN_IF_ERROR(read_locals(p, &body, func));
  return walk_body(p, &body);
}

static kiln_status parse_code_section(parser *p, reader *r) {
  const uint8_t *at = r->pos;
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_count(r, &n));
  if (n != p->defined_func_count) {
    return malformed(r, at,
                     "function and code section have inconsistent "
                     "lengths (%" PRIu32 " and %" PRIu32 ")",
                     p->defined_func_count, n);
  }
  p->code_count = n;
  for (uint32_t i = 0; i < n; i++) {
    KILN_RETURN_IF_ERROR(parse_body(p, r, p->info->func_import_count + i));
  }
  return KILN_OK;
}

/* ---- Custom sections and names ------------------------------------------ */

static kiln_status parse_custom_section(parser *p, reader *r) {
  const uint8_t *name;
  uint32_t len;
  KILN_RETURN_IF_ERROR(read_name(r, &name, &len));
  if (len == 4 && memcmp(name, "name", 4) == 0 && !p->names) {
    p->names = r->pos;
    p->names_end = r->end;
  }
  r->pos = r->end; /* the payload is free-form */
  return KILN_OK;
}

/* A name map (index, name)* into names[0..limit), allocated on first use. */
static kiln_status read_name_map(reader *r, uint32_t limit, char ***names) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(read_count(r, &n));
  if (!*names && limit > 0) {
    *names = calloc(limit, sizeof **names);
    if (!*names) return no_memory("names");
  }
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *at = r->pos;
    uint32_t index;
    char *name;
    KILN_RETURN_IF_ERROR(read_u32(r, &index));
    if (index >= limit) {
      return malformed(r, at, "name for unknown index %" PRIu32, index);
    }
    KILN_RETURN_IF_ERROR(read_name_dup(r, &name));
    free((*names)[index]);
    (*names)[index] = name;
  }
  return KILN_OK;
}

/* The "name" section's subsections: module (0), functions (1), globals (7);
 * others are skipped. */
static kiln_status read_names(parser *p, reader *r) {
  kiln_wasm_info *info = p->info;
  while (r->pos < r->end) {
    const uint8_t *at = r->pos;
    uint8_t id;
    uint32_t size;
    KILN_RETURN_IF_ERROR(read_u8(r, &id));
    KILN_RETURN_IF_ERROR(read_u32(r, &size));
    if (size > left(r)) {
      return malformed(r, at, "name subsection runs past its section");
    }
    reader sub = {r->base, r->pos, r->pos + size};
    r->pos += size;
    if (id == 0) {
      free(info->module_name);
      info->module_name = NULL;
      KILN_RETURN_IF_ERROR(read_name_dup(&sub, &info->module_name));
    } else if (id == 1) {
      KILN_RETURN_IF_ERROR(
          read_name_map(&sub, info->func_count, &info->func_names));
    } else if (id == 7) {
      KILN_RETURN_IF_ERROR(
          read_name_map(&sub, info->global_count, &info->global_names));
    } else {
      sub.pos = sub.end;
    }
    if (sub.pos != sub.end) {
      return malformed(r, sub.pos, "name subsection size mismatch");
    }
  }
  return KILN_OK;
}

static void free_names(char **names, uint32_t count) {
  if (!names) return;
  for (uint32_t i = 0; i < count; i++) free(names[i]);
  free(names);
}

static void drop_names(kiln_wasm_info *info) {
  free(info->module_name);
  free_names(info->func_names, info->func_count);
  free_names(info->global_names, info->global_count);
  info->module_name = NULL;
  info->func_names = NULL;
  info->global_names = NULL;
}

/* Names are debug information: a malformed name section leaves the module
 * valid and nameless. Only running out of memory is an error here. */
static kiln_status parse_names(parser *p, const uint8_t *base) {
  if (!p->names) return KILN_OK;
  reader r = {base, p->names, p->names_end};
  kiln_status s = read_names(p, &r);
  if (!s) return KILN_OK;
  drop_names(p->info);
  if (kiln_status_code(s) == KILN_CODE_RESOURCE_EXHAUSTED) return s;
  kiln_status_free(s);
  return KILN_OK;
}

/* ---- Module ------------------------------------------------------------- */

typedef kiln_status (*section_parser)(parser *p, reader *r);

/* Non-custom sections by id, with their rank in the required order (the
 * data count section sits between element and code, tags between memory
 * and global). */
static const struct {
  const char *name;
  int rank;
  section_parser parse;
} kSections[] = {
    [1] = {"type", 1, parse_type_section},
    [2] = {"import", 2, parse_import_section},
    [3] = {"function", 3, parse_function_section},
    [4] = {"table", 4, parse_table_section},
    [5] = {"memory", 5, parse_memory_section},
    [13] = {"tag", 6, parse_tag_section},
    [6] = {"global", 7, parse_global_section},
    [7] = {"export", 8, parse_export_section},
    [8] = {"start", 9, parse_start_section},
    [9] = {"element", 10, parse_element_section},
    [12] = {"data count", 11, parse_data_count_section},
    [10] = {"code", 12, parse_code_section},
    [11] = {"data", 13, parse_data_section},
};

static kiln_status parse_section(parser *p, reader *r) {
  const uint8_t *at = r->pos;
  uint8_t id;
  uint32_t size;
  KILN_RETURN_IF_ERROR(read_u8(r, &id));
  KILN_RETURN_IF_ERROR(read_u32(r, &size));
  if (size > left(r)) {
    return malformed(r, at,
                     "unexpected end: section size %" PRIu32
                     " runs past the end of the module (%" PRIu64
                     " bytes left)",
                     size, left(r));
  }
  reader sec = {r->base, r->pos, r->pos + size};
  r->pos += size;
  const char *name = "custom";
  if (id == 0) {
    KILN_RETURN_IF_ERROR(parse_custom_section(p, &sec));
  } else {
    if (id >= sizeof kSections / sizeof kSections[0] || !kSections[id].name) {
      return malformed(r, at, "malformed section id %u", id);
    }
    name = kSections[id].name;
    if (p->seen[id]) {
      return malformed(r, at, "junk after last section: duplicate %s section",
                       name);
    }
    if (kSections[id].rank < p->last_rank) {
      return malformed(
          r, at, "junk after last section: %s section out of order", name);
    }
    p->seen[id] = true;
    p->last_rank = kSections[id].rank;
    p->section_at = at;
    KILN_RETURN_IF_ERROR(kSections[id].parse(p, &sec));
  }
  if (sec.pos != sec.end) {
    return malformed(r, sec.pos,
                     "section size mismatch: %" PRIu64
                     " bytes left over in the %s section",
                     left(&sec), name);
  }
  return KILN_OK;
}

static kiln_status read_header(reader *r) {
  static const uint8_t kMagic[4] = {0x00, 0x61, 0x73, 0x6d}; /* \0asm */
  const uint8_t *bytes;
  KILN_RETURN_IF_ERROR(read_bytes(r, 4, &bytes));
  if (memcmp(bytes, kMagic, 4) != 0) {
    return malformed(r, bytes, "magic header not detected");
  }
  KILN_RETURN_IF_ERROR(read_bytes(r, 4, &bytes));
  if (memcmp(bytes, "\x01\x00\x00\x00", 4) != 0) {
    return malformed(r, bytes, "unknown binary version");
  }
  return KILN_OK;
}

static kiln_status parse_module(parser *p, reader *r) {
  KILN_RETURN_IF_ERROR(read_header(r));
  while (r->pos < r->end) KILN_RETURN_IF_ERROR(parse_section(p, r));
  if (p->code_count != p->defined_func_count) {
    return malformed(r, r->pos,
                     "function and code section have inconsistent "
                     "lengths (%" PRIu32 " and %" PRIu32 ")",
                     p->defined_func_count, p->code_count);
  }
  if (p->has_data_count && p->data_count != p->info->data_count) {
    return malformed(r, r->pos,
                     "data count and data section have "
                     "inconsistent lengths (%" PRIu32 " and %" PRIu32 ")",
                     p->data_count, p->info->data_count);
  }
  return parse_names(p, r->base);
}

kiln_status kiln_wasm_parse(const uint8_t *bytes, size_t size,
                            const kiln_wasm_parse_options *opts,
                            kiln_wasm_info **out) {
  if (!out || (!bytes && size > 0)) {
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "kiln_wasm_parse: bytes and out are required");
  }
  *out = NULL;
  static const uint8_t kEmpty[1];
  if (!bytes) bytes = kEmpty; /* size 0: fails as "unexpected end" */
  kiln_wasm_info *info = calloc(1, sizeof *info);
  if (!info) return no_memory("info");
  parser p = {.info = info,
              .multi_memory_ok = opts && opts->enable_multi_memory};
  reader r = {bytes, bytes, bytes + size};
  kiln_status s = parse_module(&p, &r);
  if (s) {
    kiln_wasm_info_free(info);
    return s;
  }
  *out = info;
  return KILN_OK;
}

void kiln_wasm_info_free(kiln_wasm_info *info) {
  if (!info) return;
  /* Function types own their arrays; imports and exports of functions hold
   * copies of the same pointers and must not free them. */
  for (uint32_t i = 0; i < info->type_count; i++) {
    free((void *)info->types[i].params);
    free((void *)info->types[i].results);
  }
  free(info->types);
  for (uint32_t i = 0; i < info->import_count; i++) {
    free((void *)info->imports[i].module);
    free((void *)info->imports[i].name);
  }
  free(info->imports);
  free(info->import_index);
  free(info->import_field_at);
  free(info->import_field_end);
  free(info->func_types);
  free(info->tables);
  free(info->memories);
  free(info->globals);
  for (uint32_t i = 0; i < info->export_count; i++) {
    free((void *)info->exports[i].desc.name);
  }
  free(info->exports);
  free(info->data);
  drop_names(info);
  free(info);
}

/* ---- Import names for code generators ----------------------------------- */

typedef struct import_key {
  const char *module, *name;
  uint32_t index;
} import_key;

static int import_pair_compare(const char *module_a, const char *name_a,
                               const char *module_b, const char *name_b) {
  int c = strcmp(module_a, module_b);
  return c ? c : strcmp(name_a, name_b);
}

static int import_key_compare(const void *a, const void *b) {
  const import_key *x = a, *y = b;
  int c = import_pair_compare(x->module, x->name, y->module, y->name);
  if (c) return c;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* Whether (module, name) is an import's pair; keys sorted by pair. */
static bool import_pair_taken(const import_key *keys, uint32_t n,
                              const char *module, const char *name) {
  uint32_t lo = 0, hi = n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    int c = import_pair_compare(keys[mid].module, keys[mid].name, module, name);
    if (c == 0) return true;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return false;
}

static size_t leb_u32_size(uint32_t v) {
  size_t n = 1;
  while (v >>= 7) n++;
  return n;
}

static uint8_t *leb_u32_put(uint8_t *out, uint32_t v) {
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    *out++ = (uint8_t)(b | (v ? 0x80 : 0));
  } while (v);
  return out;
}

/* Whether import i's field name, as encoded, holds a NUL byte. */
static bool field_has_nul(const uint8_t *bytes, const kiln_wasm_info *info,
                          uint32_t i) {
  reader r = {bytes, bytes + info->import_field_at[i],
              bytes + info->import_field_end[i]};
  const uint8_t *name;
  uint32_t len;
  kiln_status s = read_name(&r, &name, &len);
  if (s) { /* cannot happen for a parsed module; rename to be safe */
    kiln_status_free(s);
    return true;
  }
  return memchr(name, 0, len) != NULL;
}

/* "<name>#<i>", with "#<i>" repeated while another import of the same
 * module has that name. Such names cannot collide with each other: the
 * text after the last '#' is the import's own index. */
static char *unique_name(const import_key *keys, uint32_t n,
                         const kiln_import *im, uint32_t i) {
  char suffix[16];
  int slen = snprintf(suffix, sizeof suffix, "#%" PRIu32, i);
  size_t len = strlen(im->name);
  char *name = malloc(len + 1);
  if (!name) return NULL;
  memcpy(name, im->name, len + 1);
  do {
    char *longer = realloc(name, len + (size_t)slen + 1);
    if (!longer) {
      free(name);
      return NULL;
    }
    name = longer;
    memcpy(name + len, suffix, (size_t)slen + 1);
    len += (size_t)slen;
  } while (import_pair_taken(keys, n, im->module, name));
  return name;
}

void kiln_wasm_names_free(char **names, uint32_t count) {
  free_names(names, count);
}

/* The new names; *out NULL when every import keeps its own. */
static kiln_status choose_import_names(const uint8_t *bytes,
                                       const kiln_wasm_info *info,
                                       char ***out) {
  *out = NULL;
  uint32_t n = info->import_count;
  if (n == 0) return KILN_OK;
  import_key *keys = malloc((size_t)n * sizeof *keys);
  if (!keys) return no_memory("import names");
  for (uint32_t i = 0; i < n; i++)
    keys[i] = (import_key){info->imports[i].module, info->imports[i].name, i};
  qsort(keys, n, sizeof *keys, import_key_compare);
  char **names = NULL;
  kiln_status s = KILN_OK;
  for (uint32_t k = 0; k < n && !s; k++) {
    uint32_t i = keys[k].index;
    bool repeats = k > 0 && !import_pair_compare(keys[k - 1].module,
                                                 keys[k - 1].name,
                                                 keys[k].module, keys[k].name);
    if (!repeats && !field_has_nul(bytes, info, i)) continue;
    if (!names && !(names = calloc(n, sizeof *names))) {
      s = no_memory("import names");
      break;
    }
    names[i] = unique_name(keys, n, &info->imports[i], i);
    if (!names[i]) s = no_memory("import names");
  }
  free(keys);
  if (s) {
    free_names(names, n);
    return s;
  }
  *out = names;
  return KILN_OK;
}

kiln_status kiln_wasm_unique_import_names(const uint8_t *bytes, size_t size,
                                          const kiln_wasm_info *info,
                                          char ***out_names,
                                          uint8_t **out_bytes,
                                          size_t *out_size) {
  *out_names = NULL;
  *out_bytes = NULL;
  *out_size = 0;
  char **names;
  KILN_RETURN_IF_ERROR(choose_import_names(bytes, info, &names));
  if (!names) return KILN_OK;

  /* The import section's contents with the new names in. */
  uint64_t body = info->import_section_end - info->import_section_body;
  for (uint32_t i = 0; i < info->import_count; i++) {
    if (!names[i]) continue;
    size_t len = strlen(names[i]);
    body -= info->import_field_end[i] - info->import_field_at[i];
    body += leb_u32_size((uint32_t)len) + len;
  }
  if (body > UINT32_MAX) {
    free_names(names, info->import_count);
    return kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                            "the import section would exceed 4 GiB once "
                            "its names are made unique");
  }
  size_t total = (size_t)info->import_section_at + 1 +
                 leb_u32_size((uint32_t)body) + (size_t)body +
                 (size - (size_t)info->import_section_end);
  uint8_t *out = malloc(total);
  if (!out) {
    free_names(names, info->import_count);
    return no_memory("module copy");
  }
  uint8_t *w = out;
  memcpy(w, bytes, (size_t)info->import_section_at);
  w += info->import_section_at;
  *w++ = 2; /* the import section's id */
  w = leb_u32_put(w, (uint32_t)body);
  uint64_t pos = info->import_section_body;
  for (uint32_t i = 0; i < info->import_count; i++) {
    if (!names[i]) continue;
    memcpy(w, bytes + pos, (size_t)(info->import_field_at[i] - pos));
    w += info->import_field_at[i] - pos;
    size_t len = strlen(names[i]);
    w = leb_u32_put(w, (uint32_t)len);
    memcpy(w, names[i], len);
    w += len;
    pos = info->import_field_end[i];
  }
  memcpy(w, bytes + pos, size - (size_t)pos);
  *out_names = names;
  *out_bytes = out;
  *out_size = total;
  return KILN_OK;
}

int64_t kiln_wasm_stack_pointer_global(const kiln_wasm_info *info) {
  if (!info || !info->global_names) return -1;
  for (uint32_t i = 0; i < info->global_count; i++) {
    const char *name = info->global_names[i];
    const kiln_wasm_global *g = &info->globals[i];
    if (name && strcmp(name, "__stack_pointer") == 0 && !g->imported &&
        g->is_mutable && g->type == KILN_I32) {
      return i;
    }
  }
  return -1;
}
