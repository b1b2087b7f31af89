/* kiln's first demo guest: a WASI command that greets, lists its
 * arguments, writes and reads back a file in its preopened directory, and
 * multiplies two small matrices, printing a checksum the demo verifies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float a[64][64], b[64][64], c[64][64];

int main(int argc, char **argv) {
  printf("hello from a kiln guest: %d argument(s)\n", argc - 1);
  for (int i = 1; i < argc; i++) printf("  argv[%d] = %s\n", i, argv[i]);

  const char *dir = getenv("OUT_DIR");
  if (dir) {
    char path[256];
    snprintf(path, sizeof path, "%s/hello.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
      perror(path);
      return 1;
    }
    fputs("written by the guest\n", f);
    fclose(f);
    f = fopen(path, "r");
    char line[64] = {0};
    if (!f || !fgets(line, sizeof line, f)) return 1;
    fclose(f);
    printf("read back from %s: %s", path, line);
  }

  for (int i = 0; i < 64; i++)
    for (int j = 0; j < 64; j++) {
      a[i][j] = (float)((i + j) % 7);
      b[i][j] = (float)((i * j) % 5);
    }
  for (int i = 0; i < 64; i++)
    for (int k = 0; k < 64; k++)
      for (int j = 0; j < 64; j++) c[i][j] += a[i][k] * b[k][j];
  double sum = 0;
  for (int i = 0; i < 64; i++)
    for (int j = 0; j < 64; j++) sum += c[i][j];
  printf("64x64 matmul checksum: %.0f\n", sum);
  return 0;
}
