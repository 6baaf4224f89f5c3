/* The moat command's subcommands that live outside main.c. */
#ifndef MOAT_CLI_CLI_H
#define MOAT_CLI_CLI_H

/* moat endorse (endorse.c): argv[0] is "endorse". Returns the exit status. */
int moat__cli_endorse(int argc, char **argv);

#endif
