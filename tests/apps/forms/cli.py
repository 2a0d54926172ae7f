"""Parses its command line at import, as a script does: a required option,
which the arguments given after `serve` must supply."""

import argparse

from aiohttp import web

parser = argparse.ArgumentParser()
parser.add_argument("--config", required=True)
options = parser.parse_args()
app = web.Application()
