/* The kiln_gpu import module with real guests (guests/gpu, built from C
 * against sdk/kiln_gpu.h), on every device this machine has: the cpu
 * backend, the cpu backend with mirrors (RESIDENT ranges in separate
 * buffers, like a discrete GPU), and cuda when one opens (SKIP with the
 * reason otherwise).
 *
 * Claims: the ABI is the same on both sides (layouts, numbers); the
 * example guest multiplies correctly; every op from a guest matches the
 * guest's own reference, including a tensor in a read-only memory the host
 * granted by name; a hostile guest gets an error code for every bad call
 * and correct results right after; a guest whose memory is not the
 * session's is refused; a hostile guest and a computing guest run at once
 * on two threads (two sessions, two devices) and neither disturbs the
 * other; the device stays usable for the next session. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/gpu_host.h"
#include "kiln/wasi.h"
#include "../../sdk/kiln_gpu.h" /* the guest header, compiled here too */
#include "kiln_test.h"
#include "kiln_test_guest.h"

/* ---- The ABI, seen from both sides --------------------------------------- */

/* Every number of sdk/kiln_gpu.h is the number include/kiln/device.h uses
 * (the struct layouts are asserted inside the header, here for x86-64). */
#define SAME_(g, h) _Static_assert((int)(g) == (int)(h), #g " == " #h);
SAME_(KILN_GPU_OP_NOP, KILN_OP_NOP)
SAME_(KILN_GPU_OP_GEMM, KILN_OP_GEMM)
SAME_(KILN_GPU_OP_GEMV, KILN_OP_GEMV)
SAME_(KILN_GPU_OP_ADD, KILN_OP_ADD)
SAME_(KILN_GPU_OP_MUL, KILN_OP_MUL)
SAME_(KILN_GPU_OP_SCALE, KILN_OP_SCALE)
SAME_(KILN_GPU_OP_RMSNORM, KILN_OP_RMSNORM)
SAME_(KILN_GPU_OP_SOFTMAX, KILN_OP_SOFTMAX)
SAME_(KILN_GPU_OP_ROPE, KILN_OP_ROPE)
SAME_(KILN_GPU_OP_SILU, KILN_OP_SILU)
SAME_(KILN_GPU_OP_GELU, KILN_OP_GELU)
SAME_(KILN_GPU_OP_SWIGLU, KILN_OP_SWIGLU)
SAME_(KILN_GPU_OP_ARGMAX, KILN_OP_ARGMAX)
SAME_(KILN_GPU_OP_COPY, KILN_OP_COPY)
SAME_(KILN_GPU_OP_GATHER, KILN_OP_GATHER)
SAME_(KILN_GPU_OP_ATTENTION, KILN_OP_ATTENTION)
SAME_(KILN_GPU_OP_KIND_COUNT, KILN_OP_KIND_COUNT)
SAME_(KILN_GPU_F32, KILN_DTYPE_F32)
SAME_(KILN_GPU_F16, KILN_DTYPE_F16)
SAME_(KILN_GPU_BF16, KILN_DTYPE_BF16)
SAME_(KILN_GPU_I32, KILN_DTYPE_I32)
SAME_(KILN_GPU_Q8_0, KILN_DTYPE_Q8_0)
SAME_(KILN_GPU_TRANS_A, KILN_OP_TRANS_A)
SAME_(KILN_GPU_TRANS_B, KILN_OP_TRANS_B)
SAME_(KILN_GPU_PLACEMENT_NONE, KILN_PLACEMENT_NONE)
SAME_(KILN_GPU_PLACEMENT_MAPPED, KILN_PLACEMENT_MAPPED)
SAME_(KILN_GPU_PLACEMENT_RESIDENT, KILN_PLACEMENT_RESIDENT)
#undef SAME_

static void test_error_codes_map_from_status_codes(kiln_test *t) {
  KILN_EXPECT(t, kiln_gpu_error_code(KILN_CODE_OK) == KILN_GPU_OK);
  KILN_EXPECT(t, kiln_gpu_error_code(KILN_CODE_INVALID_ARGUMENT) ==
                     KILN_GPU_E_INVALID);
  KILN_EXPECT(t, kiln_gpu_error_code(KILN_CODE_OUT_OF_RANGE) ==
                     KILN_GPU_E_RANGE);
  KILN_EXPECT(t, kiln_gpu_error_code(KILN_CODE_FAILED_PRECONDITION) ==
                     KILN_GPU_E_STATE);
  KILN_EXPECT(t, kiln_gpu_error_code(KILN_CODE_RESOURCE_EXHAUSTED) ==
                     KILN_GPU_E_RESOURCE);
  KILN_EXPECT(t, kiln_gpu_error_code(KILN_CODE_UNIMPLEMENTED) ==
                     KILN_GPU_E_UNSUPPORTED);
  KILN_EXPECT(t, kiln_gpu_error_code(KILN_CODE_INTERNAL) ==
                     KILN_GPU_E_INTERNAL);
}

/* ---- Devices --------------------------------------------------------------- */

typedef enum config { CFG_CPU, CFG_MIRROR, CFG_CUDA } config;

/* Opens the device for a config; NULL with a SKIP when cuda is absent. */
static kiln_device *open_device(kiln_test *t, config c) {
  kiln_device_options o;
  kiln_device_options_init(&o);
  o.spec = c == CFG_CUDA ? "cuda" : "cpu";
  o.cpu_mirror = c == CFG_MIRROR;
  kiln_device *d = NULL;
  kiln_status s = kiln_device_open(&o, &d);
  if (s && c == CFG_CUDA) {
    KILN_TEST_SKIP(t, "no cuda device: %s", kiln_status_message(s));
    kiln_status_free(s);
    return NULL;
  }
  KILN_EXPECT_OK(t, s);
  return d;
}

/* A read-only file-backed memory holding w[4][8] f32 at offset 256 with
 * w[r][c] = (r * 8 + c) * 0.25 - 3 (what guests/gpu/ops.c expects). */
static kiln_memory *weights_file(kiln_test *t) {
  char path[] = "/tmp/kiln-gpu-weights-XXXXXX";
  int fd = mkstemp(path);
  KILN_EXPECT(t, fd >= 0);
  if (fd < 0) return NULL;
  static uint8_t bytes[4096];
  memset(bytes, 0, sizeof bytes);
  float *w = (float *)(bytes + 256);
  for (int i = 0; i < 32; i++) w[i] = (float)i * 0.25f - 3.0f;
  KILN_EXPECT(t, write(fd, bytes, sizeof bytes) == (ssize_t)sizeof bytes);
  close(fd);
  kiln_memory *m = NULL;
  KILN_EXPECT_OK(t, kiln_memory_create_from_file(path, &m));
  unlink(path);
  return m;
}

static void grant_weights(kiln_test *t, kiln_gpu_session *s, kiln_memory *w) {
  uint32_t h = 0;
  KILN_EXPECT_OK(t, kiln_gpu_session_grant_memory(s, "weights", w, &h));
  KILN_EXPECT(t, h == 1);
  int64_t shape[2] = {4, 8};
  kiln_tensor wt = kiln_tensor_make(w, 256, KILN_DTYPE_F32, 2, shape);
  KILN_EXPECT_OK(t, kiln_gpu_session_grant_tensor(s, "w", &wt));
}

/* ---- Running a guest --------------------------------------------------------- */

typedef struct run_result {
  kiln_code code;
  int exit_code;
  char out[4096];
  char err[8192];
} run_result;

static void read_all(int fd, char *buf, size_t size) {
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, buf, size - 1);
  buf[n > 0 ? n : 0] = 0;
}

/* Runs WASI command `m` with argv on session `s` (kiln_gpu imports bound
 * to it), its stdout and stderr captured. Thread-safe for distinct
 * sessions. Returns false if it could not start. */
static bool run_gpu_guest(kiln_test *t, kiln_module *m, kiln_gpu_session *s,
                          const char **argv, int argc, bool bind,
                          run_result *r) {
  memset(r, 0, sizeof *r);
  r->code = KILN_CODE_INTERNAL;
  kiln_linker *l = NULL;
  kiln_wasi *w = NULL;
  kiln_instance *inst = NULL;
  int out = memfd_create("stdout", MFD_CLOEXEC);
  int err = memfd_create("stderr", MFD_CLOEXEC);
  bool ran = false;
  kiln_wasi_options o;
  kiln_wasi_options_init(&o);
  o.argv = argv;
  o.argc = argc;
  o.stdin_fd = -1;
  o.stdout_fd = out;
  o.stderr_fd = err;
  KILN_EXPECT_OK(t, kiln_wasi_create(&o, &w));
  KILN_EXPECT_OK(t, kiln_linker_create(kiln_test_engine(), &l));
  if (!w || !l) goto done;
  KILN_EXPECT_OK(t, kiln_wasi_define(w, l));
  KILN_EXPECT_OK(t, kiln_gpu_define(l, s));
  KILN_EXPECT_OK(t, kiln_instance_create(m, l, NULL, &inst));
  if (!inst) goto done;
  if (bind)
    KILN_EXPECT_OK(t, kiln_gpu_session_bind_memory(
                          s, kiln_instance_memory(inst, 0)));
  kiln_status st = kiln_instance_call(inst, "_start", NULL, 0, NULL, 0);
  r->code = kiln_status_code(st);
  r->exit_code = r->code == KILN_CODE_EXIT ? kiln_status_exit_code(st) : 0;
  if (st && r->code != KILN_CODE_EXIT)
    fprintf(stderr, "  %s: %s\n", argv[0], kiln_status_message(st));
  kiln_status_free(st);
  ran = true;
done:
  kiln_instance_release(inst);
  kiln_linker_release(l);
  kiln_wasi_release(w);
  read_all(out, r->out, sizeof r->out);
  read_all(err, r->err, sizeof r->err);
  close(out);
  close(err);
  return ran;
}

/* The guest ran to the end with exit code 0 (guests exit with their
 * failure count); prints its stderr otherwise. */
static void expect_clean_exit(kiln_test *t, const char *what,
                              const run_result *r) {
  bool ok = r->code == KILN_CODE_OK ||
            (r->code == KILN_CODE_EXIT && r->exit_code == 0);
  KILN_EXPECTF(t, ok, "%s: %s, exit %d\nstdout:\n%s\nstderr:\n%s", what,
               kiln_code_name(r->code), r->exit_code, r->out, r->err);
}

/* One guest on a fresh session of device `d`. */
static void run_on(kiln_test *t, kiln_device *d, const char *guest,
                   const char **argv, int argc, kiln_memory *grant,
                   run_result *r) {
  kiln_module *m = kiln_test_load_guest(t, guest);
  kiln_gpu_session *s = NULL;
  kiln_gpu_session_options so;
  kiln_gpu_session_options_init(&so);
  so.allow_address_query = true;
  KILN_EXPECT_OK(t, kiln_gpu_session_create(d, &so, &s));
  if (m && s) {
    if (grant) grant_weights(t, s, grant);
    if (run_gpu_guest(t, m, s, argv, argc, true, r))
      expect_clean_exit(t, guest, r);
  }
  kiln_gpu_session_release(s);
  kiln_module_release(m);
}

/* ---- Guests, per device ------------------------------------------------------ */

static void matmul(kiln_test *t, config c) {
  kiln_device *d = open_device(t, c);
  if (!d) return;
  const char *argv[] = {"gpu_matmul", "96"};
  run_result r;
  run_on(t, d, "gpu_matmul", argv, 2, NULL, &r);
  KILN_EXPECTF(t, strstr(r.out, "96x96 f32 gemm on") && strstr(r.out, ": ok"),
               "stdout: %s", r.out);
  /* MAPPED on the cpu backend computes on the guest's bytes in place. */
  KILN_EXPECTF(t, strstr(r.out, "placement mapped"), "stdout: %s", r.out);
  kiln_device_release(d);
}

static void ops(kiln_test *t, config c) {
  kiln_device *d = open_device(t, c);
  if (!d) return;
  kiln_memory *w = weights_file(t);
  const char *argv[] = {"gpu_ops", "2"};
  run_result r;
  run_on(t, d, "gpu_ops", argv, 2, w, &r);
  KILN_EXPECTF(t, strstr(r.out, ", 0 failures"), "stdout: %s", r.out);
  KILN_EXPECTF(t, !strstr(r.out, "skipping"), "the grant was not seen: %s",
               r.out);
  kiln_memory_release(w);
  kiln_device_release(d);
}

static void hostile(kiln_test *t, config c) {
  kiln_device *d = open_device(t, c);
  if (!d) return;
  const char *argv[] = {"gpu_hostile", "2"};
  run_result r;
  run_on(t, d, "gpu_hostile", argv, 2, NULL, &r);
  KILN_EXPECTF(t, strstr(r.out, ", 0 failures"), "stdout: %s", r.out);
  /* The same device then serves a new session correctly. */
  const char *argv2[] = {"gpu_matmul", "64"};
  run_on(t, d, "gpu_matmul", argv2, 2, NULL, &r);
  KILN_EXPECTF(t, strstr(r.out, ": ok"), "after hostile: %s", r.out);
  kiln_device_release(d);
}

static void test_matmul_cpu(kiln_test *t) { matmul(t, CFG_CPU); }
static void test_matmul_cpu_mirror(kiln_test *t) { matmul(t, CFG_MIRROR); }
static void test_matmul_cuda(kiln_test *t) { matmul(t, CFG_CUDA); }
static void test_every_op_cpu(kiln_test *t) { ops(t, CFG_CPU); }
static void test_every_op_cpu_mirror(kiln_test *t) { ops(t, CFG_MIRROR); }
static void test_every_op_cuda(kiln_test *t) { ops(t, CFG_CUDA); }
static void test_hostile_cpu(kiln_test *t) { hostile(t, CFG_CPU); }
static void test_hostile_cpu_mirror(kiln_test *t) { hostile(t, CFG_MIRROR); }
static void test_hostile_cuda(kiln_test *t) { hostile(t, CFG_CUDA); }

/* ---- Two guests at once ------------------------------------------------------- */

typedef struct worker {
  kiln_test t;
  config cfg;
  kiln_module *m;
  kiln_memory *grant;
  const char **argv;
  int argc;
  run_result r;
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  kiln_device *d = open_device(&w->t, w->cfg);
  if (!d) return NULL;
  kiln_gpu_session *s = NULL;
  KILN_EXPECT_OK(&w->t, kiln_gpu_session_create(d, NULL, &s));
  if (s) {
    if (w->grant) grant_weights(&w->t, s, w->grant);
    if (run_gpu_guest(&w->t, w->m, s, w->argv, w->argc, true, &w->r))
      expect_clean_exit(&w->t, w->argv[0], &w->r);
  }
  kiln_gpu_session_release(s);
  kiln_device_release(d);
  return NULL;
}

/* A hostile guest and a computing guest on two threads, each with its own
 * session and device. The computing one holds a grant (handle 1) that the
 * hostile one tries to use: handles are per session, so it cannot. */
static void concurrent(kiln_test *t, config c) {
  kiln_device *probe = open_device(t, c);
  if (!probe) return;
  kiln_device_release(probe);
  kiln_module *hm = kiln_test_load_guest(t, "gpu_hostile");
  kiln_module *om = kiln_test_load_guest(t, "gpu_ops");
  kiln_memory *wm = weights_file(t);
  if (!hm || !om || !wm) goto out;
  const char *hargv[] = {"gpu_hostile", "100"};
  const char *oargv[] = {"gpu_ops", "20"};
  worker w[2] = {
      {.t = {.name = t->name}, .cfg = c, .m = hm, .argv = hargv, .argc = 2},
      {.t = {.name = t->name}, .cfg = c, .m = om, .grant = wm, .argv = oargv,
       .argc = 2},
  };
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    KILN_EXPECT(t, pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 2; i++) t->failures += w[i].t.failures;
  KILN_EXPECTF(t, strstr(w[0].r.out, ", 0 failures"), "hostile: %s",
               w[0].r.out);
  KILN_EXPECTF(t, strstr(w[1].r.out, ", 0 failures"), "ops: %s", w[1].r.out);
out:
  kiln_memory_release(wm);
  kiln_module_release(hm);
  kiln_module_release(om);
}

static void test_hostile_and_computing_guests_at_once_cpu(kiln_test *t) {
  concurrent(t, CFG_CPU);
}
static void test_hostile_and_computing_guests_at_once_cpu_mirror(kiln_test *t) {
  concurrent(t, CFG_MIRROR);
}
static void test_hostile_and_computing_guests_at_once_cuda(kiln_test *t) {
  concurrent(t, CFG_CUDA);
}

/* ---- Sessions ------------------------------------------------------------------- */

/* A session bound to one memory refuses calls from an instance whose
 * memory 0 is another: the guest gets KILN_GPU_E_HANDLE, nothing runs. */
static void test_session_refuses_a_foreign_caller_memory(kiln_test *t) {
  kiln_device *d = open_device(t, CFG_CPU);
  kiln_module *m = kiln_test_load_guest(t, "gpu_matmul");
  kiln_memory *other = NULL;
  kiln_memory_options mo = {.initial_pages = 1, .name = "other guest"};
  KILN_EXPECT_OK(t, kiln_memory_create(&mo, &other));
  kiln_gpu_session *s = NULL;
  if (d) KILN_EXPECT_OK(t, kiln_gpu_session_create(d, NULL, &s));
  if (s && m && other) {
    KILN_EXPECT_OK(t, kiln_gpu_session_bind_memory(s, other));
    run_result r;
    const char *argv[] = {"gpu_matmul", "8"};
    if (run_gpu_guest(t, m, s, argv, 2, false, &r)) {
      KILN_EXPECTF(t, r.code == KILN_CODE_EXIT && r.exit_code == 1,
                   "exit %d: %s", r.exit_code, r.err);
      KILN_EXPECTF(t, strstr(r.err, "failed (-4)"), "stderr: %s", r.err);
      KILN_EXPECTF(t, strstr(kiln_gpu_session_last_error(s),
                             "not this session's"),
                   "last error: %s", kiln_gpu_session_last_error(s));
    }
    kiln_device_stats st;
    kiln_device_get_stats(d, &st);
    KILN_EXPECT(t, st.ops == 0);
  }
  kiln_gpu_session_release(s);
  kiln_memory_release(other);
  kiln_module_release(m);
  kiln_device_release(d);
}

static void test_grants_are_checked(kiln_test *t) {
  kiln_device *d = open_device(t, CFG_CPU);
  kiln_gpu_session *s = NULL;
  if (d) KILN_EXPECT_OK(t, kiln_gpu_session_create(d, NULL, &s));
  kiln_memory *a = NULL, *b = NULL;
  kiln_memory_options mo = {.initial_pages = 1, .name = "a"};
  KILN_EXPECT_OK(t, kiln_memory_create(&mo, &a));
  KILN_EXPECT_OK(t, kiln_memory_create(&mo, &b));
  if (s && a && b) {
    uint32_t h = 0;
    KILN_EXPECT_OK(t, kiln_gpu_session_grant_memory(s, "a", a, &h));
    KILN_EXPECT(t, h == 1);
    KILN_EXPECT_CODE(t, KILN_CODE_ALREADY_EXISTS,
                     kiln_gpu_session_grant_memory(s, "a", b, &h));
    char long_name[300];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                     kiln_gpu_session_grant_memory(s, long_name, b, &h));
    KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                     kiln_gpu_session_grant_memory(s, "", b, &h));
    KILN_EXPECT_OK(t, kiln_gpu_session_grant_memory(s, "b", b, &h));
    KILN_EXPECT(t, h == 2);
    /* Granting attached the memories to the device (MAPPED). */
    KILN_EXPECT(t, kiln_device_placement(d, a, 0) == KILN_PLACEMENT_MAPPED);
    int64_t shape[1] = {16};
    kiln_tensor ta = kiln_tensor_make(a, 0, KILN_DTYPE_F32, 1, shape);
    KILN_EXPECT_OK(t, kiln_gpu_session_grant_tensor(s, "ta", &ta));
    KILN_EXPECT_CODE(t, KILN_CODE_ALREADY_EXISTS,
                     kiln_gpu_session_grant_tensor(s, "ta", &ta));
    kiln_memory *c = NULL;
    KILN_EXPECT_OK(t, kiln_memory_create(&mo, &c));
    kiln_tensor tc = kiln_tensor_make(c, 0, KILN_DTYPE_F32, 1, shape);
    KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                     kiln_gpu_session_grant_tensor(s, "tc", &tc));
    /* Binding twice to different memories is refused. */
    KILN_EXPECT_OK(t, kiln_gpu_session_bind_memory(s, c));
    KILN_EXPECT_OK(t, kiln_gpu_session_bind_memory(s, c));
    KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                     kiln_gpu_session_bind_memory(s, a));
    KILN_EXPECT(t, kiln_gpu_session_memory(s) == c);
    kiln_memory_release(c);
  }
  kiln_gpu_session_release(s);
  /* Releasing the session detached what it attached. */
  if (d && a) KILN_EXPECT(t, kiln_device_placement(d, a, 0) ==
                                 KILN_PLACEMENT_NONE);
  kiln_memory_release(a);
  kiln_memory_release(b);
  kiln_device_release(d);
}

/* The same calls from the host (a native twin of a guest): guest-layout
 * ops, handle 0 = the bound memory, the same codes. */
static void test_host_side_calls(kiln_test *t) {
  kiln_device *d = open_device(t, CFG_CPU);
  kiln_memory *m = NULL;
  kiln_memory_options mo = {.initial_pages = 1, .name = "twin"};
  KILN_EXPECT_OK(t, kiln_memory_create(&mo, &m));
  kiln_gpu_session *s = NULL;
  if (d) KILN_EXPECT_OK(t, kiln_gpu_session_create(d, NULL, &s));
  if (!s || !m) goto out;
  float *a = (float *)kiln_memory_base(m), *b = a + 64, *c = a + 128;
  for (int i = 0; i < 64; i++) {
    a[i] = (float)i;
    b[i] = 0.5f;
  }
  int64_t n = 64;
  kiln_gpu_op op = {.kind = KILN_GPU_OP_ADD, .alpha = 1};
  op.a = kiln_gpu_tensor_at(0, 0, KILN_GPU_F32, 1, &n);
  op.b = kiln_gpu_tensor_at(0, 256, KILN_GPU_F32, 1, &n);
  op.c = kiln_gpu_tensor_at(0, 512, KILN_GPU_F32, 1, &n);
  /* Nothing bound yet: handle 0 names nothing. */
  KILN_EXPECT(t, kiln_gpu_session_submit_op(s, &op) == KILN_GPU_E_HANDLE);
  KILN_EXPECT_OK(t, kiln_gpu_session_bind_memory(s, m));
  KILN_EXPECT(t, kiln_gpu_session_program_begin(s) == 0);
  KILN_EXPECT(t, kiln_gpu_session_submit_op(s, &op) == 0);
  int32_t h = kiln_gpu_session_program_end(s);
  KILN_EXPECT(t, h == 1);
  KILN_EXPECT(t, kiln_gpu_session_program_submit(s, h) == 0);
  KILN_EXPECT(t, kiln_gpu_session_sync(s) == 0);
  int wrong = 0;
  for (int i = 0; i < 64; i++) wrong += c[i] != (float)i + 0.5f;
  KILN_EXPECT(t, wrong == 0);
  KILN_EXPECT(t, kiln_gpu_session_program_free(s, h) == 0);
  KILN_EXPECT(t, kiln_gpu_session_program_free(s, h) == KILN_GPU_E_HANDLE);
  op.c.offset = 65536 - 4;
  KILN_EXPECT(t, kiln_gpu_session_submit_op(s, &op) == KILN_GPU_E_RANGE);
  KILN_EXPECTF(t, strstr(kiln_gpu_session_last_error(s), "outside"),
               "last error: %s", kiln_gpu_session_last_error(s));
  op.c.offset = 512;
  op.b.mem = 1;
  KILN_EXPECT(t, kiln_gpu_session_submit_op(s, &op) == KILN_GPU_E_HANDLE);
  KILN_EXPECT(t, kiln_gpu_session_place(s, 0, 0, 4096, 9) ==
                     KILN_GPU_E_INVALID);
  KILN_EXPECT(t, kiln_gpu_session_place(s, 0, 0, 4096,
                                        KILN_GPU_PLACEMENT_RESIDENT) == 0);
  KILN_EXPECT(t, kiln_gpu_session_memory_lookup(s, "nope") ==
                     KILN_GPU_E_NOT_FOUND);
out:
  kiln_gpu_session_release(s);
  kiln_memory_release(m);
  kiln_device_release(d);
}

static void test_module_uses_kiln_gpu(kiln_test *t) {
  kiln_module *g = kiln_test_load_guest(t, "gpu_matmul");
  kiln_module *h = kiln_test_load_guest(t, "wasi_hello");
  if (g) KILN_EXPECT(t, kiln_gpu_module_uses(g));
  if (h) KILN_EXPECT(t, !kiln_gpu_module_uses(h));
  kiln_module_release(g);
  kiln_module_release(h);
}

/* The kiln command: --device picks the device and says which; a module
 * importing kiln_gpu gets it; a bad spec is an error. */
static void test_cli_device_flag(kiln_test *t) {
  char cmd[2 * PATH_MAX], out[4096] = "";
  snprintf(cmd, sizeof cmd,
           "'%s/kiln' run --device cpu '%s/gpu_matmul.wasm' 32 2>&1",
           KILN_BUILD_DIR, KILN_GUEST_DIR);
  FILE *p = popen(cmd, "r");
  size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
  out[n] = 0;
  int rc = p ? pclose(p) : -1;
  KILN_EXPECTF(t, rc == 0, "%s: status %d: %s", cmd, rc, out);
  KILN_EXPECTF(t, strstr(out, "kiln: device: cpu"), "output: %s", out);
  KILN_EXPECTF(t, strstr(out, "32x32 f32 gemm on cpu: ok"), "output: %s", out);

  snprintf(cmd, sizeof cmd,
           "'%s/kiln' run --device nonsense '%s/gpu_matmul.wasm' 2>&1",
           KILN_BUILD_DIR, KILN_GUEST_DIR);
  p = popen(cmd, "r");
  n = p ? fread(out, 1, sizeof out - 1, p) : 0;
  out[n] = 0;
  rc = p ? pclose(p) : -1;
  KILN_EXPECTF(t, WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "status %d: %s", rc,
               out);
  KILN_EXPECTF(t, strstr(out, "--device"), "output: %s", out);
}

KILN_TEST_MAIN(test_error_codes_map_from_status_codes,
               test_module_uses_kiln_gpu, test_grants_are_checked,
               test_host_side_calls,
               test_session_refuses_a_foreign_caller_memory,
               test_matmul_cpu, test_matmul_cpu_mirror, test_matmul_cuda,
               test_every_op_cpu, test_every_op_cpu_mirror, test_every_op_cuda,
               test_hostile_cpu, test_hostile_cpu_mirror, test_hostile_cuda,
               test_hostile_and_computing_guests_at_once_cpu,
               test_hostile_and_computing_guests_at_once_cpu_mirror,
               test_hostile_and_computing_guests_at_once_cuda,
               test_cli_device_flag)
