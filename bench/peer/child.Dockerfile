# examples/hello on the peer: the same app, the classic way.
ARG PEER_IMAGE=aiohttp-peer:bench
FROM ${PEER_IMAGE}
ENV APP_MODULE=hello.app:create_app
