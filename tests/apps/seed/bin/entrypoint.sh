#!/bin/sh
set -e
case "$1" in
serve) exec supervisord -n ;;
*) exec "$@" ;;
esac
