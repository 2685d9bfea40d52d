"""One user backend per session store kind, each in its own module."""
