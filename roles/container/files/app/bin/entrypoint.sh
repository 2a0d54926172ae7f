#!/bin/sh
# An example for children: the image's ENTRYPOINT runs an executable
# /app/bin/entrypoint.sh first. Ship your own to run something before the app;
# to keep the parent's behaviour, end it with the line below.
exec /usr/local/lib/aiohttp-parent/entrypoint "$@"
