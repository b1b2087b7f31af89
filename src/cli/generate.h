/* kiln generate (src/cli/generate.c). */
#ifndef KILN_CLI_GENERATE_H_
#define KILN_CLI_GENERATE_H_

/* argv holds the options after "generate". Returns the exit status. */
int cmd_generate(int argc, char **argv);

#endif /* KILN_CLI_GENERATE_H_ */
