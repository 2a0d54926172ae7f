#!/bin/sh
# Default entrypoint of a child image. Replace it with your own bin/entrypoint.sh;
# to keep the parent's behaviour, end yours with the line below.
exec /usr/local/lib/aiohttp-parent/entrypoint "$@"
