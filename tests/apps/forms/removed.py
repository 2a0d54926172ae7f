"""Imports a module that Python 3.12 removed from the standard library, as
code written for an older Python does."""

from distutils.util import strtobool  # noqa: F401

from aiohttp import web

app = web.Application()
