"""Breaks every gunicorn worker's boot before the app's own code runs, as a
worker class that cannot work with the child's packages would: it stands for
any failure that gunicorn, not the image's checks of the app, reports. (The
master imports it first; with DEV=1 a worker does, after its loop exists.)"""

import uvloop
from aiohttp import web

uvloop.EventLoopPolicy = None  # the worker's loop cannot be made
app = web.Application()
