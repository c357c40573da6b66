"""What the user asked for: program.md, the command-line options and ini keys, budgets."""
