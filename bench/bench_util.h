/* What every kiln benchmark shares: a clock, percentiles, batch timing with
 * calibration, a report that prints a table and writes JSON, and a
 * description of the machine.
 *
 * A benchmark is one program bench/bench_<name>.c (built into build/bench/
 * by bench/CMakeLists.txt, run by scripts/bench.sh). It does:
 *
 *   bench_report *r = bench_begin("engine", argc, argv);
 *   bench_section(r, "host to guest call");
 *   bench_add(r, "call.native", "native C call", "ns", stats, "note");
 *   bench_add_value(r, "size.wasm", "module size", "bytes", 1.1e6, NULL);
 *   return bench_end(r);   // prints the table, writes <name>.json
 *
 * Results carry a stable id (dotted, for tools that compare runs), a label
 * and a unit; timed results carry p50, p99, min, max, mean and the sample
 * count. Percentiles are nearest-rank over the samples: with fewer than 100
 * samples p99 is the largest sample, and it says so in the JSON ("samples").
 *
 * Options every benchmark accepts (bench_begin parses them; others are left
 * to the benchmark in r->argc/r->argv):
 *   --json PATH   where to write the JSON (default: $KILN_BENCH_DIR/<name>.json,
 *                 else KILN_BENCH_DIR as compiled in, i.e. build/bench/)
 *   --quick       fewer samples (a smoke run; numbers are noisier)
 *
 * Environment: KILN_BENCH_DIR (output folder), KILN_BENCH_COMMIT (the
 * commit to record, instead of asking git in KILN_SOURCE_DIR).
 *
 * Header-only on purpose: benchmarks are single files and this is small.
 * Not thread-safe (a report belongs to the thread that made it). Benchmark
 * programs exit on setup errors (bench_die): they are tools, not library
 * code. */
#ifndef KILN_BENCH_UTIL_H_
#define KILN_BENCH_UTIL_H_

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef KILN_BENCH_DIR
#define KILN_BENCH_DIR "build/bench"
#endif
#ifndef KILN_SOURCE_DIR
#define KILN_SOURCE_DIR "."
#endif

/* ---- Clock and errors ------------------------------------------------------ */

static inline uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((noreturn, format(printf, 1, 2))) static inline void bench_die(
    const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

/* Keeps the compiler from deleting a computation whose result is unused. */
static inline void bench_use(uint64_t v) { __asm__ volatile("" : : "r"(v) : "memory"); }

/* ---- Statistics -------------------------------------------------------------- */

typedef struct bench_stats {
  int n;
  double min, p50, p99, max, mean;
  uint64_t iterations; /* per sample, for per-iteration figures; else 1 */
} bench_stats;

static inline int bench_cmp_double_(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0..100) of n sorted values. */
static inline double bench_percentile(const double *sorted, int n, double p) {
  if (n <= 0) return 0;
  int k = (int)((p / 100.0) * n + 0.999999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return sorted[k - 1];
}

/* Statistics of n samples (the array is left as it was). */
static inline bench_stats bench_stats_of(const double *samples, int n) {
  bench_stats s = {0};
  if (n <= 0) return s;
  double *v = malloc(sizeof(double) * (size_t)n);
  if (!v) bench_die("out of memory");
  memcpy(v, samples, sizeof(double) * (size_t)n);
  qsort(v, (size_t)n, sizeof(double), bench_cmp_double_);
  double sum = 0;
  for (int i = 0; i < n; i++) sum += v[i];
  s.n = n;
  s.min = v[0];
  s.max = v[n - 1];
  s.mean = sum / n;
  s.p50 = bench_percentile(v, n, 50);
  s.p99 = bench_percentile(v, n, 99);
  s.iterations = 1;
  free(v);
  return s;
}

/* Scales every figure (e.g. ns -> ms with 1e-6). */
static inline bench_stats bench_stats_scale(bench_stats s, double k) {
  s.min *= k;
  s.p50 *= k;
  s.p99 *= k;
  s.max *= k;
  s.mean *= k;
  return s;
}

/* ---- Batch timing ------------------------------------------------------------ */

/* Runs `iters` iterations of the thing measured. */
typedef void (*bench_batch_fn)(void *ctx, uint64_t iters);

/* Smallest power-of-two iteration count whose batch takes at least
 * target_ns (capped at max_iters). */
static inline uint64_t bench_calibrate(bench_batch_fn fn, void *ctx,
                                       uint64_t target_ns, uint64_t max_iters) {
  uint64_t iters = 1;
  for (;;) {
    uint64_t t0 = bench_now_ns();
    fn(ctx, iters);
    uint64_t dt = bench_now_ns() - t0;
    if (dt >= target_ns || iters >= max_iters) return iters;
    /* Jump close to the target once a batch is long enough to trust. */
    if (dt > 100000) {
      uint64_t want = (uint64_t)((double)iters * (double)target_ns / (double)dt) + 1;
      iters = want > iters * 2 ? want : iters * 2;
    } else {
      iters *= 2;
    }
    if (iters > max_iters) iters = max_iters;
  }
}

/* Nanoseconds per iteration: `samples` batches of a calibrated size (each
 * about target_ns long), after one warm-up batch. */
static inline bench_stats bench_per_iter(bench_batch_fn fn, void *ctx,
                                         int samples, uint64_t target_ns,
                                         uint64_t max_iters) {
  uint64_t iters = bench_calibrate(fn, ctx, target_ns, max_iters);
  fn(ctx, iters);
  double *v = malloc(sizeof(double) * (size_t)samples);
  if (!v) bench_die("out of memory");
  for (int i = 0; i < samples; i++) {
    uint64_t t0 = bench_now_ns();
    fn(ctx, iters);
    v[i] = (double)(bench_now_ns() - t0) / (double)iters;
  }
  bench_stats s = bench_stats_of(v, samples);
  s.iterations = iters;
  free(v);
  return s;
}

/* ---- Machine ------------------------------------------------------------------- */

/* First line of a command's output, trailing newline removed ("" if none). */
static inline void bench_command_line_(const char *cmd, char *out, size_t size) {
  out[0] = 0;
  FILE *p = popen(cmd, "r");
  if (!p) return;
  if (!fgets(out, (int)size, p)) out[0] = 0;
  pclose(p);
  out[strcspn(out, "\n")] = 0;
}

/* The value of the first "key : value" line of /proc/cpuinfo whose key is
 * `key` ("" if none). */
static inline void bench_cpuinfo_(const char *key, char *out, size_t size) {
  out[0] = 0;
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  static char line[8192];
  size_t kn = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, kn) != 0 || (line[kn] != ' ' && line[kn] != '\t' && line[kn] != ':'))
      continue;
    char *v = strchr(line, ':');
    if (!v) continue;
    v++;
    while (*v == ' ' || *v == '\t') v++;
    v[strcspn(v, "\n")] = 0;
    snprintf(out, size, "%s", v);
    break;
  }
  fclose(f);
}

/* CPU model, its numbers (a virtual machine's model name is often generic)
 * and the instruction-set flags that matter to kiln's figures. */
static inline void bench_cpu_(cJSON *m) {
  char buf[512], fam[32], mod[32], step[32];
  bench_cpuinfo_("model name", buf, sizeof buf);
  cJSON_AddStringToObject(m, "cpu", buf[0] ? buf : "unknown");
  bench_cpuinfo_("cpu family", fam, sizeof fam);
  bench_cpuinfo_("model", mod, sizeof mod);
  bench_cpuinfo_("stepping", step, sizeof step);
  snprintf(buf, sizeof buf, "family %s model %s stepping %s", fam, mod, step);
  cJSON_AddStringToObject(m, "cpu_id", buf);
  bench_cpuinfo_("cpu MHz", buf, sizeof buf);
  if (buf[0]) cJSON_AddNumberToObject(m, "cpu_mhz", atof(buf));
  static char flags[8192];
  bench_cpuinfo_("flags", flags, sizeof flags);
  static const char *const wanted[] = {"avx2", "avx512f", "avx512_bf16", "amx_tile",
                                       "sha_ni", "hypervisor"};
  buf[0] = 0;
  for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
    size_t n = strlen(wanted[i]);
    for (const char *p = flags; (p = strstr(p, wanted[i])); p += n) {
      if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) {
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", buf[0] ? " " : "",
                 wanted[i]);
        break;
      }
    }
  }
  cJSON_AddStringToObject(m, "cpu_flags", buf);
}

static inline cJSON *bench_machine_(void) {
  cJSON *m = cJSON_CreateObject();
  char buf[512];
  bench_cpu_(m);
  cJSON_AddNumberToObject(m, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
  long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
  cJSON_AddNumberToObject(m, "memory_gib",
                          (double)((pages * (double)psize) / (1024.0 * 1024 * 1024)));
  struct utsname u;
  if (uname(&u) == 0) {
    snprintf(buf, sizeof buf, "%s %s %s", u.sysname, u.release, u.machine);
    cJSON_AddStringToObject(m, "os", buf);
  }
  double load[1];
  if (getloadavg(load, 1) == 1) cJSON_AddNumberToObject(m, "loadavg_1m", load[0]);
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  cJSON_AddStringToObject(m, "date", buf);
  /* --no-optional-locks: reading the commit must not touch the index.
   * KILN_BENCH_COMMIT overrides both (a tree built outside its checkout). */
  char commit[128], dirty[16];
  const char *forced = getenv("KILN_BENCH_COMMIT");
  bench_command_line_("git -C '" KILN_SOURCE_DIR "' rev-parse --short=12 HEAD 2>/dev/null",
                      commit, sizeof commit);
  bench_command_line_("git -C '" KILN_SOURCE_DIR "' --no-optional-locks status "
                      "--porcelain --untracked-files=no 2>/dev/null | head -1",
                      dirty, sizeof dirty);
  snprintf(buf, sizeof buf, "%s%s", commit[0] ? commit : "unknown",
           dirty[0] ? "-dirty" : "");
  if (forced && *forced) snprintf(buf, sizeof buf, "%s", forced);
  cJSON_AddStringToObject(m, "commit", buf);
  const char *cc = getenv("KILN_CC");
  char cmd[256];
  snprintf(cmd, sizeof cmd, "%s --version 2>/dev/null", cc && *cc ? cc : "cc");
  bench_command_line_(cmd, buf, sizeof buf);
  cJSON_AddStringToObject(m, "cc", buf);
  return m;
}

/* ---- Reports ---------------------------------------------------------------------- */

typedef struct bench_row_ {
  int is_section;
  char label[96];
  char unit[16];
  double p50, p99; /* p99 < 0: a single value */
  char samples[32];
  char note[160];
} bench_row_;

typedef struct bench_report {
  char name[64];
  char json_path[1024];
  int quick;
  int argc;    /* arguments left after the common options */
  char **argv; /* argv[0] is the program */
  cJSON *root, *results, *notes;
  char section[96];
  bench_row_ *rows;
  int nrows, caprows;
} bench_report;

static inline bench_row_ *bench_row_new_(bench_report *r) {
  if (r->nrows == r->caprows) {
    r->caprows = r->caprows ? r->caprows * 2 : 32;
    r->rows = realloc(r->rows, sizeof(bench_row_) * (size_t)r->caprows);
    if (!r->rows) bench_die("out of memory");
  }
  bench_row_ *row = &r->rows[r->nrows++];
  memset(row, 0, sizeof *row);
  return row;
}

static inline bench_report *bench_begin(const char *name, int argc, char **argv) {
  bench_report *r = calloc(1, sizeof *r);
  if (!r) bench_die("out of memory");
  snprintf(r->name, sizeof r->name, "%s", name);
  const char *dir = getenv("KILN_BENCH_DIR");
  snprintf(r->json_path, sizeof r->json_path, "%s/%s.json",
           dir && *dir ? dir : KILN_BENCH_DIR, name);
  r->argv = calloc((size_t)argc + 1, sizeof(char *));
  if (!r->argv) bench_die("out of memory");
  r->argv[r->argc++] = argv[0];
  char command[1024] = "";
  size_t cn = 0;
  for (int i = 0; i < argc; i++) {
    cn += (size_t)snprintf(command + cn, cn < sizeof command ? sizeof command - cn : 0,
                           "%s%s", i ? " " : "", argv[i]);
    if (i == 0) continue;
    if (!strcmp(argv[i], "--quick")) {
      r->quick = 1;
    } else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
      snprintf(r->json_path, sizeof r->json_path, "%s", argv[++i]);
      cn += (size_t)snprintf(command + cn, cn < sizeof command ? sizeof command - cn : 0,
                             " %s", argv[i]);
    } else {
      r->argv[r->argc++] = argv[i];
    }
  }
  r->root = cJSON_CreateObject();
  cJSON_AddStringToObject(r->root, "benchmark", name);
  cJSON_AddNumberToObject(r->root, "schema", 1);
  cJSON_AddItemToObject(r->root, "machine", bench_machine_());
  cJSON_AddStringToObject(r->root, "command", command);
  cJSON_AddBoolToObject(r->root, "quick", r->quick);
  r->results = cJSON_AddArrayToObject(r->root, "results");
  r->notes = cJSON_AddArrayToObject(r->root, "notes");
  cJSON *m = cJSON_GetObjectItem(r->root, "machine");
  cJSON *load = cJSON_GetObjectItem(m, "loadavg_1m");
  printf("kiln bench %s: %s, %d cores (load %.2f), %s, commit %s%s\n", name,
         cJSON_GetObjectItem(m, "cpu")->valuestring,
         (int)cJSON_GetObjectItem(m, "cores")->valuedouble,
         cJSON_IsNumber(load) ? load->valuedouble : -1.0,
         cJSON_GetObjectItem(m, "date")->valuestring,
         cJSON_GetObjectItem(m, "commit")->valuestring,
         r->quick ? " (--quick)" : "");
  fflush(stdout);
  return r;
}

/* Starts a group of rows; results record it as "section". */
static inline void bench_section(bench_report *r, const char *title) {
  snprintf(r->section, sizeof r->section, "%s", title);
  bench_row_ *row = bench_row_new_(r);
  row->is_section = 1;
  snprintf(row->label, sizeof row->label, "%s", title);
}

static inline cJSON *bench_result_(bench_report *r, const char *id,
                                   const char *label, const char *unit,
                                   const char *note) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "id", id);
  cJSON_AddStringToObject(o, "section", r->section);
  cJSON_AddStringToObject(o, "label", label);
  cJSON_AddStringToObject(o, "unit", unit);
  if (note && *note) cJSON_AddStringToObject(o, "note", note);
  cJSON_AddItemToArray(r->results, o);
  return o;
}

static inline void bench_vnote_(char *out, size_t size, const char *fmt, va_list ap) {
  out[0] = 0;
  if (fmt) vsnprintf(out, size, fmt, ap);
}

/* A timed result. note (printf format, may be NULL) goes in the table and
 * the JSON. Prints the row at once, so long runs show progress. */
__attribute__((format(printf, 6, 7))) static inline void bench_add(
    bench_report *r, const char *id, const char *label, const char *unit,
    bench_stats s, const char *fmt, ...) {
  char note[160];
  va_list ap;
  va_start(ap, fmt);
  bench_vnote_(note, sizeof note, fmt, ap);
  va_end(ap);
  cJSON *o = bench_result_(r, id, label, unit, note);
  cJSON_AddNumberToObject(o, "p50", s.p50);
  cJSON_AddNumberToObject(o, "p99", s.p99);
  cJSON_AddNumberToObject(o, "min", s.min);
  cJSON_AddNumberToObject(o, "max", s.max);
  cJSON_AddNumberToObject(o, "mean", s.mean);
  cJSON_AddNumberToObject(o, "samples", s.n);
  if (s.iterations > 1) cJSON_AddNumberToObject(o, "iterations_per_sample", (double)s.iterations);
  bench_row_ *row = bench_row_new_(r);
  snprintf(row->label, sizeof row->label, "%s", label);
  snprintf(row->unit, sizeof row->unit, "%s", unit);
  row->p50 = s.p50;
  row->p99 = s.p99;
  if (s.iterations > 1) {
    double it = (double)s.iterations;
    const char *k = it >= 1e9 ? "G" : it >= 1e6 ? "M" : it >= 1e3 ? "k" : "";
    double v = it >= 1e9 ? it / 1e9 : it >= 1e6 ? it / 1e6 : it >= 1e3 ? it / 1e3 : it;
    snprintf(row->samples, sizeof row->samples, "%d x %.3g%s", s.n, v, k);
  } else {
    snprintf(row->samples, sizeof row->samples, "%d", s.n);
  }
  snprintf(row->note, sizeof row->note, "%s", note);
  fprintf(stderr, "  %-52s p50 %10.4g  p99 %10.4g %s\n", label, s.p50, s.p99, unit);
}

/* A single figure (a size, a count, a one-off time). */
__attribute__((format(printf, 6, 7))) static inline void bench_add_value(
    bench_report *r, const char *id, const char *label, const char *unit,
    double value, const char *fmt, ...) {
  char note[160];
  va_list ap;
  va_start(ap, fmt);
  bench_vnote_(note, sizeof note, fmt, ap);
  va_end(ap);
  cJSON *o = bench_result_(r, id, label, unit, note);
  cJSON_AddNumberToObject(o, "value", value);
  bench_row_ *row = bench_row_new_(r);
  snprintf(row->label, sizeof row->label, "%s", label);
  snprintf(row->unit, sizeof row->unit, "%s", unit);
  row->p50 = value;
  row->p99 = -1;
  snprintf(row->samples, sizeof row->samples, "1");
  snprintf(row->note, sizeof row->note, "%s", note);
  fprintf(stderr, "  %-52s %14.4g %s\n", label, value, unit);
}

/* A sentence printed under the table and kept in the JSON ("notes"). */
__attribute__((format(printf, 2, 3))) static inline void bench_note(
    bench_report *r, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  cJSON_AddItemToArray(r->notes, cJSON_CreateString(buf));
}

static inline void bench_fmt_value_(double v, char *out, size_t size) {
  double a = v < 0 ? -v : v;
  if (a == 0)
    snprintf(out, size, "0");
  else if (a >= 1e6)
    snprintf(out, size, "%.0f", v);
  else if (a >= 100)
    snprintf(out, size, "%.1f", v);
  else if (a >= 10)
    snprintf(out, size, "%.2f", v);
  else
    snprintf(out, size, "%.3f", v);
}

/* Prints the results as a Markdown table (readable as is, and pastable into
 * docs/bench/), then the notes. */
static inline void bench_print_table(bench_report *r, FILE *out) {
  int wl = 11, wu = 4, ws = 7, wn = 4;
  for (int i = 0; i < r->nrows; i++) {
    bench_row_ *row = &r->rows[i];
    int l = (int)strlen(row->label) + (row->is_section ? 4 : 0);
    if (l > wl) wl = l;
    if ((int)strlen(row->unit) > wu) wu = (int)strlen(row->unit);
    if ((int)strlen(row->samples) > ws) ws = (int)strlen(row->samples);
    if ((int)strlen(row->note) > wn) wn = (int)strlen(row->note);
  }
  fprintf(out, "| %-*s | %10s | %10s | %-*s | %-*s | %-*s |\n", wl, "measurement", "p50",
          "p99", wu, "unit", ws, "samples", wn, "note");
  fprintf(out, "|-%.*s-|-----------:|-----------:|-%.*s-|-%.*s-|-%.*s-|\n", wl,
          "----------------------------------------------------------------------------------------------------",
          wu, "----------------------------------------", ws,
          "----------------------------------------", wn,
          "-------------------------------------------------------------------------------------------------------------------------------------------------------------------");
  for (int i = 0; i < r->nrows; i++) {
    bench_row_ *row = &r->rows[i];
    if (row->is_section) {
      char sec[110];
      snprintf(sec, sizeof sec, "**%s**", row->label);
      fprintf(out, "| %-*s | %10s | %10s | %-*s | %-*s | %-*s |\n", wl, sec, "", "", wu, "",
              ws, "", wn, "");
      continue;
    }
    char p50[32], p99[32];
    bench_fmt_value_(row->p50, p50, sizeof p50);
    if (row->p99 >= 0)
      bench_fmt_value_(row->p99, p99, sizeof p99);
    else
      p99[0] = 0;
    fprintf(out, "| %-*s | %10s | %10s | %-*s | %-*s | %-*s |\n", wl, row->label, p50, p99,
            wu, row->unit, ws, row->samples, wn, row->note);
  }
  int nn = cJSON_GetArraySize(r->notes);
  if (nn) fputc('\n', out);
  for (int i = 0; i < nn; i++)
    fprintf(out, "- %s\n", cJSON_GetArrayItem(r->notes, i)->valuestring);
}

/* Prints the table, writes the JSON, frees the report. Returns the exit
 * status for main (1 if the JSON could not be written). */
static inline int bench_end(bench_report *r) {
  putchar('\n');
  bench_print_table(r, stdout);
  int rc = 0;
  char *text = cJSON_Print(r->root);
  FILE *f = text ? fopen(r->json_path, "w") : NULL;
  if (!f || fputs(text, f) < 0 || fputc('\n', f) < 0) {
    fprintf(stderr, "bench: cannot write %s\n", r->json_path);
    rc = 1;
  }
  if (f && fclose(f) != 0) rc = 1;
  if (!rc) printf("\nwrote %s\n", r->json_path);
  fflush(stdout);
  free(text);
  cJSON_Delete(r->root);
  free(r->rows);
  free(r->argv);
  free(r);
  return rc;
}

#endif /* KILN_BENCH_UTIL_H_ */
