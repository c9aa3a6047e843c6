# The DaemonSet's init container: nft, to load snigate's REDIRECT table into the node.
#   docker build -f deploy/container/nftables.Dockerfile -t snigate-nftables .
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables \
    && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["nft"]
