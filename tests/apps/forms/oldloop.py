"""aiohttp 2's habit: a loop made at import, given to the Application."""

import asyncio

from aiohttp import web

loop = asyncio.new_event_loop()
app = web.Application(loop=loop)
