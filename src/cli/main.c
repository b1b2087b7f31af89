/* The kiln command: run, compile and inspect WebAssembly modules.
 * Conventions follow wasmtime's CLI: options come before the module, and
 * everything after the module is passed to the guest. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/gpu_host.h"
#include "kiln/wasi.h"
#include "cli/generate.h"

/* Exit codes besides the guest's own (proc_exit). */
enum {
  EXIT_USAGE = 2,       /* bad command line */
  EXIT_TIMEOUT = 124,   /* --timeout fired (as timeout(1)) */
  EXIT_TRAP = 134,      /* the guest trapped (as wasmtime) */
};

static const char *prog = "kiln";

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln <command> [options]\n\n"
          "commands:\n"
          "  run [options] MODULE.wasm [ARGS...]   run a WASI command or call "
          "an export\n"
          "  generate [options]                     generate text with an LLM "
          "(see generate --help)\n"
          "  compile [options] MODULE.wasm          compile into the cache "
          "(or -o FILE)\n"
          "  inspect MODULE.wasm                    list imports, exports and "
          "memories\n"
          "  version                                print the version\n\n"
          "run options:\n"
          "  --dir HOST[::GUEST]   preopen a host directory (repeatable)\n"
          "  --env KEY=VALUE       set a guest environment variable "
          "(repeatable)\n"
          "  --max-memory BYTES    limit each linear memory (suffixes K, M, "
          "G)\n"
          "  --timeout SECONDS     stop the guest after this long (exit "
          "124)\n"
          "  --invoke NAME         call export NAME with ARGS instead of "
          "_start\n"
          "  --device SPEC         device for kiln_gpu imports: auto, cpu, "
          "cuda or cuda:N\n"
          "                        (auto when the module imports kiln_gpu; "
          "printed to stderr\n"
          "                        when given or with -v)\n"
          "  -v, --verbose         say more on stderr (e.g. the device "
          "chosen)\n"
          "common options:\n"
          "  --cache-dir DIR       pipeline cache folder (default "
          "$KILN_CACHE_DIR or ~/.cache/kiln)\n"
          "  --no-cache            compile into a private temporary folder\n"
          "  -O LEVEL              optimisation level for generated code "
          "(0-3, default 2)\n");
}

static int fail(const char *what, kiln_status s) {
  fprintf(stderr, "%s: %s%s%s\n", prog, what ? what : "", what ? ": " : "",
          kiln_status_message(s));
  kiln_status_free(s);
  return 1;
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", prog);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nRun 'kiln help' for usage.\n");
  return EXIT_USAGE;
}

typedef struct options {
  const char *cache_dir;
  bool no_cache;
  int opt_level;
  kiln_wasi_preopen dirs[64];
  int ndirs;
  const char *env[256];
  int nenv;
  uint64_t max_memory;
  double timeout;
  const char *invoke;
  const char *device;   /* --device; NULL: auto, only if the module needs it */
  bool verbose;
  const char *out;
  const char *module;
  char **args;
  int nargs;
} options;

static bool parse_bytes(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *s == '-') return false;
  uint64_t mul = 1;
  switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    default: break;
  }
  if (*end || (v && mul > UINT64_MAX / v)) return false;
  *out = v * mul;
  return true;
}

/* Parses options up to the module path; the rest are guest arguments. */
static int parse_options(int argc, char **argv, options *o, bool is_run) {
  memset(o, 0, sizeof *o);
  o->opt_level = -1;
  int i = 0;
  for (; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
    if (a[0] != '-' || !strcmp(a, "-")) break;
    if (!strcmp(a, "--")) {
      i++;
      break;
    }
    /* --opt=value or --opt value */
    char name[64];
    const char *eq = strchr(a, '=');
    if (eq && (size_t)(eq - a) < sizeof name) {
      memcpy(name, a, eq - a);
      name[eq - a] = 0;
      val = eq + 1;
      a = name;
    }
    bool takes = !strcmp(a, "--dir") || !strcmp(a, "--env") ||
                 !strcmp(a, "--max-memory") || !strcmp(a, "--timeout") ||
                 !strcmp(a, "--invoke") || !strcmp(a, "--cache-dir") ||
                 !strcmp(a, "--device") ||
                 !strcmp(a, "-O") || !strcmp(a, "-o");
    if (takes && !val) {
      if (i + 1 >= argc) return usage_error("option '%s' needs a value", a);
      val = argv[++i];
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      exit(0);
    } else if (!strcmp(a, "--no-cache")) {
      o->no_cache = true;
    } else if (!strcmp(a, "--cache-dir")) {
      o->cache_dir = val;
    } else if (!strcmp(a, "-O")) {
      if (strlen(val) != 1 || val[0] < '0' || val[0] > '3')
        return usage_error("-O takes 0, 1, 2 or 3, not '%s'", val);
      o->opt_level = val[0] - '0';
    } else if (is_run && !strcmp(a, "--dir")) {
      if (o->ndirs == 64) return usage_error("too many --dir options%s", "");
      char *d = strdup(val);
      char *sep = strstr(d, "::");
      if (sep) {
        *sep = 0;
        o->dirs[o->ndirs].guest_path = sep + 2;
      } else {
        o->dirs[o->ndirs].guest_path = d;
      }
      o->dirs[o->ndirs++].host_path = d;
    } else if (is_run && !strcmp(a, "--env")) {
      if (!strchr(val, '=') || val[0] == '=')
        return usage_error("--env takes KEY=VALUE, not '%s'", val);
      if (o->nenv == 256) return usage_error("too many --env options%s", "");
      o->env[o->nenv++] = val;
    } else if (is_run && !strcmp(a, "--max-memory")) {
      if (!parse_bytes(val, &o->max_memory) || !o->max_memory)
        return usage_error("--max-memory takes a byte count such as 64M, "
                           "not '%s'", val);
    } else if (is_run && !strcmp(a, "--timeout")) {
      char *end;
      o->timeout = strtod(val, &end);
      if (*end || !(o->timeout > 0) || !isfinite(o->timeout))
        return usage_error("--timeout takes a positive number of seconds, "
                           "not '%s'", val);
    } else if (is_run && !strcmp(a, "--invoke")) {
      o->invoke = val;
    } else if (is_run && !strcmp(a, "--device")) {
      o->device = val;
    } else if (is_run && (!strcmp(a, "-v") || !strcmp(a, "--verbose"))) {
      o->verbose = true;
    } else if (!is_run && !strcmp(a, "-o")) {
      o->out = val;
    } else {
      return usage_error("unknown option '%s'", a);
    }
  }
  if (i >= argc) return usage_error("no module given%s", "");
  o->module = argv[i];
  o->args = argv + i + 1;
  o->nargs = argc - i - 1;
  return 0;
}

static kiln_status make_engine(const options *o, kiln_engine **e) {
  kiln_engine_options eo;
  kiln_engine_options_init(&eo);
  eo.cache_dir = o->cache_dir;
  eo.cache_disabled = o->no_cache;
  eo.opt_level = o->opt_level;
  if (isatty(2)) eo.progress = kiln_cli_compile_progress;
  return kiln_engine_create(&eo, e);
}

/* An engine and o->module loaded by it, or the exit status of the failure
 * (reported). */
static int load_module(const options *o, kiln_engine **e, kiln_module **m) {
  kiln_status s = make_engine(o, e);
  if (!s) s = kiln_module_load_file(*e, o->module, m);
  if (!s) return 0;
  kiln_engine_release(*e);
  *e = NULL;
  return fail(NULL, s);
}

static bool parse_val(const char *s, kiln_valtype t, kiln_val *out) {
  char *end;
  errno = 0;
  out->type = t;
  switch (t) {
    case KILN_I32: {
      long long v = strtoll(s, &end, 0);
      if (*end || errno || v < INT32_MIN || v > UINT32_MAX) return false;
      out->of.i32 = (uint32_t)v;
      return true;
    }
    case KILN_I64: {
      if (s[0] == '-') out->of.i64 = (uint64_t)strtoll(s, &end, 0);
      else out->of.i64 = strtoull(s, &end, 0);
      return !*end && !errno;
    }
    case KILN_F32: out->of.f32 = strtof(s, &end); return !*end;
    case KILN_F64: out->of.f64 = strtod(s, &end); return !*end;
    default: return false;
  }
}

static void print_val(const kiln_val *v) {
  switch (v->type) {
    case KILN_I32: printf("%" PRId32 "\n", (int32_t)v->of.i32); break;
    case KILN_I64: printf("%" PRId64 "\n", (int64_t)v->of.i64); break;
    case KILN_F32: printf("%.9g\n", v->of.f32); break;
    case KILN_F64: printf("%.17g\n", v->of.f64); break;
    default: printf("%s\n", v->of.ref ? "<ref>" : "null"); break;
  }
}

/* Imported memories named env.memory (or any module's memory import) get a
 * fresh host memory with the import's limits and --max-memory. */
static kiln_status define_imported_memories(kiln_module *m, kiln_linker *l,
                                            uint64_t max_bytes) {
  for (size_t i = 0; i < kiln_module_import_count(m); i++) {
    const kiln_import *im = kiln_module_import(m, i);
    if (im->type.kind != KILN_EXTERN_MEMORY) continue;
    kiln_memory_options mo = {0};
    mo.initial_pages = im->type.of.memory.min;
    mo.maximum_pages = im->type.of.memory.has_max ? im->type.of.memory.max : 0;
    mo.max_bytes = max_bytes;
    mo.name = im->name;
    kiln_memory *mem = NULL;
    KILN_RETURN_IF_ERROR(kiln_memory_create(&mo, &mem));
    kiln_status s = kiln_linker_define_memory(l, im->module, im->name, mem);
    kiln_memory_release(mem);
    if (s) return s;
  }
  return KILN_OK;
}

static int guest_exit(const char *module, kiln_status s) {
  switch (kiln_status_code(s)) {
    case KILN_CODE_OK:
      return 0;
    case KILN_CODE_EXIT: {
      int code = kiln_status_exit_code(s);
      kiln_status_free(s);
      return code;
    }
    case KILN_CODE_DEADLINE_EXCEEDED:
      fprintf(stderr, "%s: %s: %s (--timeout)\n", prog, module,
              kiln_status_message(s));
      kiln_status_free(s);
      return EXIT_TIMEOUT;
    case KILN_CODE_TRAP:
      fprintf(stderr, "%s: %s: %s\n", prog, module, kiln_status_message(s));
      kiln_status_free(s);
      return EXIT_TRAP;
    default:
      return fail(module, s);
  }
}

static void free_options(options *o) {
  for (int i = 0; i < o->ndirs; i++) free((char *)o->dirs[i].host_path);
}

static int run_main(options *o);

static int cmd_run(int argc, char **argv) {
  options o;
  int rc = parse_options(argc, argv, &o, true);
  if (!rc) rc = run_main(&o);
  free_options(&o);
  return rc;
}

static int run_main(options *op) {
  options o = *op;
  int rc = 0;
  kiln_engine *e = NULL;
  kiln_module *m = NULL;
  kiln_linker *l = NULL;
  kiln_wasi *w = NULL;
  kiln_instance *inst = NULL;
  kiln_device *dev = NULL;
  kiln_gpu_session *gpu = NULL;
  kiln_status s = make_engine(&o, &e);
  if (s) return fail(NULL, s);
  s = kiln_module_load_file(e, o.module, &m);
  if (s) {
    rc = fail(NULL, s);
    goto out;
  }
  /* A device only when asked for or when the module imports kiln_gpu. */
  bool uses_gpu = kiln_gpu_module_uses(m);
  if (o.device || uses_gpu) {
    kiln_device_options dopt;
    kiln_device_options_init(&dopt);
    dopt.spec = o.device ? o.device : "auto";
    s = kiln_device_open(&dopt, &dev);
    if (s) {
      rc = fail("--device", s);
      goto out;
    }
    if (o.device || o.verbose)
      fprintf(stderr, "%s: device: %s\n", prog, kiln_device_describe(dev));
  }
  if (uses_gpu) {
    /* The CLI is a developer tool: guests may see device addresses for
     * pointer-identity reports (see kiln_gpu_session_options). */
    kiln_gpu_session_options gopt;
    kiln_gpu_session_options_init(&gopt);
    gopt.allow_address_query = true;
    s = kiln_gpu_session_create(dev, &gopt, &gpu);
    if (s) {
      rc = fail(o.module, s);
      goto out;
    }
  }
  /* The guest's argv[0] is the module path, as in wasmtime. */
  const char **gargv = calloc(o.nargs + 1, sizeof *gargv);
  gargv[0] = o.module;
  for (int i = 0; i < o.nargs; i++) gargv[i + 1] = o.args[i];
  kiln_wasi_options wo;
  kiln_wasi_options_init(&wo);
  wo.argv = gargv;
  wo.argc = o.nargs + 1;
  wo.env = o.env;
  wo.envc = o.nenv;
  wo.preopens = o.dirs;
  wo.preopen_count = o.ndirs;
  s = kiln_wasi_create(&wo, &w);
  free(gargv);
  if (!s) s = kiln_linker_create(e, &l);
  if (!s) s = kiln_wasi_define(w, l);
  if (!s) s = define_imported_memories(m, l, o.max_memory);
  if (!s && gpu) s = kiln_gpu_define(l, gpu);
  if (s) {
    rc = fail(o.module, s);
    goto out;
  }
  kiln_instance_options io = {.max_memory_bytes = o.max_memory};
  if (o.timeout > 0) kiln_thread_set_deadline(o.timeout);
  s = kiln_instance_create(m, l, &io, &inst);
  if (s) {
    rc = guest_exit(o.module, s);
    goto out;
  }
  /* The guest's memory 0 is what its kiln_gpu handle 0 names. */
  if (gpu && kiln_instance_memory(inst, 0)) {
    s = kiln_gpu_session_bind_memory(gpu, kiln_instance_memory(inst, 0));
    if (s) {
      rc = fail(o.module, s);
      goto out;
    }
  }
  if (o.invoke) {
    kiln_func_ref f;
    s = kiln_instance_func(inst, "_initialize", &f);
    if (!s) {
      s = kiln_func_call(f, NULL, 0, NULL, 0);
      if (s) {
        rc = guest_exit(o.module, s);
        goto out;
      }
    }
    kiln_status_free(s);
    s = kiln_instance_func(inst, o.invoke, &f);
    if (s) {
      rc = fail(o.module, s);
      goto out;
    }
    const kiln_functype *t = kiln_func_type(f);
    if ((uint32_t)o.nargs != t->param_count) {
      char buf[256];
      fprintf(stderr, "%s: %s: export '%s' has type %s: expected %u "
                      "arguments, got %d\n", prog, o.module, o.invoke,
              kiln_functype_format(t, buf, sizeof buf), t->param_count,
              o.nargs);
      rc = EXIT_USAGE;
      goto out;
    }
    kiln_val args[64], results[64];
    if (t->param_count > 64 || t->result_count > 64) {
      fprintf(stderr, "%s: too many parameters\n", prog);
      rc = EXIT_USAGE;
      goto out;
    }
    for (uint32_t i = 0; i < t->param_count; i++) {
      if (!parse_val(o.args[i], t->params[i], &args[i])) {
        fprintf(stderr, "%s: argument %u '%s' is not a valid %s\n", prog,
                i + 1, o.args[i], kiln_valtype_name(t->params[i]));
        rc = EXIT_USAGE;
        goto out;
      }
    }
    s = kiln_func_call(f, args, t->param_count, results, t->result_count);
    if (!s)
      for (uint32_t i = 0; i < t->result_count; i++) print_val(&results[i]);
    rc = guest_exit(o.module, s);
  } else {
    kiln_func_ref f;
    s = kiln_instance_func(inst, "_start", &f);
    if (s) {
      kiln_status_free(s);
      fprintf(stderr, "%s: %s: the module has no _start export; use --invoke "
                      "NAME to call a function\n", prog, o.module);
      rc = EXIT_USAGE;
      goto out;
    }
    rc = guest_exit(o.module, kiln_func_call(f, NULL, 0, NULL, 0));
  }
out:
  fflush(stdout);
  kiln_instance_release(inst);
  kiln_linker_release(l);
  kiln_gpu_session_release(gpu);
  kiln_device_release(dev);
  kiln_wasi_release(w);
  kiln_module_release(m);
  kiln_engine_release(e);
  return rc;
}

static int cmd_compile(int argc, char **argv) {
  options o;
  int rc = parse_options(argc, argv, &o, false);
  if (rc) return rc;
  kiln_engine *e = NULL;
  kiln_module *m = NULL;
  if ((rc = load_module(&o, &e, &m))) return rc;
  printf("%s: %s %s\n", o.module,
         kiln_module_was_cached(m) ? "already in cache" : "compiled",
         kiln_module_cache_key(m));
  printf("artifact: %s\n", kiln_module_artifact_path(m));
  if (o.out) {
    char cmd[8192];
    FILE *in = fopen(kiln_module_artifact_path(m), "rb");
    FILE *out = in ? fopen(o.out, "wb") : NULL;
    size_t n;
    bool ok = in && out;
    while (ok && (n = fread(cmd, 1, sizeof cmd, in)) > 0)
      ok = fwrite(cmd, 1, n, out) == n;
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = false;
    if (!ok) {
      fprintf(stderr, "%s: writing '%s': %s\n", prog, o.out, strerror(errno));
      rc = 1;
    } else {
      printf("wrote %s\n", o.out);
    }
  }
  kiln_module_release(m);
  kiln_engine_release(e);
  return rc;
}

static void print_externtype(const kiln_externtype *t) {
  char buf[512];
  switch (t->kind) {
    case KILN_EXTERN_FUNC:
      printf("func %s", kiln_functype_format(&t->of.func, buf, sizeof buf));
      break;
    case KILN_EXTERN_MEMORY:
      printf("memory pages %llu", (unsigned long long)t->of.memory.min);
      if (t->of.memory.has_max)
        printf("..%llu", (unsigned long long)t->of.memory.max);
      break;
    case KILN_EXTERN_TABLE:
      printf("table %s %llu", kiln_valtype_name(t->of.table.elem),
             (unsigned long long)t->of.table.limits.min);
      if (t->of.table.limits.has_max)
        printf("..%llu", (unsigned long long)t->of.table.limits.max);
      break;
    case KILN_EXTERN_GLOBAL:
      printf("global %s%s", t->of.global.is_mutable ? "mut " : "",
             kiln_valtype_name(t->of.global.type));
      break;
    default:
      printf("%s", kiln_extern_kind_name(t->kind));
  }
}

static int cmd_inspect(int argc, char **argv) {
  options o;
  int rc = parse_options(argc, argv, &o, false);
  if (rc) return rc;
  kiln_engine *e = NULL;
  kiln_module *m = NULL;
  if ((rc = load_module(&o, &e, &m))) return rc;
  printf("module %s\n", o.module);
  printf("imports (%zu):\n", kiln_module_import_count(m));
  for (size_t i = 0; i < kiln_module_import_count(m); i++) {
    const kiln_import *im = kiln_module_import(m, i);
    printf("  %s.%s: ", im->module, im->name);
    print_externtype(&im->type);
    printf("\n");
  }
  printf("exports (%zu):\n", kiln_module_export_count(m));
  for (size_t i = 0; i < kiln_module_export_count(m); i++) {
    const kiln_export *ex = kiln_module_export(m, i);
    printf("  %s: ", ex->name);
    print_externtype(&ex->type);
    printf("\n");
  }
  printf("memories defined (%zu):\n", kiln_module_memory_count(m));
  for (size_t i = 0; i < kiln_module_memory_count(m); i++) {
    kiln_limits lim = kiln_module_memory(m, i);
    printf("  %zu: pages %llu", i, (unsigned long long)lim.min);
    if (lim.has_max) printf("..%llu", (unsigned long long)lim.max);
    printf("\n");
  }
  kiln_module_release(m);
  kiln_engine_release(e);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "run")) return cmd_run(argc - 2, argv + 2);
  if (!strcmp(cmd, "compile")) return cmd_compile(argc - 2, argv + 2);
  if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
  if (!strcmp(cmd, "generate")) return cmd_generate(argc - 2, argv + 2);
  if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
    printf("kiln %s\n", KILN_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
    usage(stdout);
    return 0;
  }
  /* wasmtime accepts `wasmtime file.wasm`: so does kiln. */
  if (strstr(cmd, ".wasm")) return cmd_run(argc - 1, argv + 1);
  return usage_error("unknown command '%s'", cmd);
}
