/* Content-addressed pipeline cache (see cache.h). */
#define _GNU_SOURCE
#include "engine/cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct kiln_sha256_ctx {
  EVP_MD_CTX *md;
};

kiln_status kiln_sha256_begin(kiln_sha256_ctx **out) {
  kiln_sha256_ctx *c = malloc(sizeof *c);
  if (!c) return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  c->md = EVP_MD_CTX_new();
  if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(c->md);
    free(c);
    return kiln_make_status(KILN_CODE_INTERNAL, "SHA-256 unavailable");
  }
  *out = c;
  return KILN_OK;
}

void kiln_sha256_update(kiln_sha256_ctx *c, const void *data, size_t size) {
  EVP_DigestUpdate(c->md, data, size);
}

void kiln_sha256_end(kiln_sha256_ctx *c, kiln_sha256 *out) {
  unsigned int n = 0;
  EVP_DigestFinal_ex(c->md, out->bytes, &n);
  EVP_MD_CTX_free(c->md);
  free(c);
}

void kiln_sha256_hex(const kiln_sha256 *h, char out[65]) {
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = hex[h->bytes[i] >> 4];
    out[2 * i + 1] = hex[h->bytes[i] & 15];
  }
  out[64] = 0;
}

kiln_status kiln_sha256_file(const char *path, kiln_sha256 *out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_status_from_errno(errno, "opening '%s'", path);
  kiln_sha256_ctx *c;
  kiln_status s = kiln_sha256_begin(&c);
  if (s) {
    close(fd);
    return s;
  }
  static __thread char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s = kiln_status_from_errno(errno, "reading '%s'", path);
      break;
    }
    if (n == 0) break;
    kiln_sha256_update(c, buf, (size_t)n);
  }
  close(fd);
  kiln_sha256_end(c, out);
  return s;
}

kiln_status kiln_mkdirs(const char *path) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT, "path too long");
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
      return kiln_status_from_errno(errno, "creating '%s'", tmp);
    *p = '/';
  }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
    return kiln_status_from_errno(errno, "creating '%s'", tmp);
  return KILN_OK;
}

void kiln_remove_tree(const char *path) {
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char sub[PATH_MAX];
      snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
      struct stat st;
      if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
        kiln_remove_tree(sub);
      else
        unlink(sub);
    }
    closedir(d);
  }
  rmdir(path);
}

static void entry_dir(const char *dir, const char *key, char *out, size_t n) {
  snprintf(out, n, "%s/v1/%.2s/%s", dir, key, key);
}

static bool entry_file_known(const char *file) {
  return !strcmp(file, KILN_CACHE_ARTIFACT_FILE) ||
         !strcmp(file, KILN_CACHE_REJECTED_FILE);
}

/* meta names the entry's file and holds its hash and size; checks all
 * three. Fills *path with the file's path. */
static kiln_cache_entry entry_intact(const char *edir, char *path,
                                     size_t path_size) {
  char meta_path[PATH_MAX];
  snprintf(meta_path, sizeof meta_path, "%s/meta", edir);
  FILE *f = fopen(meta_path, "re");
  if (!f) return KILN_CACHE_MISS;
  char magic[32] = {0}, hash[80] = {0}, file[64] = KILN_CACHE_ARTIFACT_FILE;
  unsigned long long size = 0;
  int n = fscanf(f, "%31s 1 sha256 %79s size %llu file %63s", magic, hash,
                 &size, file);
  fclose(f);
  if (n < 3 || strcmp(magic, "kiln-cache") || !entry_file_known(file))
    return KILN_CACHE_MISS;
  snprintf(path, path_size, "%s/%s", edir, file);
  struct stat st;
  if (stat(path, &st) != 0 || (unsigned long long)st.st_size != size)
    return KILN_CACHE_MISS;
  kiln_sha256 h;
  kiln_status s = kiln_sha256_file(path, &h);
  if (s) {
    kiln_status_free(s);
    return KILN_CACHE_MISS;
  }
  char hex[65];
  kiln_sha256_hex(&h, hex);
  if (strcmp(hex, hash)) return KILN_CACHE_MISS;
  return strcmp(file, KILN_CACHE_REJECTED_FILE) ? KILN_CACHE_ARTIFACT
                                                 : KILN_CACHE_REJECTED;
}

kiln_cache_entry kiln_cache_lookup(const char *dir, const char *key_hex,
                                   char *path, size_t path_size,
                                   bool *out_was_corrupt) {
  char edir[PATH_MAX];
  entry_dir(dir, key_hex, edir, sizeof edir);
  snprintf(path, path_size, "%s/%s", edir, KILN_CACHE_ARTIFACT_FILE);
  if (out_was_corrupt) *out_was_corrupt = false;
  struct stat st;
  if (stat(edir, &st) != 0) return KILN_CACHE_MISS;
  kiln_cache_entry found = entry_intact(edir, path, path_size);
  if (found != KILN_CACHE_MISS) return found;
  /* Corrupt or half-deleted: move it aside atomically, then delete it. */
  char trash[PATH_MAX + 32];
  snprintf(trash, sizeof trash, "%s.corrupt.%d", edir, (int)getpid());
  if (rename(edir, trash) == 0) kiln_remove_tree(trash);
  if (out_was_corrupt) *out_was_corrupt = true;
  return KILN_CACHE_MISS;
}

kiln_status kiln_cache_make_temp(const char *dir, char *out, size_t size) {
  char tmpdir[PATH_MAX];
  snprintf(tmpdir, sizeof tmpdir, "%s/tmp", dir);
  KILN_RETURN_IF_ERROR(kiln_mkdirs(tmpdir));
  if (snprintf(out, size, "%s/build-XXXXXX", tmpdir) >= (int)size)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT, "cache path too long");
  if (!mkdtemp(out))
    return kiln_status_from_errno(errno, "creating a folder in '%s'", tmpdir);
  return KILN_OK;
}

kiln_status kiln_cache_publish(const char *dir, const char *key_hex,
                               const char *temp_dir, const char *file,
                               char *path, size_t path_size) {
  char content[PATH_MAX], meta[PATH_MAX];
  snprintf(content, sizeof content, "%s/%s", temp_dir, file);
  snprintf(meta, sizeof meta, "%s/meta", temp_dir);
  kiln_status s = KILN_OK;
  if (!entry_file_known(file))
    s = kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                         "'%s' is not a cache entry's file", file);
  kiln_sha256 h;
  if (!s) s = kiln_sha256_file(content, &h);
  struct stat st;
  if (!s && stat(content, &st) != 0)
    s = kiln_status_from_errno(errno, "stat '%s'", content);
  if (!s) {
    char hex[65];
    kiln_sha256_hex(&h, hex);
    FILE *f = fopen(meta, "we");
    if (!f) {
      s = kiln_status_from_errno(errno, "writing '%s'", meta);
    } else {
      fprintf(f, "kiln-cache 1\nsha256 %s\nsize %llu\nfile %s\n", hex,
              (unsigned long long)st.st_size, file);
      if (fclose(f) != 0) s = kiln_status_from_errno(errno, "writing meta");
    }
  }
  char edir[PATH_MAX], parent[PATH_MAX];
  entry_dir(dir, key_hex, edir, sizeof edir);
  snprintf(parent, sizeof parent, "%s/v1/%.2s", dir, key_hex);
  if (!s) s = kiln_mkdirs(parent);
  if (!s && rename(temp_dir, edir) != 0) {
    if (errno != ENOTEMPTY && errno != EEXIST)
      s = kiln_status_from_errno(errno, "moving the cache entry into place");
    /* else: another process published the same key first; use theirs. */
  }
  kiln_remove_tree(temp_dir); /* no-op when the rename moved it */
  if (s) return s;
  snprintf(path, path_size, "%s/%s", edir, file);
  return KILN_OK;
}

int kiln_cache_lock(const char *dir, const char *key_hex) {
  char locks[PATH_MAX], path[PATH_MAX + 80];
  snprintf(locks, sizeof locks, "%s/locks", dir);
  kiln_status s = kiln_mkdirs(locks);
  if (s) {
    kiln_status_free(s);
    return -1;
  }
  snprintf(path, sizeof path, "%s/%s.lock", locks, key_hex);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

void kiln_cache_unlock(int fd) {
  if (fd < 0) return;
  flock(fd, LOCK_UN);
  close(fd);
}
