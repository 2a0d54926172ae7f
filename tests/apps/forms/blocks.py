"""A module that never finishes importing (it waits for a service at import)."""

import time

time.sleep(3600)
