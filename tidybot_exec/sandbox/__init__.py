"""The sandbox and the processes on either side of it (stdlib only: these run as scripts,
under bwrap or as the zygote): the bwrap command, the process cap, Linux calls, the
supervisor, the warm host, the zygote and the code process."""
