/* The pipeline cache: compiled modules stored by content hash.
 *
 * Layout: <dir>/v1/<first two hex digits>/<64-hex key>/
 *           module.so     the artifact, or
 *           rejected.txt  why the code generator refused the module
 *           meta          "kiln-cache 1\nsha256 <hex of the file>\nsize N\n"
 *                         "file <module.so or rejected.txt>\n"
 * (entries written before rejections were cached have no "file" line and
 * hold module.so). A rejection is cached so that loading an invalid module
 * again fails at once instead of running the code generator every time:
 * kiln's own validator does not type-check function bodies, wasm2c does.
 * An entry is created in a private temp folder and moved into place with
 * one rename(), so readers never see a half-written entry and two processes
 * compiling the same module at once both succeed (the loser's copy is
 * dropped). A per-key lock file (flock) keeps them from compiling twice.
 * On lookup the file's hash is checked against meta: a corrupt entry is
 * removed and reported as a miss, so it gets rebuilt. */
#ifndef KILN_ENGINE_CACHE_H_
#define KILN_ENGINE_CACHE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/status.h"

typedef struct kiln_sha256 {
  uint8_t bytes[32];
} kiln_sha256;

typedef struct kiln_sha256_ctx kiln_sha256_ctx;
kiln_status kiln_sha256_begin(kiln_sha256_ctx **out);
void kiln_sha256_update(kiln_sha256_ctx *c, const void *data, size_t size);
void kiln_sha256_end(kiln_sha256_ctx *c, kiln_sha256 *out); /* frees c */
void kiln_sha256_hex(const kiln_sha256 *h, char out[65]);
kiln_status kiln_sha256_file(const char *path, kiln_sha256 *out);

/* The two files an entry may hold. */
#define KILN_CACHE_ARTIFACT_FILE "module.so"
#define KILN_CACHE_REJECTED_FILE "rejected.txt"

typedef enum kiln_cache_entry {
  KILN_CACHE_MISS = 0,  /* no intact entry */
  KILN_CACHE_ARTIFACT,  /* *path is the compiled module */
  KILN_CACHE_REJECTED,  /* *path is the code generator's refusal */
} kiln_cache_entry;

/* What the entry for key holds, if it exists and is intact; fills *path
 * (path_size bytes) with its file. A corrupt entry is deleted (and
 * *out_was_corrupt set; may be NULL) and reported as a miss. */
kiln_cache_entry kiln_cache_lookup(const char *dir, const char *key_hex,
                                   char *path, size_t path_size,
                                   bool *out_was_corrupt);

/* Creates a fresh private folder under dir for building an entry. */
kiln_status kiln_cache_make_temp(const char *dir, char *out, size_t size);

/* Publishes temp_dir, which holds `file` (KILN_CACHE_ARTIFACT_FILE or
 * KILN_CACHE_REJECTED_FILE), as the entry for key: writes meta and renames.
 * Fills *path with the published file's path. temp_dir is consumed either
 * way. */
kiln_status kiln_cache_publish(const char *dir, const char *key_hex,
                               const char *temp_dir, const char *file,
                               char *path, size_t path_size);

/* Exclusive per-key lock (blocking). Returns an fd to pass to unlock, or
 * -1 if locking is impossible (then callers proceed unlocked). */
int kiln_cache_lock(const char *dir, const char *key_hex);
void kiln_cache_unlock(int fd);

/* mkdir -p */
kiln_status kiln_mkdirs(const char *path);
/* rm -rf of a folder kiln created (no symlink following). */
void kiln_remove_tree(const char *path);

#endif /* KILN_ENGINE_CACHE_H_ */
