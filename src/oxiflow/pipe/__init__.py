"""The shell side of oxiflow: opening inputs named on the command line, the pipe protocol."""
