"""The asyncio.run(main()) habit at module level: a runner and a site of its
own, started when the module is imported (no __main__ guard)."""

import asyncio

from aiohttp import web


async def main() -> None:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", 8080).start()
    await asyncio.Event().wait()


asyncio.run(main())
