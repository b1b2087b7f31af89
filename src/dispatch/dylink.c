/* Reading the dylink.0 custom section of position-independent modules. */
#include <string.h>

#include "dispatch/dispatch_internal.h"

typedef struct reader {
  const uint8_t *p, *end;
  bool bad;
} reader;

static uint64_t uleb(reader *r) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) break;
    uint8_t b = *r->p++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  r->bad = true;
  return 0;
}

static kiln_status bad(const char *why) {
  return kiln_make_status(KILN_CODE_INVALID_MODULE, "dylink.0 section: %s",
                          why);
}

kiln_status kiln_dylink_read(const uint8_t *bytes, size_t size,
                             kiln_dylink_info *out) {
  memset(out, 0, sizeof *out);
  if (size < 8 || memcmp(bytes, "\0asm", 4))
    return kiln_make_status(KILN_CODE_INVALID_MODULE, "not a .wasm module");
  reader r = {bytes + 8, bytes + size, false};
  /* dylink.0 must be the first section; look at the first few anyway. */
  while (r.p < r.end) {
    uint8_t id = *r.p++;
    uint64_t len = uleb(&r);
    if (r.bad || len > (uint64_t)(r.end - r.p)) return KILN_OK; /* engine's to report */
    reader sec = {r.p, r.p + len, false};
    r.p += len;
    if (id != 0) continue;
    uint64_t nlen = uleb(&sec);
    if (sec.bad || nlen > (uint64_t)(sec.end - sec.p)) continue;
    bool is_dylink = nlen == 8 && !memcmp(sec.p, "dylink.0", 8);
    sec.p += nlen;
    if (!is_dylink) continue;
    out->present = true;
    while (sec.p < sec.end) {
      uint8_t type = *sec.p++;
      uint64_t slen = uleb(&sec);
      if (sec.bad || slen > (uint64_t)(sec.end - sec.p))
        return bad("truncated subsection");
      reader sub = {sec.p, sec.p + slen, false};
      sec.p += slen;
      if (type != 1) continue; /* WASM_DYLINK_MEM_INFO */
      out->mem_size = uleb(&sub);
      out->mem_p2align = (uint32_t)uleb(&sub);
      out->table_size = uleb(&sub);
      out->table_p2align = (uint32_t)uleb(&sub);
      if (sub.bad || out->mem_p2align > 31 || out->mem_size > UINT32_MAX)
        return bad("bad memory info");
    }
    return KILN_OK;
  }
  return KILN_OK;
}
