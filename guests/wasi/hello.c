/* Hello world for kiln's WASI: prints its arguments and environment, says
 * something on stderr, and exits with $EXIT_CODE (0 if unset). With "cat" as
 * its first argument it copies stdin to stdout first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "cat") == 0) {
    char buf[256];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
      fwrite(buf, 1, n, stdout);
  }
  printf("hello from wasi\n");
  printf("argc=%d\n", argc);
  for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
  for (char **e = environ; *e; e++) printf("env %s\n", *e);
  fprintf(stderr, "to stderr\n");
  const char *code = getenv("EXIT_CODE");
  return code ? atoi(code) : 0;
}
