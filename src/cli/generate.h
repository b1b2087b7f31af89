/* kiln generate (src/cli/generate.c), and what the commands share. */
#ifndef KILN_CLI_GENERATE_H_
#define KILN_CLI_GENERATE_H_

/* argv holds the options after "generate". Returns the exit status. */
int cmd_generate(int argc, char **argv);

/* The engine's compile progress on stderr (one line, redrawn), for every
 * command that loads modules when stderr is a terminal. */
void kiln_cli_compile_progress(void *user, const char *module,
                               const char *stage, int done, int total);

#endif /* KILN_CLI_GENERATE_H_ */
