/* A hostile guest: it calls every kiln_gpu import with bad arguments:
 * struct pointers outside its memory, operands past the end, offset plus
 * length overflowing 32 and 64 bits, shape products that overflow,
 * negative and absurd strides, misaligned bf16 and f32, unknown memory
 * handles (including handles that exist in other sessions), garbage op
 * kinds, dtypes, ranks, flags and reserved fields, bad placements, bad
 * program handles, device-side failures (a token id outside the table).
 *
 * Each call must return a negative code (the exact one where the ABI fixes
 * it) and must not trap; after every attack a valid op must still give the
 * right answer. Prints failures and a summary; exits with the number of
 * failed expectations. Arguments: rounds (default 1), then -v to print
 * every call's code and message. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_gpu.h"

static int failures, checks, verbose;

#define FAIL(...)                               \
  do {                                          \
    failures++;                                 \
    fprintf(stderr, "gpu_hostile: " __VA_ARGS__); \
    fprintf(stderr, "\n");                      \
  } while (0)

/* got must be want1 or (when non-zero) want2. */
static void expect(const char *what, int32_t got, int32_t want1,
                   int32_t want2) {
  checks++;
  char msg[300];
  if (verbose) {
    kiln_gpu_last_error(msg, sizeof msg);
    printf("%-40s %4d  %s\n", what, got, got < 0 ? msg : "");
  }
  if (got == want1 || (want2 && got == want2)) return;
  kiln_gpu_last_error(msg, sizeof msg);
  FAIL("%s: got %d, want %d%s%s (last error: %s)", what, got, want1,
       want2 ? " or " : "", want2 ? "another" : "", msg);
}

/* A bad op must be refused with INVALID or RANGE. */
static void expect_refused(const char *what, int32_t got) {
  expect(what, got, KILN_GPU_E_INVALID, KILN_GPU_E_RANGE);
}

static float va[64], vb[64], vc[64];

/* The valid op after each attack: c = a + b on 64 floats, checked. */
static void still_works(const char *after) {
  static int round;
  round++;
  for (int i = 0; i < 64; i++) {
    va[i] = (float)(i + round);
    vb[i] = (float)(i * 2);
    vc[i] = -1;
  }
  int32_t r = kiln_gpu_binary(KILN_GPU_OP_ADD,
                              kiln_gpu_tensor_1d(va, KILN_GPU_F32, 64),
                              kiln_gpu_tensor_1d(vb, KILN_GPU_F32, 64),
                              kiln_gpu_tensor_1d(vc, KILN_GPU_F32, 64));
  int32_t s = kiln_gpu_sync();
  checks++;
  if (r || s) {
    char msg[300];
    kiln_gpu_last_error(msg, sizeof msg);
    FAIL("valid op after '%s': submit %d sync %d: %s", after, r, s, msg);
    return;
  }
  for (int i = 0; i < 64; i++)
    if (vc[i] != (float)(i + round + i * 2)) {
      FAIL("valid op after '%s': c[%d] = %g", after, i, vc[i]);
      return;
    }
}

/* A valid add op to corrupt one field at a time. */
static kiln_gpu_op base_op(void) {
  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_ADD);
  op.a = kiln_gpu_tensor_1d(va, KILN_GPU_F32, 64);
  op.b = kiln_gpu_tensor_1d(vb, KILN_GPU_F32, 64);
  op.c = kiln_gpu_tensor_1d(vc, KILN_GPU_F32, 64);
  return op;
}

static uint64_t memory_bytes(void) {
  return (uint64_t)__builtin_wasm_memory_size(0) * 65536u;
}

static void attack_struct_pointers(void) {
  uint64_t size = memory_bytes();
  /* The op struct itself outside memory, or straddling its end. */
  expect("op ptr at end", kiln_gpu_submit((const kiln_gpu_op *)(uintptr_t)
                                              (size - 100)),
         KILN_GPU_E_FAULT, 0);
  expect("op ptr 0xffffff00",
         kiln_gpu_submit((const kiln_gpu_op *)(uintptr_t)0xffffff00u),
         KILN_GPU_E_FAULT, 0);
  expect("op ptr 0xffffffff",
         kiln_gpu_submit((const kiln_gpu_op *)(uintptr_t)0xffffffffu),
         KILN_GPU_E_FAULT, 0);
  expect("stats ptr at end",
         kiln_gpu_stats_get((kiln_gpu_stats *)(uintptr_t)(size - 8)),
         KILN_GPU_E_FAULT, 0);
  expect("last_error buf past end",
         kiln_gpu_last_error((char *)(uintptr_t)(size - 4), 64),
         KILN_GPU_E_FAULT, 0);
  expect("last_error len wraps",
         kiln_gpu_last_error((char *)(uintptr_t)0x10, 0xffffffffu),
         KILN_GPU_E_FAULT, 0);
  expect("lookup name past end",
         kiln_gpu_memory_lookup((const char *)(uintptr_t)(size - 2), 10),
         KILN_GPU_E_FAULT, 0);
  expect("lookup name too long",
         kiln_gpu_memory_lookup("x", 100000), KILN_GPU_E_NOT_FOUND, 0);
  expect("lookup unknown name", kiln_gpu_memory_lookup("nope", 4),
         KILN_GPU_E_NOT_FOUND, 0);
  kiln_gpu_tensor t;
  expect("tensor_lookup unknown", kiln_gpu_tensor_lookup("nope", 4, &t),
         KILN_GPU_E_NOT_FOUND, 0);
  int32_t r = kiln_gpu_address(0, 64, (uint64_t *)(uintptr_t)(size - 4));
  expect("address out ptr past end", r, KILN_GPU_E_FAULT, KILN_GPU_E_STATE);
  still_works("struct pointers");
}

static void attack_offsets(void) {
  uint64_t size = memory_bytes();
  kiln_gpu_op op = base_op();
  op.c.offset = size;                         /* one past the end */
  expect_refused("output at end of memory", kiln_gpu_submit(&op));
  op = base_op();
  op.c.offset = size - 64 * 4 + 4;            /* last element past the end */
  expect_refused("output straddles end", kiln_gpu_submit(&op));
  op = base_op();
  op.a.offset = 0xfffff000u;                  /* + 256 B: past 4 GiB */
  expect_refused("offset+length over 32 bits", kiln_gpu_submit(&op));
  op = base_op();
  op.a.offset = 0x100000000ull;               /* beyond any 32-bit memory */
  expect_refused("offset 4 GiB", kiln_gpu_submit(&op));
  op = base_op();
  op.a.offset = UINT64_MAX - 8;               /* + 256 B wraps 64 bits */
  expect_refused("offset+length wraps 64 bits", kiln_gpu_submit(&op));
  op = base_op();
  op.a.offset = UINT64_MAX;
  expect_refused("offset UINT64_MAX", kiln_gpu_submit(&op));
  still_works("offsets");
}

static void attack_shapes(void) {
  kiln_gpu_op op = base_op();
  /* 2^62 elements of 4 bytes: the byte size overflows 64 bits. */
  int64_t big[1] = {(int64_t)1 << 62};
  op.a = kiln_gpu_tensor_at(0, kiln_gpu_offset_of(va), KILN_GPU_F32, 1, big);
  op.b = op.c = op.a;
  expect_refused("2^62 elements", kiln_gpu_submit(&op));
  /* Shape product overflows: 2^20 * 2^20 * 2^20 * 2^20. */
  int64_t s4[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
  op = base_op();
  op.a = kiln_gpu_tensor_at(0, kiln_gpu_offset_of(va), KILN_GPU_F32, 4, s4);
  op.b = op.c = op.a;
  expect_refused("shape product 2^80", kiln_gpu_submit(&op));
  int64_t smax[2] = {INT64_MAX, 2};
  op = base_op();
  op.a = kiln_gpu_tensor_at(0, kiln_gpu_offset_of(va), KILN_GPU_F32, 2, smax);
  op.b = op.c = op.a;
  expect_refused("shape INT64_MAX x 2", kiln_gpu_submit(&op));
  op = base_op();
  op.a.shape[0] = -64;
  expect_refused("negative shape", kiln_gpu_submit(&op));
  /* Shapes that disagree between operands. */
  op = base_op();
  op.c.shape[0] = 32;
  expect_refused("add shape mismatch", kiln_gpu_submit(&op));
  kiln_gpu_op g = kiln_gpu_op_make(KILN_GPU_OP_GEMM);
  g.a = kiln_gpu_tensor_2d(va, KILN_GPU_F32, 8, 8);
  g.b = kiln_gpu_tensor_2d(vb, KILN_GPU_F32, 4, 16);
  g.c = kiln_gpu_tensor_2d(vc, KILN_GPU_F32, 8, 16);
  expect_refused("gemm inner dims mismatch", kiln_gpu_submit(&g));
  still_works("shapes");
}

static void attack_strides(void) {
  int64_t shape[2] = {8, 8};
  kiln_gpu_op op = base_op();
  op.a = kiln_gpu_tensor_at(0, kiln_gpu_offset_of(va), KILN_GPU_F32, 2, shape);
  op.b = kiln_gpu_tensor_at(0, kiln_gpu_offset_of(vb), KILN_GPU_F32, 2, shape);
  op.c = kiln_gpu_tensor_at(0, kiln_gpu_offset_of(vc), KILN_GPU_F32, 2, shape);
  kiln_gpu_op bad = op;
  bad.a.stride[0] = -8;
  bad.a.stride[1] = 1;
  expect_refused("negative stride", kiln_gpu_submit(&bad));
  bad = op;
  bad.a.stride[0] = (int64_t)1 << 61;  /* absurd: 2^63 bytes away */
  bad.a.stride[1] = 1;
  expect_refused("absurd stride", kiln_gpu_submit(&bad));
  bad = op;
  bad.a.stride[0] = INT64_MAX;
  bad.a.stride[1] = INT64_MAX;
  expect_refused("INT64_MAX strides", kiln_gpu_submit(&bad));
  bad = op;
  bad.a.stride[0] = 1 << 24;          /* inside int64, outside memory */
  bad.a.stride[1] = 1;
  expect_refused("stride past memory", kiln_gpu_submit(&bad));
  bad = op;
  bad.c.stride[0] = 0;                /* an output row written 8 times */
  bad.c.stride[1] = 1;
  expect_refused("zero stride on output", kiln_gpu_submit(&bad));
  bad = op;
  bad.a.stride[2] = 4;                /* beyond rank */
  expect("stride beyond rank", kiln_gpu_submit(&bad), KILN_GPU_E_INVALID, 0);
  still_works("strides");
}

static void attack_alignment(void) {
  static uint16_t h[256];
  static float f[256];
  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_COPY);
  op.a = kiln_gpu_tensor_1d(f, KILN_GPU_F32, 16);
  op.b = kiln_gpu_tensor_1d((const uint8_t *)h + 1, KILN_GPU_BF16, 16);
  expect_refused("misaligned bf16 output", kiln_gpu_submit(&op));
  op.a = kiln_gpu_tensor_1d((const uint8_t *)f + 2, KILN_GPU_F32, 16);
  op.b = kiln_gpu_tensor_1d(h, KILN_GPU_BF16, 16);
  expect_refused("misaligned f32 input", kiln_gpu_submit(&op));
  kiln_gpu_op g = kiln_gpu_op_make(KILN_GPU_OP_GEMM);
  g.a = kiln_gpu_tensor_2d((const uint8_t *)h + 1, KILN_GPU_BF16, 4, 4);
  g.b = kiln_gpu_tensor_2d(h + 64, KILN_GPU_BF16, 4, 4);
  g.c = kiln_gpu_tensor_2d(f, KILN_GPU_F32, 4, 4);
  expect_refused("misaligned bf16 gemm", kiln_gpu_submit(&g));
  still_works("alignment");
}

static void attack_handles(void) {
  kiln_gpu_op op = base_op();
  uint32_t handles[] = {1, 2, 7, 0x7fffffffu, 0xffffffffu};
  for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++) {
    /* Handles the host never granted to this session (other sessions may
     * have grants with these numbers: they mean nothing here). */
    op = base_op();
    op.b.mem = handles[i];
    char what[64];
    snprintf(what, sizeof what, "operand in memory handle %u", handles[i]);
    expect(what, kiln_gpu_submit(&op), KILN_GPU_E_HANDLE, 0);
    expect("place on foreign handle",
           kiln_gpu_place(handles[i], 0, 4096, KILN_GPU_PLACEMENT_RESIDENT),
           KILN_GPU_E_HANDLE, 0);
    expect("placement of foreign handle", kiln_gpu_placement(handles[i], 0),
           KILN_GPU_E_HANDLE, 0);
  }
  expect("memory_lookup of another session's grant",
         kiln_gpu_memory_lookup("weights", 7), KILN_GPU_E_NOT_FOUND, 0);
  still_works("handles");
}

static void attack_fields(void) {
  uint32_t kinds[] = {KILN_GPU_OP_KIND_COUNT, 9999, 0x80000000u, 0xffffffffu};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    kiln_gpu_op op = base_op();
    op.kind = kinds[i];
    expect("garbage op kind", kiln_gpu_submit(&op), KILN_GPU_E_INVALID, 0);
  }
  kiln_gpu_op op = base_op();
  op.a.dtype = KILN_GPU_Q8_0 + 1;
  expect("unknown dtype", kiln_gpu_submit(&op), KILN_GPU_E_INVALID, 0);
  op = base_op();
  op.a.dtype = 0xffffffffu;
  expect("dtype 0xffffffff", kiln_gpu_submit(&op), KILN_GPU_E_INVALID, 0);
  op = base_op();
  op.a.rank = 5;
  expect("rank 5", kiln_gpu_submit(&op), KILN_GPU_E_INVALID, 0);
  op = base_op();
  op.a.rank = 0xffffffffu;
  expect("rank 0xffffffff", kiln_gpu_submit(&op), KILN_GPU_E_INVALID, 0);
  op = base_op();
  op.a.reserved = 1;
  expect("tensor reserved", kiln_gpu_submit(&op), KILN_GPU_E_INVALID, 0);
  op = base_op();
  op.reserved = 0xdead;
  expect("op reserved", kiln_gpu_submit(&op), KILN_GPU_E_INVALID, 0);
  op = base_op();
  op.flags = 0x80;
  expect("unknown flags", kiln_gpu_submit(&op), KILN_GPU_E_INVALID, 0);
  op = base_op();
  op.d.offset = 64;  /* an absent operand with fields set */
  expect("absent operand with offset", kiln_gpu_submit(&op),
         KILN_GPU_E_INVALID, 0);
  op = base_op();
  op.c = (kiln_gpu_tensor){0};  /* output missing */
  expect_refused("missing output", kiln_gpu_submit(&op));
  op = base_op();
  op.c.dtype = KILN_GPU_I32;  /* wrong output dtype */
  expect_refused("i32 output of add", kiln_gpu_submit(&op));
  /* A fully random op struct. */
  unsigned seed = 12345;
  for (int k = 0; k < 200; k++) {
    uint32_t *w = (uint32_t *)&op;
    for (size_t i = 0; i < sizeof op / 4; i++) {
      seed = seed * 1103515245u + 12345u;
      w[i] = seed ^ (seed >> 13);
    }
    int32_t r = kiln_gpu_submit(&op);
    checks++;
    if (r >= 0) FAIL("random op %d accepted", k);
  }
  still_works("fields");
}

static void attack_placement_and_programs(void) {
  uint64_t size = memory_bytes();
  expect("place bad placement", kiln_gpu_place(0, 0, 4096, 7),
         KILN_GPU_E_INVALID, 0);
  expect("place NONE", kiln_gpu_place(0, 0, 4096, 0), KILN_GPU_E_INVALID, 0);
  expect("place past end",
         kiln_gpu_place(0, size - 4096, 8192, KILN_GPU_PLACEMENT_RESIDENT),
         KILN_GPU_E_RANGE, 0);
  expect("place length wraps",
         kiln_gpu_place(0, 4096, UINT64_MAX, KILN_GPU_PLACEMENT_RESIDENT),
         KILN_GPU_E_RANGE, 0);
  expect("place DEVICE past end",
         kiln_gpu_place(0, size - 4096, 8192, KILN_GPU_PLACEMENT_DEVICE),
         KILN_GPU_E_RANGE, 0);
  expect("place DEVICE length wraps",
         kiln_gpu_place(0, 4096, UINT64_MAX, KILN_GPU_PLACEMENT_DEVICE),
         KILN_GPU_E_RANGE, 0);
  expect("placement past end", kiln_gpu_placement(0, size), KILN_GPU_E_RANGE,
         0);
  expect("program_end without begin", kiln_gpu_program_end(),
         KILN_GPU_E_STATE, 0);
  expect("program_submit 999", kiln_gpu_program_submit(999),
         KILN_GPU_E_HANDLE, 0);
  expect("program_submit 0", kiln_gpu_program_submit(0), KILN_GPU_E_HANDLE, 0);
  expect("program_submit -1", kiln_gpu_program_submit(-1), KILN_GPU_E_HANDLE,
         0);
  expect("program_free -5", kiln_gpu_program_free(-5), KILN_GPU_E_HANDLE, 0);
  expect("program_begin", kiln_gpu_program_begin(), 0, 0);
  expect("program_begin twice", kiln_gpu_program_begin(), KILN_GPU_E_STATE,
         0);
  kiln_gpu_op op = base_op();
  op.a.offset = size;  /* refused while recording too */
  expect_refused("bad op while recording", kiln_gpu_submit(&op));
  op = base_op();
  expect("valid op while recording", kiln_gpu_submit(&op), 0, 0);
  int32_t h = kiln_gpu_program_end();
  checks++;
  if (h < 1) FAIL("program_end = %d", h);
  expect("program_free", kiln_gpu_program_free(h), 0, 0);
  expect("program_free twice", kiln_gpu_program_free(h), KILN_GPU_E_HANDLE,
         0);
  expect("program_submit freed", kiln_gpu_program_submit(h),
         KILN_GPU_E_HANDLE, 0);
  still_works("placement and programs");
}

static void attack_device_side(void) {
  /* Token ids outside the table: refused on the device, reported by sync. */
  static float table[4 * 8], out[2 * 8];
  static int32_t ids[2] = {1, 1000000};
  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_GATHER);
  op.a = kiln_gpu_tensor_2d(table, KILN_GPU_F32, 4, 8);
  op.b = kiln_gpu_tensor_1d(ids, KILN_GPU_I32, 2);
  op.c = kiln_gpu_tensor_2d(out, KILN_GPU_F32, 2, 8);
  int32_t r = kiln_gpu_submit(&op);
  int32_t s = kiln_gpu_sync();
  checks++;
  if (r == 0 && s == 0) FAIL("gather with id 1000000 succeeded");
  ids[1] = -1;
  r = kiln_gpu_submit(&op);
  s = kiln_gpu_sync();
  checks++;
  if (r == 0 && s == 0) FAIL("gather with id -1 succeeded");
  still_works("device-side failure");
  /* A KV append whose row lies outside the cache. */
  static float cache[4 * 8];
  static int32_t row[1] = {3};
  kiln_gpu_op c = kiln_gpu_op_make(KILN_GPU_OP_COPY);
  c.a = kiln_gpu_tensor_2d(table, KILN_GPU_F32, 2, 8);
  c.b = kiln_gpu_tensor_2d(cache, KILN_GPU_F32, 4, 8);
  c.index = kiln_gpu_tensor_1d(row, KILN_GPU_I32, 1);
  r = kiln_gpu_submit(&c);
  s = kiln_gpu_sync();
  checks++;
  if (r == 0 && s == 0) FAIL("copy append past the cache succeeded");
  still_works("append past the cache");
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 1;
  verbose = argc > 2 && !strcmp(argv[2], "-v");
  for (int i = 0; i < rounds; i++) {
    attack_struct_pointers();
    attack_offsets();
    attack_shapes();
    attack_strides();
    attack_alignment();
    attack_handles();
    attack_fields();
    attack_placement_and_programs();
    attack_device_side();
  }
  char msg[8];
  int32_t n = kiln_gpu_last_error(msg, sizeof msg);
  checks++;
  if (n <= 0) FAIL("last_error after failures returned %d", n);
  printf("gpu_hostile: %d checks, %d failures\n", checks, failures);
  return failures > 100 ? 100 : failures;
}
